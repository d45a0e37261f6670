"""Atomic writes for the archive writers, and hostile files for tests of the readers' defences.

Files go through :func:`anunet_core.io.write_atomic` (a hidden temporary name, then a rename);
DICOM series and CHAOS ``Ground`` folders are filled in a hidden temporary folder that then
replaces the target as a whole (:func:`anunet_core.io.write_folder_atomic`), so archive
discovery never sees half a series.

Hostile NIfTI files (deterministic: same arguments, same bytes), for the voxel cap
(:data:`anunet_core.io.DEFAULT_MAX_VOXELS`):

- :func:`write_gzip_bomb_nifti`: a valid ``.nii.gz`` of zeros, a few MB on disk for a grid of
  GBs, built in well under a second;
- :func:`write_oversized_header_nifti`: a header claiming a grid, and no voxel data at all.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from anunet_core.io import write_atomic

__all__ = ["write_bytes_atomic", "write_gzip_bomb_nifti", "write_oversized_header_nifti"]

_BOMB_CHUNK_BYTES = 1 << 20  # zeros compressed once, repeated as gzip members (~1 KB each)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`anunet_core.io.write_atomic`); returns it."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def _nifti_header_bytes(shape: tuple[int, ...], dtype) -> bytes:
    """A NIfTI-1 single-file header (348 bytes) and its 4-byte 'no extensions' flag: ``shape``
    (1 to 7 axes), ``dtype``, 1 mm voxels, identity sform/qform, data at byte 352."""
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= 7 or any(s < 1 for s in shape):
        raise ValueError(f"shape must have 1 to 7 positive sizes, got {shape}")
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr.set_sform(np.eye(4), code=1)
    hdr.set_qform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\x00" * 4


def write_gzip_bomb_nifti(path: str | os.PathLike, shape: tuple[int, ...], dtype=np.int16) -> Path:
    """Write a valid ``.nii.gz`` of zeros whose file is ~1000x smaller than its voxel data.

    The header (``shape``, ``dtype``; see :func:`_nifti_header_bytes`) is one gzip member; the
    ``prod(shape) * itemsize`` bytes of zeros are one 1 MiB chunk compressed once and repeated
    as concatenated gzip members (a valid gzip stream), plus one member for the remainder.
    ``(1024, 1024, 1024)`` int16 (2 GiB of data, 2**30 voxels) is about 2 MB on disk. Reading
    it fully allocates the whole grid, which is what a voxel cap must refuse from the header.
    ``path`` must end with ``.nii.gz``. Written atomically; returns the path.
    """
    path = Path(path)
    if not path.name.lower().endswith(".nii.gz"):
        raise ValueError(f"{path}: a gzip bomb NIfTI must end with .nii.gz")
    header = _nifti_header_bytes(shape, dtype)
    total = int(np.prod([int(s) for s in shape], dtype=object)) * np.dtype(dtype).itemsize
    full, rest = divmod(total, _BOMB_CHUNK_BYTES)
    chunk = gzip.compress(bytes(_BOMB_CHUNK_BYTES), compresslevel=9, mtime=0)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(gzip.compress(header, mtime=0))
            fh.writelines(chunk for _ in range(full))
            if rest:
                fh.write(gzip.compress(bytes(rest), compresslevel=9, mtime=0))

    return write_atomic(path, write)


def write_oversized_header_nifti(path: str | os.PathLike, shape: tuple[int, ...], dtype=np.int16) -> Path:
    """Write a NIfTI that is only a header claiming ``shape`` (``dtype``): no voxel data.

    352 bytes (gzip-compressed when ``path`` ends with ``.nii.gz``, else plain ``.nii``). With
    a voxel cap below ``prod(shape)`` a reader must refuse it from the header; without one it
    is a truncated file. Written atomically; returns the path.
    """
    path = Path(path)
    low = path.name.lower()
    if not low.endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: must end with .nii or .nii.gz")
    header = _nifti_header_bytes(shape, dtype)
    data = gzip.compress(header, mtime=0) if low.endswith(".gz") else header
    return write_bytes_atomic(path, data)
