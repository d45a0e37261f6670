"""Read CT/MR scans (NIfTI files, DICOM series) into one :class:`Volume`; write masks back.

Conventions (one rule each, used everywhere in this module):

- Voxel axes: ``array[i, j, k]`` in nibabel's order. For NIfTI that is the file's own order;
  for a DICOM series ``i`` is the column index (along a row, the direction
  ``ImageOrientationPatient[:3]``), ``j`` the row index (down a column,
  ``ImageOrientationPatient[3:]``) and ``k`` the slice index after sorting the slices by
  position along the slice normal (never by file name or InstanceNumber).
- World space: ``affine`` (4x4, float64) maps a voxel index ``(i, j, k, 1)`` to RAS+
  coordinates in millimetres (the NIfTI convention: +x right, +y anterior, +z superior).
  DICOM's patient space is LPS (+x left, +y posterior, +z superior); it is converted.
- Units: CT intensities in Hounsfield units (DICOM RescaleSlope/RescaleIntercept applied; NIfTI
  data as stored, scaled by the header's scl_slope/scl_inter); MR in the scanner's arbitrary
  units. Images are float32; label volumes are integers (uint8, or int16 when needed).
- Errors: anything that cannot be read raises :class:`VolumeReadError` (a ``ValueError``) with
  one line naming the file (or folder) and the reason; a label volume that does not line up
  with its image raises :class:`LabelMismatchError` (a ``ValueError``).
- ``case_id`` is the file name (without ``.nii``/``.nii.gz``) or the DICOM folder's name,
  never anything from the patient's name, ID or birth date.

DICOM affine, derived (``PixelSpacing`` is ``[row spacing, column spacing] = [dy, dx]``)::

    r = IOP[:3]   unit vector along a row (column index i grows)     -> step dx per i
    c = IOP[3:]   unit vector down a column (row index j grows)      -> step dy per j
    n = r x c     slice normal; slices sorted by d = n . IPP
    s = (IPP_last - IPP_first) / (K - 1)      (K > 1; includes any gantry-tilt shear)
    s = n * SpacingBetweenSlices or SliceThickness                    (K == 1)

    LPS affine = [[r*dx | c*dy | s | IPP_first],
                  [ 0      0     0      1     ]]          (columns are 3-vectors)
    RAS affine = diag(-1, -1, 1, 1) @ LPS affine

so that ``array = np.stack([ds.pixel_array.T for ds in sorted_slices], axis=-1)``
(``pixel_array`` is ``(rows, cols)`` = ``(j, i)``) lines up with that affine.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from anunet_core.atomic import write_atomic

if TYPE_CHECKING:  # preprocessing imports this module
    from anunet_core.preprocessing import SliceGeometry

__all__ = [
    "MODALITIES",
    "LabelMismatchError",
    "Volume",
    "VolumeReadError",
    "align_label_to_image",
    "read_dicom_series",
    "read_label_nifti",
    "read_nifti",
    "read_volume",
    "write_mask",
]

log = logging.getLogger(__name__)

MODALITIES = ("CT", "MR")

#: LPS <-> RAS: flip the signs of x and y (the same matrix both ways).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# DICOM geometry tolerances.
_ORIENTATION_ATOL = 1e-4  # direction cosines (unitless) equal across slices
_PIXEL_SPACING_ATOL_MM = 1e-4  # PixelSpacing equal across slices
_DUPLICATE_ATOL_MM = 1e-3  # two slices closer than this along the normal are duplicates
_SLICE_GAP_ATOL_MM = 0.01  # slice step may deviate by max(0.01 mm, 1 % of the step)
_SLICE_GAP_RTOL = 0.01
_MAX_REASON_CHARS = 400

# SOP classes that are not images (skipped in a series folder): DICOMDIR, SR, presentation
# states, RT structure sets... Everything whose SOP class name says "Image Storage", or whose
# SOP class is unknown, is treated as an image (and then must be complete).
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


class VolumeReadError(ValueError):
    """A scan could not be read; the message is one line naming the file and the reason."""


class LabelMismatchError(ValueError):
    """A label volume's voxel grid does not line up with its image's (one-line reason)."""


def _one_line(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, BaseException) and type(exc).__name__ not in text:
        text = f"{type(exc).__name__}: {text}"
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 3] + "..."
    return text


def _fmt_shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def _fmt_vec(values, digits: int = 4) -> str:
    return "(" + ", ".join(f"{float(v):.{digits}g}" for v in values) + ")"


def _normalise_modality(modality: str) -> str:
    mod = str(modality).strip().upper()
    if mod not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return mod


@dataclass(frozen=True, eq=False)
class Volume:
    """One 3-D scan in its own voxel grid.

    Attributes:
        array: 3-D ``np.ndarray``, voxel axes ``(i, j, k)`` in nibabel's order (see the module
            docstring for DICOM). Images are float32: Hounsfield units for CT (rescale
            applied), scanner units for MR.
        affine: ``(4, 4)`` float64, voxel index -> RAS+ world coordinates in mm (NIfTI
            convention).
        modality: ``"CT"`` or ``"MR"``.
        case_id: the file or folder name (never patient-identifying header fields).

    ``spacing`` is the voxel size in mm per array axis (the norms of the affine's columns).
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str
    case_id: str

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"Volume.array must be 3-D, got shape {array.shape}")
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4, got shape {affine.shape}")
        if not np.all(np.isfinite(affine)):
            raise ValueError("Volume.affine has non-finite values")
        if not np.allclose(affine[3], [0.0, 0.0, 0.0, 1.0]):
            raise ValueError(f"Volume.affine last row must be (0, 0, 0, 1), got {affine[3]}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError("Volume.affine is singular (a zero voxel size?)")
        if not isinstance(self.case_id, str) or not self.case_id:
            raise ValueError(f"Volume.case_id must be a non-empty string, got {self.case_id!r}")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "modality", _normalise_modality(self.modality))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along array axes (i, j, k): the affine's column norms."""
        return _spacing(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"Volume(case_id={self.case_id!r}, modality={self.modality!r}, "
            f"shape={self.shape}, dtype={self.array.dtype}, spacing={_fmt_vec(self.spacing)} mm, "
            f"axcodes={''.join(nib.aff2axcodes(self.affine))})"
        )


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return tuple(float(v) for v in norms)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# NIfTI
# ----------------------------------------------------------------------------------------------


