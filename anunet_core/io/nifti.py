"""NIfTI in and out: images, label volumes, and masks written back in a source's geometry."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from anunet_core.errors import one_line
from anunet_core.io.atomic import write_atomic
from anunet_core.io.geometry import SliceGeometry
from anunet_core.io.volume import Volume, VolumeReadError, fmt_shape
from anunet_core.vocabulary import validate_modality

__all__ = ["NIFTI_SUFFIXES", "case_id_from_path", "is_nifti_name", "read_label_nifti", "read_nifti", "write_mask"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


def is_nifti_name(path: Path) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` file name (any case)."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def case_id_from_path(path: Path) -> str:
    """The file name without ``.nii``/``.nii.gz``."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
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
        raise VolumeReadError(f"{path}: cannot read NIfTI: {one_line(exc)}") from exc
    # Drop trailing singleton axes (x, y, z, 1) -> (x, y, z); a 2-D image becomes 1 slice.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise VolumeReadError(
            f"{path}: expected a 3-D volume, got shape {fmt_shape(data.shape)} "
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
    modality = validate_modality(modality)
    path = Path(path)
    array, affine = _load_nifti(path, labels=False)
    return Volume(array, affine, modality, case_id or case_id_from_path(path))


def read_label_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI label volume: ``(labels, affine)``.

    ``labels`` is 3-D uint8 (int16 when values fall outside 0..255), same axis handling and
    errors as :func:`read_nifti`; float-stored labels must be integer-valued.
    """
    return _load_nifti(path, labels=True)


def write_mask(mask: np.ndarray, reference: Volume | SliceGeometry, path: str | os.PathLike) -> Path:
    """Write ``mask`` as a uint8 NIfTI with ``reference``'s exact shape and affine.

    ``reference`` is the source :class:`Volume`, or the
    :class:`~anunet_core.io.geometry.SliceGeometry` recorded when it was preprocessed (which
    keeps its shape and affine, so the pixels need not stay in memory). ``mask`` must have the
    reference's shape and integer/bool values in 0..255. The sform and
    qform are both set to the reference's affine with code 1 (scanner); the sform holds it
    exactly (float32), the qform its nearest rigid form. The write is atomic: a temporary file
    in the same folder, then ``os.replace``. Parent folders are created. Returns the path.
    """
    path = Path(path)
    if not is_nifti_name(path):
        raise ValueError(f"{path}: mask path must end with .nii.gz or .nii")
    mask = np.asarray(mask)
    if isinstance(reference, Volume):
        shape, affine, what = reference.shape, reference.affine, f"reference {reference.case_id}"
    else:
        shape, affine, what = tuple(reference.original_shape), reference.affine, "the preprocessed scan's"
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {fmt_shape(mask.shape)} differs from {what} shape {fmt_shape(shape)}")
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
