"""NIfTI in and out: images, label volumes, and masks written back in a source's geometry.

Reading is header first: :func:`_check_nifti_header` reads the fixed header (348 bytes for
NIfTI-1, 540 for NIfTI-2) and the extension sizes, and refuses a grid above ``max_voxels``
(:class:`~anunet_core.io.volume.VolumeTooLarge`) or extensions that would make nibabel read
more than 64 MiB, before nibabel allocates anything. A gzip bomb (a small ``.nii.gz`` whose
header claims a huge grid of compressible data) therefore fails after a few hundred bytes.

A mask may carry a description (the model version that made it): a NIfTI-1 comment extension
(code 6) holding UTF-8 text, also copied into the header's 80-byte ``descrip`` when it fits
(:func:`write_mask`, :func:`read_mask_description`).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.nifti1 import Nifti1Extension, Nifti1Header
from nibabel.nifti2 import Nifti2Header
from nibabel.openers import ImageOpener

from anunet_core.errors import one_line
from anunet_core.io.atomic import write_atomic
from anunet_core.io.geometry import SliceGeometry
from anunet_core.io.volume import (
    DEFAULT_MAX_VOXELS,
    Volume,
    VolumeReadError,
    check_max_voxels,
    check_voxel_count,
    fmt_shape,
)
from anunet_core.vocabulary import validate_modality

__all__ = [
    "MASK_DESCRIPTION_CODE",
    "NIFTI_SUFFIXES",
    "case_id_from_path",
    "is_nifti_name",
    "read_label_nifti",
    "read_mask_description",
    "read_nifti",
    "write_mask",
]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

#: NIfTI-1 extension code of a mask's description: 6, "comment" (UTF-8 text).
MASK_DESCRIPTION_CODE = 6
_DESCRIP_BYTES = 80  # the header's descrip field, char[80]
_MAX_EXTENSION_BYTES = 64 << 20  # header extensions nibabel may read (CIFTI-size at most)


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


def _header_class(block: bytes) -> type[Nifti1Header] | None:
    """NIfTI-1 or NIfTI-2 from ``sizeof_hdr`` (either byte order); None for anything else."""
    if len(block) < 4:
        return None
    sizes = {int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")}
    for klass in (Nifti1Header, Nifti2Header):
        if klass.sizeof_hdr in sizes and len(block) >= klass.sizeof_hdr:
            return klass
    return None


def _check_nifti_header(path: Path, max_voxels: int | None) -> None:
    """Check what a NIfTI file's header claims before nibabel reads more than the header.

    Reads the fixed header (348 or 540 bytes, decompressed from ``.nii.gz``) and then only the
    8-byte heads of its extensions. Raises :class:`VolumeTooLarge` when the grid (every axis,
    4-D too) is above ``max_voxels``, and :class:`VolumeReadError` when the extensions claim
    more than 64 MiB, or more than the room before the data (nibabel would read them whole).
    A file that is not a NIfTI header at all passes: ``nib.load`` then says why it fails.
    """
    try:
        with ImageOpener(str(path), "rb") as fh:
            block = fh.read(Nifti2Header.sizeof_hdr + 4)
            klass = _header_class(block)
            if klass is None:
                return
            size = klass.sizeof_hdr
            hdr = klass(block[:size], check=False)
            check_voxel_count(path, hdr.get_data_shape(), max_voxels)
            if len(block) >= size + 4 and block[size] != 0:  # extensions follow the header
                problem = _extension_sizes(fh, size, float(hdr["vox_offset"]), hdr.endianness)
                if problem:
                    raise VolumeReadError(f"{path}: cannot read NIfTI: {problem}")
    except VolumeReadError:
        raise
    except Exception:  # noqa: BLE001 - unreadable (not gzip, cut short...): nib.load says why
        return


def _extension_sizes(fh, header_bytes: int, vox_offset: float, endianness: str) -> str | None:
    """None when the extensions fit their room; else why not (nibabel reads each whole)."""
    room = vox_offset - (header_bytes + 4)
    if room < 0:
        return f"header extensions flagged but the data starts at byte {vox_offset:g}, inside the header"
    if room > _MAX_EXTENSION_BYTES:
        return f"header extensions of {room:.0f} bytes (above {_MAX_EXTENSION_BYTES})"
    fh.seek(header_bytes + 4)
    while room >= 16:  # nibabel's own loop condition
        head = fh.read(8)
        if len(head) < 8:
            return None  # cut short: nib.load reports it
        esize, _code = struct.unpack(endianness + "ii", head)
        if esize < 8 or esize > room:
            return f"header extension of {esize} bytes does not fit the {room:.0f} bytes before the data"
        fh.seek(esize - 8, os.SEEK_CUR)
        room -= esize
    return None


def _load_nifti(
    path: str | os.PathLike, *, labels: bool, max_voxels: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The single NIfTI reader: (3-D array, affine). Images float32; labels integer."""
    path = Path(path)
    max_voxels = check_max_voxels(max_voxels)
    _check_nifti_header(path, max_voxels)
    try:
        img = nib.load(str(path))  # lazy: header and extensions only
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib...)
        raise VolumeReadError(f"{path}: cannot read NIfTI: {one_line(exc)}") from exc
    check_voxel_count(path, img.shape, max_voxels)  # the header nibabel parsed, before any pixel
    try:
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


