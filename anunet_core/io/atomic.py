"""Atomic writes: readers see the old file (or folder) or the new one, never half of one.

Every writer of the project (masks, archives, Parquet shards, summaries, evaluations) goes
through :func:`write_atomic` (JSON through :func:`write_json_atomic`), and whole folders (a
dataset, a DICOM series) through :func:`write_folder_atomic`, so a killed job never leaves a
truncated output behind.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["recover_folder", "write_atomic", "write_folder_atomic", "write_json_atomic"]


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a hidden temporary file beside ``path``, then rename it onto ``path``.

    The temporary name keeps ``path``'s suffixes (``.nii.gz``, ``.parquet``) so that writers
    that pick the format from the extension work; it starts with a dot, so archive discovery
    ignores it. Parent folders are created; on any failure the temporary file is removed and
    ``path`` is left as it was. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{''.join(path.suffixes)}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | os.PathLike, data: object) -> Path:
    """Write ``data`` as indented, key-sorted JSON (one trailing newline) through :func:`write_atomic`."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


@contextmanager
def write_folder_atomic(path: str | os.PathLike) -> Iterator[Path]:
    """Fill a hidden staging folder beside ``path``; on success it replaces ``path`` whole.

    ``with write_folder_atomic(out) as staging:`` yields the staging folder (same file system,
    so the final rename is atomic). On success an existing ``path`` is moved aside, the staging
    folder renamed onto ``path`` and the old one removed: readers see the old folder or the new
    one, never a mix. On an exception the staging folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        yield staging
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(path, old)
        os.replace(staging, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def recover_folder(path: str | os.PathLike) -> list[Path]:
    """Clean up after :func:`write_folder_atomic` runs that were killed; call it holding the
    output's lock (:func:`anunet_core.io.lock.output_lock`), so no live run is disturbed.

    A run killed between its two renames left ``path`` missing and the previous folder aside
    (``.<name>.old-*``): it is put back, so readers never find no dataset at all. Staging
    folders of killed runs (``.<name>.staging-*``) and old folders not needed any more are
    removed. Returns the leftovers removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not path.exists():
        os.replace(olds.pop(), path)  # the newest copy set aside: the dataset readers last saw
    removed = [*olds, *path.parent.glob(f".{path.name}.staging-*")]
    for leftover in removed:
        shutil.rmtree(leftover, ignore_errors=True)
    return removed
