"""CHAOS challenge, MR part::

    ROOT/  (the folder holding MR/, the MR folder itself, or the folder above that)
    └── MR/
        └── 1/                                     patient "1" -> patient_id chaos-1
            ├── T2SPIR/
            │   ├── DICOM_anon/IMG-0002-00001.dcm  case chaos-1-t2spir (one series)
            │   └── Ground/IMG-0002-00001.png      one 8-bit PNG per DICOM file
            └── T1DUAL/
                ├── DICOM_anon/InPhase/*.dcm       case chaos-1-t1in
                ├── DICOM_anon/OutPhase/*.dcm      case chaos-1-t1out
                └── Ground/*.png                   shared by InPhase and OutPhase

    The i-th PNG (sorted by file name) belongs to the i-th DICOM file (sorted by file name);
    each DICOM file's header says where its slice lands in the volume (position along the
    slice normal, the rule of :func:`~anunet_core.io.dicom.read_dicom_series`), and the PNG's
    pixel ``(row, col)`` is the slice's ``pixel_array[row, col]``, i.e. ``label[:, :, k] =
    png.T``. PNG grey values (CHAOS README ranges) are mapped to TotalSegmentator's codes,
    so organs map the same way as in ``dicom``/``pairs``: liver 55-70 -> 5, right kidney
    110-135 -> 2, left kidney 175-200 -> 3, spleen 240-255 -> 1, anything else -> 0.
    CHAOS's CT part (``CT/<id>/DICOM_anon`` + liver-only ``Ground``) is not supported.

"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError

from anunet_core.archives.case import ArchiveError, Case
from anunet_core.archives.names import child, dicom_files, png_files, safe_part, subdirs
from anunet_core.errors import one_line
from anunet_core.io.dicom import is_image_sop_class, slice_order
from anunet_core.io.volume import Volume, VolumeReadError
from anunet_core.vocabulary import CHAOS_GREY_RANGES, ORGAN_LABEL_VALUES

__all__ = ["HINT", "discover", "is_present", "label_values", "read_chaos_labels"]

HINT = "MR/<id>/T2SPIR|T1DUAL/DICOM_anon + Ground/*.png"


def label_values(organ: str) -> frozenset[int]:
    """The PNGs decode to TotalSegmentator's codes: liver {5}, spleen {1}, kidney {2, 3}."""
    return frozenset(ORGAN_LABEL_VALUES[organ])


def is_present(root: Path) -> bool:
    """``MR/<id>/T2SPIR`` or ``T1DUAL``, ``MR`` being the root, ``ROOT/MR`` or ``ROOT/*/MR``."""
    return bool(_chaos_mr_folders(root))


def _is_chaos_patient(folder: Path) -> bool:
    names = {d.name.upper() for d in subdirs(folder)}
    return "T2SPIR" in names or "T1DUAL" in names


def _chaos_mr_folders(root: Path) -> list[Path]:
    """Folders whose subfolders are CHAOS patients: ROOT itself, ROOT/MR or ROOT/*/MR."""
    level1 = subdirs(root)
    candidates = [root] + [d for d in level1 if d.name.upper() == "MR"]
    for d in level1:
        if d.name.upper() != "MR":
            candidates += [g for g in subdirs(d) if g.name.upper() == "MR"]
    out, seen = [], set()
    for folder in candidates:
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        if any(_is_chaos_patient(p) for p in subdirs(folder)):
            out.append(folder)
    return out


def discover(root: Path, require_labels: bool) -> list[Case]:
    cases = []
    for mr in _chaos_mr_folders(root):
        for patient_dir in subdirs(mr):
            if not _is_chaos_patient(patient_dir):
                continue
            patient = f"chaos-{safe_part(patient_dir.name)}"
            t2 = child(patient_dir, "T2SPIR")
            if t2.is_dir():
                ground = child(t2, "Ground")
                cases.append(
                    Case(
                        f"{patient}-t2spir",
                        patient,
                        "chaos",
                        child(t2, "DICOM_anon"),
                        ground if ground.is_dir() else None,
                        "MR",
                    )
                )
            t1 = child(patient_dir, "T1DUAL")
            if t1.is_dir():
                ground = child(t1, "Ground")
                dicom = child(t1, "DICOM_anon")
                for phase, tag in (("InPhase", "t1in"), ("OutPhase", "t1out")):
                    cases.append(
                        Case(
                            f"{patient}-{tag}",
                            patient,
                            "chaos",
                            child(dicom, phase),
                            ground if ground.is_dir() else None,
                            "MR",
                        )
                    )
    return cases


