"""Atomic file writes: readers see the old file or the new one, never half of one.

Every writer of the project (masks, archives, Parquet shards, summaries, evaluations) goes
through :func:`write_atomic`, so a killed job never leaves a truncated output behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


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
