"""Atomic writes for the archive writers: one file, or a whole folder at once.

Files go through :func:`anunet_core.io.write_atomic` (a hidden temporary name, then a rename);
DICOM series and CHAOS ``Ground`` folders are filled in a hidden temporary folder that then
replaces the target as a whole (:func:`anunet_core.io.write_folder_atomic`), so archive
discovery never sees half a series.
"""

from __future__ import annotations

from pathlib import Path

from anunet_core.io import write_atomic

__all__ = ["write_bytes_atomic"]


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`anunet_core.io.write_atomic`); returns it."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))
