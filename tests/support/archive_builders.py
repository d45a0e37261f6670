"""Small archives in every layout, built from phantoms, and what their tests check them with."""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from anunet_core.io import Volume
from anunet_core.synthetic import (
    make_phantom,
    write_chaos_mr,
    write_dicom_archive,
    write_dicom_series,
    write_lits,
    write_msd,
    write_nifti_pairs,
    write_png_gray,
)
from anunet_core.vocabulary import CHAOS_GREY, ORGAN_LABEL_VALUES

CHAOS_CODES = {label: grey for label, grey, _, _ in CHAOS_GREY}  # label value -> grey written

# Non-square in-plane and few slices: a swapped or flipped axis cannot go unnoticed.
SHAPE = (32, 28, 8)
SPACING = (12.0, 12.0, 30.0)
LIVER, SPLEEN, KIDNEYS = (ORGAN_LABEL_VALUES[organ] for organ in ("liver", "spleen", "kidney"))
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def phantom(seed: int, modality: str = "CT", **kw):
    return make_phantom(seed, modality, SHAPE, SPACING, case_id=f"case_{seed:04d}", **kw)


def truth_on_grid(truth: np.ndarray, truth_affine: np.ndarray, image: Volume) -> np.ndarray:
    """``truth`` resampled onto ``image``'s grid by mapping every voxel centre through the two
    affines (world mm), independently of align_label_to_image; the grids must coincide."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), axis=-1)
    index = grid.reshape(-1, 3).T.astype(np.float64)
    world = image.affine[:3, :3] @ index + image.affine[:3, 3:]
    back = np.linalg.inv(truth_affine) @ np.vstack([world, np.ones((1, world.shape[1]))])
    nearest = np.rint(back[:3]).astype(int)
    np.testing.assert_allclose(back[:3], nearest, atol=1e-3)
    return truth[nearest[0], nearest[1], nearest[2]].reshape(image.shape)


def assert_one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


def chaos_series(series: Path, ground: Path | None, phantom, perm: np.ndarray, prefix: str):
    """One CHAOS-style series whose file names are in a shuffled order relative to the slice
    positions: slice k is named ``<prefix>-<perm[k]>``; its PNG ``<perm[k]>.png`` in ground."""
    tmp = series.parent / f"tmp-{series.name}"
    files = write_dicom_series(tmp, phantom, names="uid")  # in slice order k
    series.mkdir(parents=True)
    lut = np.zeros(256, dtype=np.uint8)
    for value, code in CHAOS_CODES.items():
        lut[value] = code
    for k, path in enumerate(files):
        path.rename(series / f"{prefix}-{perm[k]:05d}.dcm")
        if ground is not None:
            # PNG pixel (row r, col c) = DICOM pixel_array[r, c] = image[c, r, k]
            write_png_gray(ground / f"gt_{perm[k]:03d}.png", lut[phantom.labels[:, :, k]].T.copy())
    shutil.rmtree(tmp)


def build_archive(layout: str, root: Path) -> dict[str, tuple[str, object]]:
    """Write a small archive; returns {case_id: (patient_id, phantom)} of the labelled cases."""
    root.mkdir(parents=True, exist_ok=True)
    if layout == "lits":
        p0, p1, p2 = phantom(0), phantom(1), phantom(2)
        write_lits(root / "Training Batch 1", [p0, p1])
        write_lits(root / "Training Batch 2", [p2], first_index=10)
        return {"lits-0": ("lits-0", p0), "lits-1": ("lits-1", p1), "lits-10": ("lits-10", p2)}
    if layout == "chaos":
        p1, p2 = phantom(1, "MR"), phantom(2, "MR")
        write_chaos_mr(root, [p1, p2], standard_orientation=True)  # MR/1, MR/2 T2SPIR
        t1 = phantom(1, "MR", sequence="T1")
        perm = np.random.default_rng(5).permutation(SHAPE[2])
        base = root / "MR" / "1" / "T1DUAL"
        (base / "Ground").mkdir(parents=True)
        chaos_series(base / "DICOM_anon" / "InPhase", base / "Ground", t1, perm, "IMG-0004")
        chaos_series(base / "DICOM_anon" / "OutPhase", None, t1, perm, "IMG-0005")
        return {
            "chaos-1-t1in": ("chaos-1", t1),
            "chaos-1-t1out": ("chaos-1", t1),
            "chaos-1-t2spir": ("chaos-1", p1),
            "chaos-2-t2spir": ("chaos-2", p2),
        }
    phantoms = [phantom(s) for s in (3, 4)]
    expected = {p.case_id: (p.case_id, p) for p in phantoms}
    if layout == "msd":
        write_msd(root, phantoms, "liver")
        (root / "imagesTr" / "._case_0003.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    elif layout == "dicom":
        write_dicom_archive(root, phantoms, standard_orientation=True)
        (root / "case_0003" / "dicom" / "._x.dcm").write_bytes(b"\x00\x05\x16\x07" * 40)
    elif layout == "pairs":
        write_nifti_pairs(root, phantoms)
        (root / "case_0003" / "._image.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    else:
        raise AssertionError(layout)
    return expected


def organ_truth(layout: str, phantom, values=LIVER) -> np.ndarray:
    truth = np.isin(phantom.labels, values)
    if layout == "lits" and values == LIVER:
        truth |= phantom.lesions
    return truth.astype(np.uint8)


def copy_chaos(archives, tmp_path) -> Path:
    root, _ = archives["chaos"]
    shutil.copytree(root / "MR" / "2", tmp_path / "MR" / "2")
    return tmp_path


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png)


def write_filtered_png(path: Path, array: np.ndarray, color_type: int = 0, filters: bool = True) -> None:
    """An 8-bit PNG with every filter type (rows cycle through 0-4); color type 0 or 2."""
    a = np.asarray(array, dtype=np.int64)
    if color_type == 2:
        a = np.repeat(a[..., None], 3, axis=2).reshape(a.shape[0], -1)
    bpp = 3 if color_type == 2 else 1
    raw, prev = b"", np.zeros(a.shape[1], dtype=np.int64)
    for r, cur in enumerate(a):
        kind = r % 5 if filters else 0
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        if kind == 0:
            pred = np.zeros_like(cur)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = prev
        elif kind == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - up_left
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left))
        raw += bytes([kind]) + ((cur - pred) & 0xFF).astype(np.uint8).tobytes()
        prev = cur

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", array.shape[1], array.shape[0], 8, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )

