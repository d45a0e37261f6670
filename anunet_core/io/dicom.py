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

The reader runs in these steps, one function each: group the folder's files by series
(:func:`_group_series`: every file that might be a slice must be readable,
:func:`might_be_dicom_slice`), check the slices agree (:func:`_check_slices`), check the voxel
cap from Rows x Columns x slices (:func:`~anunet_core.io.volume.check_voxel_count`), sort
them and check their spacing (:func:`slice_order`, :func:`_slice_step`), check no slice is
missing by number (:func:`_check_instance_numbers`), build the affine
(:func:`_series_affine`), and only then decode the pixels (each slice's header, its pixels
removed, is kept in order as ``Volume.dicom_headers``, for a DICOM SEG). The CHAOS
ground-truth reader places its PNGs with the same :func:`slice_order`, so labels can never be
ordered differently from the images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from anunet_core.errors import one_line
from anunet_core.io.volume import (
    DEFAULT_MAX_VOXELS,
    Volume,
    VolumeReadError,
    check_max_voxels,
    check_voxel_count,
)
from anunet_core.vocabulary import MODALITIES, validate_modality

__all__ = [
    "LPS_TO_RAS",
    "NOT_DICOM_NAMES",
    "NOT_DICOM_SUFFIXES",
    "PREFERRED_DECODER",
    "has_dicom_preamble",
    "is_image_sop_class",
    "might_be_dicom_slice",
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

#: The pydicom decoder plugin that decodes compressed pixel data whenever it supports the
#: transfer syntax: pylibjpeg, the project's runtime dependency (with pylibjpeg-libjpeg: JPEG
#: baseline, extended and lossless, JPEG-LS; with pylibjpeg-openjpeg: JPEG 2000). So what
#: decodes a series does not depend on what else is installed, and never python-gdcm, which
#: pydicom tries first when present and which aborts the whole process on a corrupt codestream.
#: Other syntaxes (RLE, deflate) use pydicom's own plugins.
PREFERRED_DECODER = "pylibjpeg"

#: Name endings (lower case) of files that are never DICOM slices: not opened in a series
#: folder, nor while looking for DICOM.
NOT_DICOM_SUFFIXES: tuple[str, ...] = (
    ".nii", ".nii.gz", ".gz", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff",
    ".svg", ".json", ".txt", ".csv", ".tsv", ".md", ".rst", ".html", ".htm", ".xml", ".pdf",
    ".rtf", ".doc", ".docx", ".xls", ".xlsx", ".log", ".ini", ".yaml", ".yml", ".db", ".zip",
    ".tar", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".py", ".sh", ".bat", ".exe",
    ".mha", ".mhd", ".nrrd", ".npy", ".npz", ".mat", ".h5", ".hdf5", ".parquet", ".pkl",
    ".pt", ".pth",
)
#: Whole names (lower case) that are never slices: the DICOMDIR index and documentation.
NOT_DICOM_NAMES: frozenset[str] = frozenset(
    {"dicomdir", "readme", "license", "licence", "copying", "notice"}
)
#: Extensions that claim DICOM: such a file that pydicom cannot read is an unreadable slice.
_DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
#: What a DICOM file starts with (an all-zero preamble, the usual one): a file that is a
#: prefix of it was cut before its header.
_DICOM_START = b"\x00" * 128 + b"DICM"


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


def might_be_dicom_slice(path: str | os.PathLike) -> bool:
    """True when ``path``'s name could be a DICOM slice's: decided on the name alone.

    False for hidden names (starting with ``.``: ``._*`` resource forks, ``.DS_Store``,
    half-written temporaries), :data:`NOT_DICOM_NAMES` (DICOMDIR, README...) and names ending
    in one of :data:`NOT_DICOM_SUFFIXES` (any case); True for anything else, with or without
    an extension (``IM0001``, ``1.2.840.113619.2.55.3.4``, ``slice.dcm``). Opens nothing. In a
    series folder such a file must be a readable DICOM slice (:func:`read_dicom_series`);
    archive discovery opens only such files to sniff them (:func:`has_dicom_preamble`).
    """
    low = Path(path).name.lower()
    return not (low.startswith(".") or low in NOT_DICOM_NAMES or low.endswith(NOT_DICOM_SUFFIXES))


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

    Skipped: names that cannot be slices (:func:`might_be_dicom_slice`: hidden, DICOMDIR,
    README, ``.txt``, ``.json``, ``.nii.gz``...), files without the ``DICM`` marker that are
    not named ``*.dcm``/``*.dicom``/``*.ima`` (a readme without an extension), and valid DICOM
    objects that are not images (DICOMDIR, SR). Every other file is a slice that must be
    readable: :func:`_read_slice_header` raises naming it.
    """
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    skipped = 0
    for path in sorted(folder.iterdir()):
        if not might_be_dicom_slice(path):
            if not path.name.startswith("."):
                skipped += 1
            continue
        if path.is_dir():
            continue  # a subfolder: not recursive
        if path.is_symlink() and not path.exists():
            raise VolumeReadError(f"{path}: unreadable slice (broken symbolic link)")
        if not path.is_file():  # a FIFO would block open(); a device is no slice either
            raise VolumeReadError(f"{path}: unreadable slice (not a regular file)")
        ds = _read_slice_header(path)
        if ds is None:
            log.debug("skipping non-DICOM file %s", path)
            skipped += 1
            continue
        if not is_image_sop_class(ds):
            log.debug("skipping non-image DICOM object %s", path)
            skipped += 1
            continue
        if "PixelData" not in ds:
            raise VolumeReadError(f"{path}: unreadable slice (no PixelData: truncated file?)")
        # Anonymised exports may blank SeriesInstanceUID: those files form one group "".
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        series.setdefault(uid, []).append((path, ds))
    if not series:
        raise VolumeReadError(f"{folder}: no DICOM image files found ({skipped} other files skipped)")
    return series


def _read_slice_header(path: Path) -> pydicom.Dataset | None:
    """The header of a file that might be a slice (pixels deferred), or None when it is
    plainly not DICOM. Raises ``"{path}: unreadable slice (...)"`` for a file of 0 bytes, one
    cut before its ``DICM`` marker, a ``*.dcm`` that is not DICOM, or a corrupt DICOM file."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VolumeReadError(f"{path}: unreadable slice ({one_line(exc)})") from exc
    if size == 0:
        raise VolumeReadError(f"{path}: unreadable slice (0 bytes)")
    try:
        # Large values (PixelData) are read lazily from the file when accessed.
        return pydicom.dcmread(path, defer_size="64 KB")
    except InvalidDicomError as exc:
        if has_dicom_preamble(path):
            raise VolumeReadError(
                f"{path}: unreadable slice (corrupt DICOM file: {one_line(exc)})"
            ) from exc
        if size < len(_DICOM_START) and _DICOM_START.startswith(_head(path, size)):
            raise VolumeReadError(
                f"{path}: unreadable slice ({size} bytes: cut before the DICM marker at byte 128)"
            ) from exc
        if path.name.lower().endswith(_DICOM_SUFFIXES):
            raise VolumeReadError(
                f"{path}: unreadable slice (not DICOM: no DICM marker at byte 128)"
            ) from exc
        return None
    except Exception as exc:  # pydicom raises many types on corrupt input; OSError too
        raise VolumeReadError(f"{path}: unreadable slice (corrupt DICOM file: {one_line(exc)})") from exc


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


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


def _int_tag(ds: pydicom.Dataset, keyword: str) -> int | None:
    """An integer tag's value, or None when absent, empty or not an integer."""
    value = ds.get(keyword)
    try:
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return int(number) if number is not None and number.is_integer() else None


def _number_ranges(numbers: list[int], limit: int = 8) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"`` (at most ``limit`` runs, then ``...``)."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit])
    return text + (", ..." if len(runs) > limit else "")