def _case_id_from_path(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _load_nifti(path: str | os.PathLike, *, labels: bool) -> tuple[np.ndarray, np.ndarray]:
    """The single NIfTI reader: (3-D array, affine). Images float32; labels integer."""
    path = Path(path)
    try:
        img = nib.load(str(path))
        if labels:
            data = np.asanyarray(img.dataobj)
        else:
            data = img.get_fdata(dtype=np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib...)
        raise VolumeReadError(f"{path}: cannot read NIfTI: {_one_line(exc)}") from exc
    # Drop trailing singleton axes (x, y, z, 1) -> (x, y, z); a 2-D image becomes 1 slice.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise VolumeReadError(
            f"{path}: expected a 3-D volume, got shape {_fmt_shape(data.shape)} "
            f"(a 4-D series; pick one volume first)"
        )
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeReadError(f"{path}: invalid affine (singular or non-finite)")
    if labels:
        data = _as_label_dtype(data, path)
    return np.ascontiguousarray(data), affine


def _as_label_dtype(data: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(data.dtype, np.integer):
        if np.issubdtype(data.dtype, np.bool_):
            return data.astype(np.uint8)
        rounded = np.rint(data)
        if not np.all(np.isfinite(data)) or np.max(np.abs(data - rounded), initial=0.0) > 1e-3:
            raise VolumeReadError(f"{path}: label volume has non-integer values")
        data = rounded
    lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if lo >= 0 and hi <= 255:
        return data.astype(np.uint8, copy=False)
    if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
        return data.astype(np.int16, copy=False)
    raise VolumeReadError(f"{path}: label values {lo}..{hi} do not fit in int16")


def read_nifti(path: str | os.PathLike, modality: str, case_id: str | None = None) -> Volume:
    """Read a ``.nii`` / ``.nii.gz`` image as a float32 :class:`Volume`.

    The array is ``img.get_fdata(dtype=float32)`` (header scaling applied) in the file's own
    axis order; the affine is ``img.affine`` (sform, else qform). A 4-D file whose 4th axis is
    1 is squeezed; a real 4-D series raises :class:`VolumeReadError`, as does a corrupt or
    truncated file (one line naming the file). NIfTI has no modality tag: pass ``modality``.
    """
    modality = _normalise_modality(modality)
    path = Path(path)
    array, affine = _load_nifti(path, labels=False)
    return Volume(array, affine, modality, case_id or _case_id_from_path(path))


def read_label_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI label volume: ``(labels, affine)``.

    ``labels`` is 3-D uint8 (int16 when values fall outside 0..255), same axis handling and
    errors as :func:`read_nifti`; float-stored labels must be integer-valued.
    """
    return _load_nifti(path, labels=True)


# ----------------------------------------------------------------------------------------------
# DICOM
# ----------------------------------------------------------------------------------------------


def _is_image_sop_class(ds: pydicom.Dataset) -> bool:
    sop = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
    if sop is None:
        return True  # unknown: treat as an image, it must then be complete
    sop = pydicom.uid.UID(str(sop))
    if sop == _DICOMDIR_SOP_CLASS:
        return False
    name = sop.name
    if name == str(sop):  # not in pydicom's registry (private class): treat as an image
        return True
    return "Image Storage" in name


def _has_dicm_prefix(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _floats(ds: pydicom.Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None:
        raise VolumeReadError(f"{path}: missing {keyword} (truncated file or not a 3-D image?)")
    try:
        out = np.array([float(v) for v in (value if n > 1 else [value])], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise VolumeReadError(f"{path}: invalid {keyword} {value!r}") from exc
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise VolumeReadError(f"{path}: invalid {keyword} {list(out)} (expected {n} numbers)")
    return out


@dataclass
class _Slice:
    path: Path
    ds: pydicom.Dataset
    iop: np.ndarray  # (6,)
    ipp: np.ndarray  # (3,)
    pixel_spacing: np.ndarray  # (2,) [dy, dx]
    rows: int
    cols: int


def _slice_header(path: Path, ds: pydicom.Dataset) -> _Slice:
    if "PixelData" not in ds:
        raise VolumeReadError(f"{path}: no PixelData (truncated file?)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise VolumeReadError(
            f"{path}: multi-frame DICOM ({frames} frames) is not supported; export single-frame"
        )
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise VolumeReadError(f"{path}: colour DICOM (SamplesPerPixel > 1) is not supported")
    iop = _floats(ds, "ImageOrientationPatient", 6, path)
    ipp = _floats(ds, "ImagePositionPatient", 3, path)
    ps = _floats(ds, "PixelSpacing", 2, path)
    if np.any(ps <= 0):
        raise VolumeReadError(f"{path}: invalid PixelSpacing {list(ps)}")
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise VolumeReadError(f"{path}: missing Rows/Columns")
    return _Slice(path, ds, iop, ipp, ps, int(rows), int(cols))


def _unit_vectors(sl: _Slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row_cos, col_cos = sl.iop[:3], sl.iop[3:]
    nr, nc = np.linalg.norm(row_cos), np.linalg.norm(col_cos)
    if abs(nr - 1) > 1e-2 or abs(nc - 1) > 1e-2:
        raise VolumeReadError(f"{sl.path}: ImageOrientationPatient {list(sl.iop)} is not unit")
    row_cos, col_cos = row_cos / nr, col_cos / nc
    if abs(float(np.dot(row_cos, col_cos))) > 1e-3:
        raise VolumeReadError(
            f"{sl.path}: ImageOrientationPatient {list(sl.iop)} is not orthogonal"
        )
    normal = np.cross(row_cos, col_cos)
    return row_cos, col_cos, normal / np.linalg.norm(normal)


def read_dicom_series(
    folder: str | os.PathLike,
    modality: str | None = None,
    case_id: str | None = None,
    *,
    series_uid: str | None = None,
) -> Volume:
    """Read the one DICOM image series in ``folder`` (not recursive) as a float32 Volume.

    Every regular file is tried (any name, not only ``*.dcm``); files that are not DICOM
    (pydicom's ``InvalidDicomError``, e.g. a readme) and DICOM objects that are not images
    (DICOMDIR, structured reports, presentation states) are skipped. A DICOM file that is
    corrupt, truncated or undecodable is an error naming it.

    Slices are grouped by SeriesInstanceUID: more than one series raises unless
    ``series_uid`` picks one. They are ordered by ``d = dot(n, ImagePositionPatient)`` with
    ``n = row_cos x col_cos``. Checks (each a :class:`VolumeReadError` naming a file):
    equal orientation (1e-4), pixel spacing (1e-4 mm) and rows/cols; no duplicated position
    (closer than 1e-3 mm); even spacing between slices (each step within max(0.01 mm, 1 %) of
    the median step, so a missing slice is caught) and all positions on one line. A
    single-slice series is allowed: its slice step is SpacingBetweenSlices, else
    SliceThickness, else an error.

    Intensities: ``pixel_array * RescaleSlope + RescaleIntercept`` per slice, float32 (HU for
    CT). Modality: the Modality tag when ``modality`` is None (CT/MR only). ``case_id``
    defaults to the folder's name. See the module docstring for the axis order and affine.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeReadError(f"{folder}: not a directory")
    given_modality = _normalise_modality(modality) if modality is not None else None

    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    skipped = 0
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            # Large values (PixelData) are read lazily from the file when accessed.
            ds = pydicom.dcmread(path, defer_size="64 KB")
        except InvalidDicomError as exc:
            if _has_dicm_prefix(path):
                raise VolumeReadError(f"{path}: corrupt DICOM file: {_one_line(exc)}") from exc
            log.debug("skipping non-DICOM file %s", path)
            skipped += 1
            continue
        except Exception as exc:  # pydicom raises many types on corrupt input
            raise VolumeReadError(f"{path}: corrupt DICOM file: {_one_line(exc)}") from exc
        if not _is_image_sop_class(ds):
            log.debug("skipping non-image DICOM object %s", path)
            skipped += 1
            continue
        # Anonymised exports may blank SeriesInstanceUID: those files form one group "".
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        series.setdefault(uid, []).append((path, ds))

    if not series:
        raise VolumeReadError(
            f"{folder}: no DICOM image files found ({skipped} other files skipped)"
        )
    if series_uid is None and "" in series and len(series) > 1:
        raise VolumeReadError(
            f"{series[''][0][0]}: no SeriesInstanceUID while other files in the folder have one "
            f"(truncated file?)"
        )
    if series_uid is not None:
        if series_uid not in series:
            raise VolumeReadError(
                f"{folder}: series {series_uid} not found; the folder has {len(series)} "
                f"series: {', '.join(sorted(series))}"
            )
        files = series[series_uid]
    elif len(series) > 1:
        listing = "; ".join(
            f"{uid or '(no SeriesInstanceUID)'} ({len(v)} files)"
            for uid, v in sorted(series.items())
        )
        raise VolumeReadError(
            f"{folder}: {len(series)} DICOM series in one folder (pass series_uid= to pick "
            f"one): {listing}"
        )
    else:
        files = next(iter(series.values()))

    slices = [_slice_header(p, ds) for p, ds in files]
    ref = slices[0]
    row_cos, col_cos, normal = _unit_vectors(ref)
    for sl in slices[1:]:
        if not np.allclose(sl.iop, ref.iop, atol=_ORIENTATION_ATOL):
            raise VolumeReadError(
                f"{sl.path}: ImageOrientationPatient {list(sl.iop)} differs from "
                f"{list(ref.iop)} in {ref.path.name}"
            )
        if not np.allclose(sl.pixel_spacing, ref.pixel_spacing, atol=_PIXEL_SPACING_ATOL_MM):
            raise VolumeReadError(
                f"{sl.path}: PixelSpacing {list(sl.pixel_spacing)} differs from "
                f"{list(ref.pixel_spacing)} in {ref.path.name}"
            )
        if (sl.rows, sl.cols) != (ref.rows, ref.cols):
            raise VolumeReadError(
                f"{sl.path}: {sl.rows}x{sl.cols} pixels differs from {ref.rows}x{ref.cols} "
                f"in {ref.path.name}"
            )

    dist = np.array([float(np.dot(normal, sl.ipp)) for sl in slices])
    order = np.argsort(dist, kind="stable")
    slices = [slices[i] for i in order]
    dist = dist[order]
    n_slices = len(slices)

    if n_slices > 1:
        steps = np.diff(dist)
        for idx in np.flatnonzero(steps < _DUPLICATE_ATOL_MM):
            raise VolumeReadError(
                f"{slices[idx + 1].path}: duplicated slice position {dist[idx + 1]:.3f} mm "
                f"along the normal (same as {slices[idx].path.name})"
            )
        nominal = float(np.median(steps))
        tol = max(_SLICE_GAP_ATOL_MM, _SLICE_GAP_RTOL * nominal)
        for idx in np.flatnonzero(np.abs(steps - nominal) > tol):
            raise VolumeReadError(
                f"{slices[idx + 1].path}: uneven slice spacing: {steps[idx]:.3f} mm after "
                f"{slices[idx].path.name}, expected {nominal:.3f} mm (missing slice?)"
            )
        first, last = slices[0].ipp, slices[-1].ipp
        step = (last - first) / (n_slices - 1)
        expected = first[None, :] + np.arange(n_slices)[:, None] * step[None, :]
        resid = np.linalg.norm(np.stack([sl.ipp for sl in slices]) - expected, axis=1)
        for idx in np.flatnonzero(resid > tol):
            raise VolumeReadError(
                f"{slices[idx].path}: ImagePositionPatient {list(slices[idx].ipp)} is "
                f"{resid[idx]:.3f} mm off the line through the other slices"
            )
    else:
        only = slices[0]
        thickness = only.ds.get("SpacingBetweenSlices") or only.ds.get("SliceThickness")
        try:
            thickness = float(thickness) if thickness is not None else 0.0
        except (TypeError, ValueError):
            thickness = 0.0
        if not thickness > 0:
            raise VolumeReadError(
                f"{only.path}: single-slice series without SpacingBetweenSlices or "
                f"SliceThickness: the slice step is unknown"
            )
        step = normal * abs(thickness)

    if given_modality is not None:
        mod = given_modality
    else:
        tag = str(ref.ds.get("Modality", "")).strip().upper()
        if tag not in MODALITIES:
            raise VolumeReadError(
                f"{ref.path}: Modality {tag or '(missing)'!r} is not CT or MR; pass modality="
            )
        mod = tag

    dy, dx = (float(v) for v in ref.pixel_spacing)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * dx
    lps[:3, 1] = col_cos * dy
    lps[:3, 2] = step
    lps[:3, 3] = slices[0].ipp
    affine = LPS_TO_RAS @ lps

    array = np.empty((ref.cols, ref.rows, n_slices), dtype=np.float32)
    for k, sl in enumerate(slices):
        array[:, :, k] = _decode_slice(sl).T
    return Volume(array, affine, mod, case_id or folder.resolve().name)


def _decode_slice(sl: _Slice) -> np.ndarray:
    """Pixel data of one slice with the modality rescale applied, float32 (rows, cols)."""
    ds = sl.ds
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # missing decoder, corrupt or truncated pixel data...
        ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        syntax = f"{ts} ({pydicom.uid.UID(str(ts)).name})" if ts else "(unknown)"
        raise VolumeReadError(
            f"{sl.path}: cannot decode pixel data with transfer syntax {syntax}: "
            f"{_one_line(exc)}"
        ) from exc
    if pixels.shape != (sl.rows, sl.cols):
        raise VolumeReadError(
            f"{sl.path}: pixel data shape {pixels.shape} does not match Rows x Columns "
            f"{sl.rows}x{sl.cols}"
        )
    try:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    except (TypeError, ValueError) as exc:
        raise VolumeReadError(f"{sl.path}: invalid RescaleSlope/RescaleIntercept") from exc
    out = pixels.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


# ----------------------------------------------------------------------------------------------
# Dispatch, alignment, writing
# ----------------------------------------------------------------------------------------------


def _is_nifti_name(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_volume(
    path: str | os.PathLike, modality: str | None = None, case_id: str | None = None
) -> Volume:
    """Read a scan: a ``.nii``/``.nii.gz`` file (``modality`` required) or a DICOM folder."""
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, modality=modality, case_id=case_id)
    if _is_nifti_name(path):
        if modality is None:
            raise ValueError(f"{path}: NIfTI has no modality tag; pass modality='CT' or 'MR'")
        return read_nifti(path, modality, case_id)
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file or directory")
    raise VolumeReadError(f"{path}: not a NIfTI file (.nii, .nii.gz) or a DICOM folder")


def align_label_to_image(
    label_array: np.ndarray,
    label_affine: np.ndarray,
    image: Volume,
    tol_mm: float = 0.1,
) -> np.ndarray:
    """Bring a label volume onto ``image``'s voxel grid, exactly (no interpolation).

    Works when the two grids are the same set of voxel centres stored in a different axis
    order/direction: ``T = inv(label_affine) @ image.affine`` (image index -> label index) must
    be a signed permutation with an integer translation, every image voxel centre landing
    within ``tol_mm`` of a label voxel centre, and the label grid must match the image grid
    exactly (same extent). The label array is then transposed/flipped. Identical grids return
    ``label_array`` itself. Anything else (other spacing, region, shape, rotation) raises
    :class:`LabelMismatchError` with a one-line reason.

    Returns:
        The label array (same dtype) with shape ``image.shape``.
    """
    labels = np.asarray(label_array)
    label_affine = np.asarray(label_affine, dtype=np.float64)
    img_shape = image.shape
    if labels.ndim != 3:
        raise LabelMismatchError(f"label volume must be 3-D, got shape {labels.shape}")
    if label_affine.shape != (4, 4) or abs(np.linalg.det(label_affine[:3, :3])) < 1e-12:
        raise LabelMismatchError("label affine is not an invertible 4x4 matrix")
    if labels.shape == img_shape and np.allclose(label_affine, image.affine, rtol=0, atol=1e-6):
        return labels

    transform = np.linalg.inv(label_affine) @ image.affine
    lin, trans = transform[:3, :3], transform[:3, 3]
    perm = np.argmax(np.abs(lin), axis=0)  # image axis c -> label axis perm[c]
    if sorted(perm.tolist()) != [0, 1, 2]:
        raise LabelMismatchError(
            "label grid is rotated relative to the image grid (not an axis permutation/flip)"
        )
    signs = np.sign(lin[perm, [0, 1, 2]])
    img_sp = np.array(image.spacing)
    lab_sp = np.array(_spacing(label_affine))[perm]  # in image axis order
    extent = np.maximum(np.array(img_shape) - 1, 1)
    if np.any(np.abs(img_sp - lab_sp) * extent > tol_mm):
        raise LabelMismatchError(
            f"label spacing {_fmt_vec(lab_sp)} mm (in image axis order) differs from image "
            f"spacing {_fmt_vec(img_sp)} mm"
        )
    perm_matrix = np.zeros((3, 3))
    perm_matrix[perm, [0, 1, 2]] = signs
    offset = np.rint(trans)
    # Worst-case distance (mm) between a mapped image voxel centre and its label voxel centre,
    # over the 8 corners of the image grid (the error is affine, so the corners bound it).
    label_sp_all = np.array(_spacing(label_affine))
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in img_shape], indexing="ij"))
    corners = corners.reshape(3, -1).astype(np.float64)
    exact = lin @ corners + trans[:, None]
    snapped = perm_matrix @ corners + offset[:, None]
    dev_mm = float(np.max(np.linalg.norm((exact - snapped) * label_sp_all[:, None], axis=0)))
    if dev_mm > tol_mm:
        raise LabelMismatchError(
            f"label voxel centres are {dev_mm:.3f} mm off the image's (> {tol_mm} mm): rotated "
            f"or shifted by a fraction of a voxel"
        )
    lab_shape_img_order = tuple(labels.shape[p] for p in perm)
    if lab_shape_img_order != img_shape:
        what = (
            "does not cover"
            if any(a < b for a, b in zip(lab_shape_img_order, img_shape))
            else "is larger than"
        )
        raise LabelMismatchError(
            f"label grid {_fmt_shape(lab_shape_img_order)} (in image axis order) {what} "
            f"image grid {_fmt_shape(img_shape)}"
        )
    # Label index along label axis perm[c] for image index i: signs[c] * i + offset[perm[c]];
    # must be i (sign +1, offset 0) or n - 1 - i (sign -1, offset n - 1).
    start = np.array([offset[perm[c]] for c in range(3)])
    want = np.where(signs > 0, 0, np.array(img_shape) - 1)
    if not np.array_equal(start, want):
        shift = tuple(int(v) for v in (start - want) * signs)
        raise LabelMismatchError(
            f"label grid is shifted by {shift} voxels (in image axis order) relative to "
            f"image grid {_fmt_shape(img_shape)}"
        )
    out = labels.transpose(tuple(int(p) for p in perm))
    flip_axes = tuple(int(c) for c in range(3) if signs[c] < 0)
    if flip_axes:
        out = np.flip(out, axis=flip_axes)
    return np.ascontiguousarray(out)


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL (1 mL = 1000 mm^3) of a voxel -> mm ``affine`` (4x4)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    return float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0


