"""Atomic writes for the archive writers: one file, or a whole folder at once.

Files go through :func:`anunet_core.io.write_atomic` (a hidden temporary name, then a rename);
DICOM series and CHAOS ``Ground`` folders are filled in a hidden temporary folder that then
replaces the target as a whole (:class:`AtomicDir`), so archive discovery never sees half a
series.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from anunet_core.io import write_atomic

__all__ = ["AtomicDir", "write_bytes_atomic"]


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`anunet_core.io.write_atomic`); returns it."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


class AtomicDir:
    """Fill a temporary folder beside ``path``; on success replace ``path`` with it.

    ``with AtomicDir(path) as tmp:`` yields the temporary folder; on an exception it is
    removed and ``path`` is left as it was.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> Path:
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
