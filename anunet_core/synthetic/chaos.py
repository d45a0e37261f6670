"""The CHAOS MR layout and the 8-bit greyscale PNG writer its ground truth needs.

:func:`write_chaos_mr`: ``OUT/MR/<n>/T2SPIR/DICOM_anon/IMG-0001-00001.dcm ...`` +
``OUT/MR/<n>/T2SPIR/Ground/IMG-0001-00001.png ...``, the ground truth as grey values
(:data:`anunet_core.vocabulary.CHAOS_GREY`: liver 63, right kidney 126, left kidney 189,
spleen 252). Each folder is written into a temporary folder that then replaces the target.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anunet_core.io import write_folder_atomic
from anunet_core.synthetic.dicom import pixel_layout, stored_grid, write_dicom_series
from anunet_core.synthetic.files import write_bytes_atomic
from anunet_core.synthetic.phantom import Phantom
from anunet_core.vocabulary import CHAOS_GREY

__all__ = ["write_chaos_mr", "write_png_gray"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_gray(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a 2D uint8 array ``(rows, cols)`` as an 8-bit greyscale PNG (row 0 at the top;
    filter type 0 on every row, zlib level 6); atomic. Returns ``path``."""
    a = np.asarray(array)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"expected a 2D uint8 array, got {a.ndim}D {a.dtype}")
    h, w = a.shape
    raw = np.hstack([np.zeros((h, 1), dtype=np.uint8), a]).tobytes()  # filter 0 per row
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    data = (_PNG_SIGNATURE + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw, 6)) + _png_chunk(b"IEND", b""))
    return write_bytes_atomic(Path(path), data)


def write_chaos_mr(
    out_dir: str | os.PathLike,
    phantoms: Sequence[Phantom],
    *,
    first_index: int = 0,
    standard_orientation: bool = False,
) -> list[Path]:
    """CHAOS MR layout: ``OUT/MR/<n>/T2SPIR/DICOM_anon/IMG-0001-00001.dcm ...`` and
    ``OUT/MR/<n>/T2SPIR/Ground/IMG-0001-00001.png ...``.

    ``n`` = ``first_index`` + position in ``phantoms`` + 1 (CHAOS counts from 1). One PNG per
    DICOM slice with the same name stem, so sorted file names pair them (as CHAOS does); names
    run from the most superior slice down. PNG pixel ``(row, col)`` = the DICOM slice's
    ``pixel_array[row, col]``; grey values from :data:`anunet_core.vocabulary.CHAOS_GREY`
    (liver 63, right kidney 126, left kidney 189, spleen 252).
    Returns the case folders ``OUT/MR/<n>``.
    """
    out = Path(out_dir)
    lut = np.zeros(256, dtype=np.uint8)
    for label, grey, _, _ in CHAOS_GREY:
        lut[label] = grey
    cases = []
    for n, p in enumerate(phantoms, start=int(first_index) + 1):
        if p.modality != "MR":
            raise ValueError(f"CHAOS MR layout needs MR phantoms, {p.case_id} is {p.modality}")
        base = out / "MR" / str(n) / "T2SPIR"
        files = write_dicom_series(base / "DICOM_anon", p, names="chaos",
                                   standard_orientation=standard_orientation)
        flip_i, flip_j, _ = stored_grid(p.affine, p.shape, standard_orientation)
        ground = pixel_layout(lut[p.labels], flip_i, flip_j)  # (K, rows, cols)
        with write_folder_atomic(base / "Ground") as tmp:
            for k, f in enumerate(files):
                write_png_gray(tmp / (Path(f).stem + ".png"), ground[k])
        cases.append(out / "MR" / str(n))
    return cases