def write_mask(mask: np.ndarray, reference: Volume | SliceGeometry, path: str | os.PathLike) -> Path:
    """Write ``mask`` as a uint8 NIfTI with ``reference``'s exact shape and affine.

    ``reference`` is the source :class:`Volume`, or the
    :class:`~anunet_core.preprocessing.SliceGeometry` recorded when it was preprocessed (which
    keeps its shape and affine, so the pixels need not stay in memory). ``mask`` must have the
    reference's shape and integer/bool values in 0..255. The sform and
    qform are both set to the reference's affine with code 1 (scanner); the sform holds it
    exactly (float32), the qform its nearest rigid form. The write is atomic: a temporary file
    in the same folder, then ``os.replace``. Parent folders are created. Returns the path.
    """
    path = Path(path)
    if not _is_nifti_name(path):
        raise ValueError(f"{path}: mask path must end with .nii.gz or .nii")
    mask = np.asarray(mask)
    if isinstance(reference, Volume):
        shape, affine, what = reference.shape, reference.affine, f"reference {reference.case_id}"
    else:
        shape, affine, what = tuple(reference.original_shape), reference.affine, "the preprocessed scan's"
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {_fmt_shape(mask.shape)} differs from {what} shape {_fmt_shape(shape)}")
    if mask.dtype != np.uint8:
        if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
            raise TypeError(f"mask must be bool or integer (threshold first), got {mask.dtype}")
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise ValueError("mask values must be within 0..255")
        mask = mask.astype(np.uint8)
    img = nib.Nifti1Image(np.ascontiguousarray(mask), affine)
    img.set_data_dtype(np.uint8)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return write_atomic(path, lambda tmp: nib.save(img, str(tmp)))