# ----------------------------------------------------------------------------------------------
# Ground truth
# ----------------------------------------------------------------------------------------------


def _chaos_lut() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    for low, high, value in CHAOS_GREY_RANGES:
        lut[low : high + 1] = value
    return lut


def _read_png(path: Path) -> np.ndarray:
    """An 8-bit greyscale PNG as a ``(rows, cols)`` uint8 array (Pillow decodes it)."""
    try:
        with Image.open(path) as png:
            png.load()
            if png.mode != "L":
                raise ValueError(f"expected an 8-bit greyscale PNG, got mode {png.mode}")
            gray = np.asarray(png, dtype=np.uint8)
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as exc:
        raise ArchiveError(f"{path}: cannot read ground-truth PNG: {one_line(exc)}") from exc
    return gray


def read_chaos_labels(ground: Path, series: Path, image: Volume) -> np.ndarray:
    """CHAOS ground truth (a folder of PNGs) as a uint8 label volume on ``image``'s grid.

    ``image`` is the series in ``series`` as read by
    :func:`~anunet_core.io.dicom.read_dicom_series`. The i-th PNG (sorted by name) belongs
    to the i-th DICOM image file (sorted by name); the file's slice index k is its rank by
    position along the slice normal, ``dot(row_cos x col_cos, ImagePositionPatient)`` (headers
    only). ``label[:, :, k] = lut[png].T``, grey values mapped by :data:`CHAOS_GREY_RANGES`
    (TotalSegmentator codes: 5 liver, 2 right kidney, 3 left kidney, 1 spleen).
    """
    ground, series = Path(ground), Path(series)
    if not ground.is_dir():
        raise ArchiveError(f"{ground}: CHAOS Ground folder not found")
    pngs = png_files(ground)
    headers = []
    for path in dicom_files(series):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            raise VolumeReadError(f"{path}: corrupt DICOM file: {one_line(exc)}") from exc
        if is_image_sop_class(ds):
            headers.append((path, ds))
    if len(pngs) != len(headers):
        raise ArchiveError(
            f"{ground}: {len(pngs)} ground-truth PNGs but {len(headers)} DICOM files in "
            f"{series} (CHAOS pairs them one to one)"
        )
    n_cols, n_rows, n_slices = image.shape  # array[i = column, j = row, k]
    if len(headers) != n_slices:
        raise ArchiveError(
            f"{series}: {len(headers)} DICOM files but the volume has {n_slices} slices"
        )
    try:
        iop = np.array([float(v) for v in headers[0][1].ImageOrientationPatient])
        ipp = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in headers])
    except (AttributeError, TypeError, ValueError) as exc:
        raise VolumeReadError(f"{series}: invalid slice geometry: {one_line(exc)}") from exc
    order, _ = slice_order(iop, ipp)  # the series reader's own rule
    slot = np.empty(len(order), dtype=np.int64)
    slot[order] = np.arange(len(order))  # file index (name order) -> slice index k

    lut = _chaos_lut()
    labels = np.zeros(image.shape, dtype=np.uint8)
    for index, (png, (dcm, _)) in enumerate(zip(pngs, headers)):
        gray = _read_png(png)
        if gray.shape != (n_rows, n_cols):
            raise ArchiveError(
                f"{png}: {gray.shape[0]}x{gray.shape[1]} pixels, but its DICOM slice "
                f"{dcm.name} is {n_rows}x{n_cols}"
            )
        labels[:, :, slot[index]] = lut[gray].T
    return labels
