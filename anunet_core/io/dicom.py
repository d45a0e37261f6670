"""Read one DICOM image series into a :class:`~anunet_core.io.volume.Volume`.

Voxel axes: ``i`` is the column index (along a row, the direction
``ImageOrientationPatient[:3]``), ``j`` the row index (down a column,
``ImageOrientationPatient[3:]``) and ``k`` the slice index after sorting the slices by
position along the slice normal (:func:`slice_order`: never by file name or InstanceNumber).
DICOM's patient space is LPS (+x left, +y posterior, +z superior); the affine is converted to
RAS+ like NIfTI's.

Affine, derived (``PixelSpacing`` is ``[row spacing, column spacing] = [dy, dx]``)::

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

The reader runs in four steps, one function each: group the folder's files by series
(:func:`_group_series`), check the slices agree (:func:`_check_slices`), sort them and check
their spacing (:func:`slice_order`, :func:`_slice_step`), and build the affine
(:func:`_series_affine`). The CHAOS ground-truth reader places its PNGs with the same
:func:`slice_order`, so labels can never be ordered differently from the images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from anunet_core.errors import one_line
from anunet_core.io.volume import Volume, VolumeReadError
from anunet_core.vocabulary import MODALITIES, validate_modality

__all__ = [
    "LPS_TO_RAS",
    "has_dicom_preamble",
    "is_image_sop_class",
    "read_dicom_series",
    "slice_order",
]

log = logging.getLogger(__name__)

#: LPS <-> RAS: flip the signs of x and y (the same matrix both ways).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Geometry tolerances.
_ORIENTATION_ATOL = 1e-4  # direction cosines (unitless) equal across slices
_PIXEL_SPACING_ATOL_MM = 1e-4  # PixelSpacing equal across slices
_DUPLICATE_ATOL_MM = 1e-3  # two slices closer than this along the normal are duplicates
_SLICE_GAP_ATOL_MM = 0.01  # slice step may deviate by max(0.01 mm, 1 % of the step)
_SLICE_GAP_RTOL = 0.01

# SOP classes that are not images (skipped in a series folder): DICOMDIR, SR, presentation
# states, RT structure sets... Everything whose SOP class name says "Image Storage", or whose
# SOP class is unknown, is treated as an image (and then must be complete).
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


# ----------------------------------------------------------------------------------------------
# Recognising DICOM files
# ----------------------------------------------------------------------------------------------


def has_dicom_preamble(path: Path) -> bool:
    """True when ``path`` has ``DICM`` after the 128-byte preamble (reads 132 bytes).

    The one DICOM sniffing rule of the project: archive discovery and the series reader use it.
    A folder, a broken link or an unreadable file is not DICOM.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_image_sop_class(ds: pydicom.Dataset) -> bool:
    """False for DICOM objects that are not images (DICOMDIR, SR, presentation states...)."""
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


# ----------------------------------------------------------------------------------------------
# Slice headers
# ----------------------------------------------------------------------------------------------


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
    ipp: np.ndarray  # (3,) mm, LPS
    pixel_spacing: np.ndarray  # (2,) [dy, dx] mm
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
    """``(row direction, column direction, slice normal)``, unit vectors in LPS."""
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


# ----------------------------------------------------------------------------------------------
# The four steps
# ----------------------------------------------------------------------------------------------