def _stated_image_count(slices: list[_Slice]) -> int | None:
    """ImagesInAcquisition (0020,1002) when it describes this series: on every slice, the
    same value, one AcquisitionNumber, and at least the number of files; else None."""
    counts = {_int_tag(sl.ds, "ImagesInAcquisition") for sl in slices}
    acquisitions = {_int_tag(sl.ds, "AcquisitionNumber") for sl in slices}
    if len(counts) != 1 or len(acquisitions) != 1:
        return None
    (count,) = counts
    return count if count is not None and count >= len(slices) else None


def _check_instance_numbers(slices: list[_Slice], folder: Path) -> None:
    """No slice missing by number (after the geometry checks, which catch gaps in position).

    When every slice has a unique integer InstanceNumber, the numbers must be consecutive: a
    jump names the missing numbers. Missing slices at the ends are found only when the series
    states its size (:func:`_stated_image_count`): then numbers 1..N are expected when they
    fit, and fewer files than N is an error in any case. Without a stated size a series may
    start at any number (a series cut from a longer one, e.g. 267-286, is complete).
    """
    stated = _stated_image_count(slices)
    numbers = [_int_tag(sl.ds, "InstanceNumber") for sl in slices]
    usable = None not in numbers and len(set(numbers)) == len(numbers)
    if usable:
        lo, hi = min(numbers), max(numbers)  # type: ignore[type-var]
        fits = stated is not None and lo >= 1 and hi <= stated
        expected = range(1, stated + 1) if fits else range(lo, hi + 1)  # type: ignore[operator]
        missing = sorted(set(expected) - set(numbers))  # type: ignore[arg-type]
        if missing:
            said = f", ImagesInAcquisition {stated}" if stated is not None else ""
            raise VolumeReadError(
                f"{folder}: series incomplete: InstanceNumber {_number_ranges(missing)} missing "
                f"({len(slices)} files with InstanceNumber {lo}-{hi}{said})"
            )
    if stated is not None and stated > len(slices):
        raise VolumeReadError(
            f"{folder}: series incomplete: ImagesInAcquisition is {stated} but {len(slices)} "
            f"image files are present"
        )


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
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
) -> Volume:
    """Read the one DICOM image series in ``folder`` (not recursive) as a float32 Volume.

    Files whose name cannot be a slice's are skipped unopened (:func:`might_be_dicom_slice`:
    hidden names, DICOMDIR, README, ``.txt``, ``.json``, ``.nii.gz``...), as are files without
    the ``DICM`` marker that are not named ``*.dcm``/``*.dicom``/``*.ima`` (a readme without an
    extension) and DICOM objects that are not images (DICOMDIR, structured reports,
    presentation states). Every other file is a slice and must be readable, else
    ``"{file}: unreadable slice (...)"``: 0 bytes, cut short, corrupt, a ``.dcm`` that is not
    DICOM, an image without PixelData, or pixel data that cannot be decoded.

    Slices are grouped by SeriesInstanceUID: more than one series raises unless
    ``series_uid`` picks one. They are ordered by :func:`slice_order`. Checks (each a
    :class:`VolumeReadError` naming a file): equal orientation (1e-4), pixel spacing (1e-4 mm)
    and rows/cols; no duplicated position (closer than 1e-3 mm); even spacing between slices
    (each step within max(0.01 mm, 1 %) of the median step, so a missing slice is caught) and
    all positions on one line. A single-slice series is allowed: its slice step is
    SpacingBetweenSlices, else SliceThickness, else an error. Then no slice may be missing by
    number (``"{folder}: series incomplete: ..."``): unique integer InstanceNumbers must be
    consecutive, and when ImagesInAcquisition states the series' size (the same on every
    slice, one acquisition) there must be that many files, numbered 1..N when they fit.

    ``max_voxels``: Rows x Columns x number of slices above it raises
    :class:`~anunet_core.io.volume.VolumeTooLarge` naming the folder, from the headers alone,
    before any pixel is decoded; None for no cap. Default
    :data:`~anunet_core.io.volume.DEFAULT_MAX_VOXELS`.

    Intensities: ``pixel_array * RescaleSlope + RescaleIntercept`` per slice, float32 (HU for
    CT). Compressed pixel data (JPEG Lossless, JPEG-LS, JPEG 2000...) is decoded by pylibjpeg
    (:data:`PREFERRED_DECODER`) when it is installed for the transfer syntax, else by the
    plugin pydicom picks (RLE: pydicom's own); no decoder, or a corrupt codestream:
    ``"{file}: unreadable slice (cannot decode pixel data with transfer syntax ...)"``.
    Modality: the Modality tag when ``modality`` is None (CT/MR only). ``case_id`` defaults to
    the folder's name. See the module docstring for the axis order and affine.

    The returned Volume's ``dicom_headers`` are the slices' datasets in ``k`` order with
    ``PixelData`` deleted once decoded (the headers as read: no file is read twice; an element
    over 64 KB other than the pixels stays deferred, read from its file when accessed).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeReadError(f"{folder}: not a directory")
    given_modality = validate_modality(modality) if modality is not None else None
    max_voxels = check_max_voxels(max_voxels)
    files = _pick_series(_group_series(folder), folder, series_uid)
    slices = [_slice_header(p, ds) for p, ds in files]
    row_cos, col_cos, normal = _unit_vectors(slices[0])
    _check_slices(slices)
    check_voxel_count(folder, (slices[0].rows, slices[0].cols, len(slices)), max_voxels)
    order, dist = slice_order(slices[0].iop, np.stack([sl.ipp for sl in slices]))
    ref = slices[0]
    slices = [slices[i] for i in order]
    step = _slice_step(slices, dist, normal)
    _check_instance_numbers(slices, folder)
    mod = _series_modality(ref, given_modality)
    affine = _series_affine(ref, slices[0], step, row_cos, col_cos)
    array = np.empty((ref.cols, ref.rows, len(slices)), dtype=np.float32)
    for k, sl in enumerate(slices):
        array[:, :, k] = _decode_slice(sl).T
        del sl.ds.PixelData  # the header stays (for a DICOM SEG); the pixels are in ``array``
    headers = tuple(sl.ds for sl in slices)
    return Volume(array, affine, mod, case_id or folder.resolve().name, dicom_headers=headers)


def _prefer_decoder(ds: pydicom.Dataset) -> None:
    """Decode ``ds``'s pixels with :data:`PREFERRED_DECODER` when its transfer syntax is
    compressed and that plugin is installed for it; else pydicom picks (and reports)."""
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is None:
        return
    try:
        if not pydicom.uid.UID(str(syntax)).is_compressed:
            return
        decoder = get_decoder(str(syntax))
    except (ValueError, NotImplementedError):  # a syntax pydicom does not know: pixel_array says so
        return
    if PREFERRED_DECODER in decoder.available_plugins:
        ds.pixel_array_options(decoding_plugin=PREFERRED_DECODER)


def _decode_slice(sl: _Slice) -> np.ndarray:
    """Pixel data of one slice with the modality rescale applied, float32 (rows, cols)."""
    ds = sl.ds
    try:
        _prefer_decoder(ds)
        pixels = ds.pixel_array
    except Exception as exc:  # missing decoder, corrupt or truncated pixel data...
        ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        syntax = f"{ts} ({pydicom.uid.UID(str(ts)).name})" if ts else "(unknown)"
        raise VolumeReadError(
            f"{sl.path}: unreadable slice (cannot decode pixel data with transfer syntax "
            f"{syntax}: {one_line(exc)})"
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