def read_nifti(
    path: str | os.PathLike,
    modality: str,
    case_id: str | None = None,
    *,
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
) -> Volume:
    """Read a ``.nii`` / ``.nii.gz`` image as a float32 :class:`Volume`.

    The array is ``img.get_fdata(dtype=float32)`` (header scaling applied) in the file's own
    axis order; the affine is ``img.affine`` (sform, else qform). A 4-D file whose 4th axis is
    1 is squeezed; a real 4-D series raises :class:`VolumeReadError`, as does a corrupt or
    truncated file (one line naming the file). NIfTI has no modality tag: pass ``modality``.

    ``max_voxels``: a header whose grid (the product of all its dimensions, 4-D included) is
    larger raises :class:`~anunet_core.io.volume.VolumeTooLarge` before any pixel is read or
    allocated; None for no cap. Default :data:`~anunet_core.io.volume.DEFAULT_MAX_VOXELS`.
    """
    modality = validate_modality(modality)
    path = Path(path)
    array, affine = _load_nifti(path, labels=False, max_voxels=max_voxels)
    return Volume(array, affine, modality, case_id or case_id_from_path(path))


def read_label_nifti(
    path: str | os.PathLike, *, max_voxels: int | None = DEFAULT_MAX_VOXELS
) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI label volume: ``(labels, affine)``.

    ``labels`` is 3-D uint8 (int16 when values fall outside 0..255), same axis handling,
    voxel cap (``max_voxels``) and errors as :func:`read_nifti`; float-stored labels must be
    integer-valued.
    """
    return _load_nifti(path, labels=True, max_voxels=max_voxels)


def write_mask(
    mask: np.ndarray,
    reference: Volume | SliceGeometry,
    path: str | os.PathLike,
    description: str | None = None,
) -> Path:
    """Write ``mask`` as a uint8 NIfTI with ``reference``'s exact shape and affine.

    ``reference`` is the source :class:`Volume`, or the
    :class:`~anunet_core.io.geometry.SliceGeometry` recorded when it was preprocessed (which
    keeps its shape and affine, so the pixels need not stay in memory). ``mask`` must have the
    reference's shape and integer/bool values in 0..255. The sform and
    qform are both set to the reference's affine with code 1 (scanner); the sform holds it
    exactly (float32), the qform its nearest rigid form. The write is atomic: a temporary file
    in the same folder, then ``os.replace``. Parent folders are created. Returns the path.

    ``description`` (e.g. the registered model and version that made the mask) is stored
    losslessly as a NIfTI-1 comment extension (code 6, UTF-8; read it back with
    :func:`read_mask_description`) and also in the header's ``descrip`` when its UTF-8 form
    fits in 80 bytes (what ``fslhd`` and ITK-SNAP show). It may not contain NUL characters.
    """
    path = Path(path)
    if not is_nifti_name(path):
        raise ValueError(f"{path}: mask path must end with .nii.gz or .nii")
    text = _description_bytes(description)
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
    if text is not None:
        img.header.extensions.append(Nifti1Extension(MASK_DESCRIPTION_CODE, text))
        if len(text) <= _DESCRIP_BYTES:
            img.header["descrip"] = text
    return write_atomic(path, lambda tmp: nib.save(img, str(tmp)))


def _description_bytes(description: str | None) -> bytes | None:
    if description is None:
        return None
    if not isinstance(description, str):
        raise TypeError(f"description must be a string or None, got {type(description).__name__}")
    if "\0" in description:
        raise ValueError("description must not contain NUL characters")
    return description.encode("utf-8")


def read_mask_description(path: str | os.PathLike) -> str | None:
    """The description :func:`write_mask` stored in a mask file, or None when it has none.

    Reads only the header and its extensions (the first comment extension, code 6, decoded as
    UTF-8); the voxel data is never read, so this works on a mask whose data part is cut
    short. The header's ``descrip`` alone (written by other tools) is not a description. An
    unreadable file, or a comment that is not UTF-8, raises
    :class:`~anunet_core.io.volume.VolumeReadError` (one line naming the file).
    """
    path = Path(path)
    _check_nifti_header(path, max_voxels=None)
    try:
        extensions = nib.load(str(path)).header.extensions  # lazy: no voxel is read
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib...)
        raise VolumeReadError(f"{path}: cannot read NIfTI: {one_line(exc)}") from exc
    for ext in extensions:
        if ext.get_code() == MASK_DESCRIPTION_CODE:
            try:
                return bytes(ext.get_content()).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise VolumeReadError(f"{path}: mask description is not UTF-8 text: {one_line(exc)}") from exc
    return None