def slice_order(orientation: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order of a series' slices along its normal: the one slice-order rule.

    Args:
        orientation: ``ImageOrientationPatient`` (6 floats: row then column direction cosines).
        positions: ``(K, 3)`` ``ImagePositionPatient`` of the slices, mm.

    Returns:
        ``(order, distances)``: ``order`` (K,) int64 sorts the slices by ``d = n . IPP`` with
        ``n = row_cos x col_cos`` (stable, so equal positions keep their given order);
        ``distances`` (K,) are the sorted ``d`` in mm.
    """
    orientation = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    normal = normal / np.linalg.norm(normal)
    dist = np.asarray(positions, dtype=np.float64).reshape(-1, 3) @ normal
    order = np.argsort(dist, kind="stable")
    return order, dist[order]


def _group_series(folder: Path) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """``{SeriesInstanceUID: [(path, header)]}`` of the image files in ``folder``.

    Non-DICOM files (a readme) and non-image objects are skipped; a corrupt DICOM file (one
    with the ``DICM`` preamble that pydicom cannot parse) raises naming it.
    """
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    skipped = 0
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            # Large values (PixelData) are read lazily from the file when accessed.
            ds = pydicom.dcmread(path, defer_size="64 KB")
        except InvalidDicomError as exc:
            if has_dicom_preamble(path):
                raise VolumeReadError(f"{path}: corrupt DICOM file: {one_line(exc)}") from exc
            log.debug("skipping non-DICOM file %s", path)
            skipped += 1
            continue
        except Exception as exc:  # pydicom raises many types on corrupt input
            raise VolumeReadError(f"{path}: corrupt DICOM file: {one_line(exc)}") from exc
        if not is_image_sop_class(ds):
            log.debug("skipping non-image DICOM object %s", path)
            skipped += 1
            continue
        # Anonymised exports may blank SeriesInstanceUID: those files form one group "".
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        series.setdefault(uid, []).append((path, ds))
    if not series:
        raise VolumeReadError(f"{folder}: no DICOM image files found ({skipped} other files skipped)")
    return series


def _pick_series(
    series: dict[str, list[tuple[Path, pydicom.Dataset]]], folder: Path, series_uid: str | None
) -> list[tuple[Path, pydicom.Dataset]]:
    """The files of the one series asked for (or the only one)."""
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
        return series[series_uid]
    if len(series) > 1:
        listing = "; ".join(
            f"{uid or '(no SeriesInstanceUID)'} ({len(v)} files)" for uid, v in sorted(series.items())
        )
        raise VolumeReadError(
            f"{folder}: {len(series)} DICOM series in one folder (pass series_uid= to pick "
            f"one): {listing}"
        )
    return next(iter(series.values()))


def _check_slices(slices: list[_Slice]) -> None:
    """Every slice has the first one's orientation, pixel spacing and size."""
    ref = slices[0]
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


def _slice_step(slices: list[_Slice], dist: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """The LPS vector (mm) from one sorted slice to the next, after checking the spacing:
    no duplicate position, even steps (a missing slice is caught), all on one line."""
    if len(slices) == 1:
        return _single_slice_step(slices[0], normal)
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
    step = (last - first) / (len(slices) - 1)
    expected = first[None, :] + np.arange(len(slices))[:, None] * step[None, :]
    resid = np.linalg.norm(np.stack([sl.ipp for sl in slices]) - expected, axis=1)
    for idx in np.flatnonzero(resid > tol):
        raise VolumeReadError(
            f"{slices[idx].path}: ImagePositionPatient {list(slices[idx].ipp)} is "
            f"{resid[idx]:.3f} mm off the line through the other slices"
        )
    return step


def _single_slice_step(only: _Slice, normal: np.ndarray) -> np.ndarray:
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
    return normal * abs(thickness)


def _series_modality(ref: _Slice, given: str | None) -> str:
    if given is not None:
        return given
    tag = str(ref.ds.get("Modality", "")).strip().upper()
    if tag not in MODALITIES:
        raise VolumeReadError(
            f"{ref.path}: Modality {tag or '(missing)'!r} is not CT or MR; pass modality="
        )
    return tag


def _series_affine(ref: _Slice, first: _Slice, step: np.ndarray, row_cos: np.ndarray, col_cos: np.ndarray) -> np.ndarray:
    """Voxel -> RAS+ mm (see the module docstring)."""
    dy, dx = (float(v) for v in ref.pixel_spacing)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * dx
    lps[:3, 1] = col_cos * dy
    lps[:3, 2] = step
    lps[:3, 3] = first.ipp
    return LPS_TO_RAS @ lps


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
    ``series_uid`` picks one. They are ordered by :func:`slice_order`. Checks (each a
    :class:`VolumeReadError` naming a file): equal orientation (1e-4), pixel spacing (1e-4 mm)
    and rows/cols; no duplicated position (closer than 1e-3 mm); even spacing between slices
    (each step within max(0.01 mm, 1 %) of the median step, so a missing slice is caught) and
    all positions on one line. A single-slice series is allowed: its slice step is
    SpacingBetweenSlices, else SliceThickness, else an error.

    Intensities: ``pixel_array * RescaleSlope + RescaleIntercept`` per slice, float32 (HU for
    CT). Modality: the Modality tag when ``modality`` is None (CT/MR only). ``case_id``
    defaults to the folder's name. See the module docstring for the axis order and affine.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeReadError(f"{folder}: not a directory")
    given_modality = validate_modality(modality) if modality is not None else None
    files = _pick_series(_group_series(folder), folder, series_uid)
    slices = [_slice_header(p, ds) for p, ds in files]
    row_cos, col_cos, normal = _unit_vectors(slices[0])
    _check_slices(slices)
    order, dist = slice_order(slices[0].iop, np.stack([sl.ipp for sl in slices]))
    ref = slices[0]
    slices = [slices[i] for i in order]
    step = _slice_step(slices, dist, normal)
    mod = _series_modality(ref, given_modality)
    affine = _series_affine(ref, slices[0], step, row_cos, col_cos)
    array = np.empty((ref.cols, ref.rows, len(slices)), dtype=np.float32)
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
            f"{one_line(exc)}"
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
