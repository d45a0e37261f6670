"""Tests of anunet_core.io.nifti that read headers only: the voxel cap (and gzip bombs), hostile
header extensions, and a mask's description."""

from __future__ import annotations

import gzip
import struct
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from anunet_core.io import (
    DEFAULT_MAX_VOXELS,
    Volume,
    VolumeReadError,
    VolumeTooLarge,
    read_label_nifti,
    read_mask_description,
    read_nifti,
    read_volume,
    write_mask,
)
from anunet_core.synthetic.files import (
    write_gzip_bomb_nifti,
    write_oversized_header_nifti,
)


def peak_bytes(fn) -> tuple[BaseException | None, int]:
    """Run ``fn`` under tracemalloc (numpy's array memory is traced): (its error, peak bytes)."""
    tracemalloc.start()
    try:
        fn()
        error = None
    except Exception as exc:  # noqa: BLE001 - returned for the caller to assert on
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


def too_large(path, n, cap) -> str:
    return f"{path}: too large ({n} voxels, above the cap of {cap}; raise --max-voxels)"


# ----------------------------------------------------------------------------------------------
# The voxel cap
# ----------------------------------------------------------------------------------------------


def test_default_cap_is_512_by_512_by_2048():
    assert DEFAULT_MAX_VOXELS == 512 * 512 * 2048 == 2**29
    assert issubclass(VolumeTooLarge, VolumeReadError)


def test_gzip_bomb_fails_on_the_header_without_allocating(tmp_path):
    bomb = write_gzip_bomb_nifti(tmp_path / "bomb.nii.gz", (1024, 1024, 1024))  # 2 GiB of int16
    assert bomb.stat().st_size < 4 << 20
    error, peak = peak_bytes(lambda: read_nifti(bomb, "CT"))
    assert isinstance(error, VolumeTooLarge)
    assert str(error) == too_large(bomb, 2**30, 2**29)
    assert peak < 1 << 20  # the header and gzip buffers, not the 2 GiB grid
    error, peak = peak_bytes(lambda: read_label_nifti(bomb))
    assert isinstance(error, VolumeTooLarge) and peak < 1 << 20
    error, _ = peak_bytes(lambda: read_volume(bomb, modality="MR", max_voxels=2**30 - 1))
    assert str(error) == too_large(bomb, 2**30, 2**30 - 1)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_cap_counts_every_axis_of_the_header(tmp_path, suffix):
    path = tmp_path / f"series{suffix}"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3, 2), np.int16), np.eye(4)), path)
    with pytest.raises(VolumeTooLarge) as exc:
        read_nifti(path, "MR", max_voxels=119)
    assert str(exc.value) == too_large(path, 120, 119)
    with pytest.raises(VolumeReadError, match="4-D"):  # under the cap: the old 4-D error
        read_nifti(path, "MR", max_voxels=120)


def test_cap_at_and_without_limit_reads(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(4, 5, 3)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(read_nifti(tmp_path / "a.nii.gz", "CT", max_voxels=60).array, data)
    assert read_nifti(tmp_path / "a.nii.gz", "CT", max_voxels=None).shape == (4, 5, 3)
    labels, _ = read_label_nifti(tmp_path / "a.nii.gz", max_voxels=60)
    assert labels.dtype == np.uint8 and labels[3, 4, 2] == 59
    with pytest.raises(VolumeTooLarge, match=r"too large \(60 voxels, above the cap of 59;"):
        read_label_nifti(tmp_path / "a.nii.gz", max_voxels=59)
    for bad in (0, -5, True, 2.5):
        with pytest.raises(ValueError, match="max_voxels must be a positive integer or None"):
            read_nifti(tmp_path / "a.nii.gz", "CT", max_voxels=bad)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_oversized_header_without_data(tmp_path, suffix):
    huge = write_oversized_header_nifti(tmp_path / f"huge{suffix}", (4096, 4096, 4096))
    error, peak = peak_bytes(lambda: read_nifti(huge, "CT"))
    assert str(error) == too_large(huge, 4096**3, DEFAULT_MAX_VOXELS) and peak < 1 << 20
    # Header fine, data missing (a small grid, no cap needed): still an error naming the file.
    small = write_oversized_header_nifti(tmp_path / f"small{suffix}", (8, 8, 8))
    with pytest.raises(VolumeReadError, match="cannot read NIfTI") as exc:
        read_nifti(small, "CT", max_voxels=None)
    assert str(exc.value).startswith(f"{small}: ") and "\n" not in str(exc.value)


def _extension_bomb(path, vox_offset: int, esize: int) -> None:
    """A 2x2x2 uint8 NIfTI whose header flags one extension of ``esize`` bytes (its first 8 bytes
    are written, then zeros up to the data)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape((2, 2, 2))
    hdr["vox_offset"] = vox_offset
    head = hdr.binaryblock + b"\x01\x00\x00\x00" + struct.pack("<ii", esize, 6)
    zeros = gzip.compress(bytes(1 << 20), mtime=0)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(head, mtime=0))
        fh.writelines(zeros for _ in range(vox_offset >> 20))


@pytest.mark.parametrize(
    "vox_offset, esize, reason",
    [
        (352 + 32, 2**31 - 16, "header extension of 2147483632 bytes does not fit the 32 bytes before the data"),
        (352 + (100 << 20), 100 << 20, "header extensions of 104857600 bytes (above 67108864)"),
        (200, 16, "header extensions flagged but the data starts at byte 200, inside the header"),
    ],
    ids=["extension-larger-than-room", "room-above-64MiB", "data-inside-header"],
)
def test_header_extensions_that_would_allocate_are_refused(tmp_path, vox_offset, esize, reason):
    path = tmp_path / "ext.nii.gz"
    _extension_bomb(path, vox_offset, esize)
    error, peak = peak_bytes(lambda: read_nifti(path, "CT"))
    assert str(error) == f"{path}: cannot read NIfTI: {reason}"
    assert peak < 1 << 20
    error, _ = peak_bytes(lambda: read_mask_description(path))
    assert str(error) == f"{path}: cannot read NIfTI: {reason}"


# ----------------------------------------------------------------------------------------------
# A mask's description
# ----------------------------------------------------------------------------------------------


def _reference() -> Volume:
    return Volume(np.zeros((5, 4, 3), np.float32), np.diag([0.8, 0.8, 2.5, 1.0]), "CT", "c1")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_mask_description_round_trip_and_descrip(tmp_path, suffix):
    mask = np.zeros((5, 4, 3), np.uint8)
    mask[1:3, 1:3, 1] = 1
    text = "anunet-liver-L3 v7 (run 3f9a2c)"
    path = write_mask(mask, _reference(), tmp_path / f"m{suffix}", description=text)
    assert read_mask_description(path) == text
    img = nib.load(path)
    assert img.header["descrip"].tobytes().rstrip(b"\x00") == text.encode()
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), mask)  # data unchanged


def test_long_unicode_description_is_kept_whole(tmp_path):
    text = "anunet-kidney-L4 v12 — trained on LiTS+MSD, run " + "0123456789abcdef" * 8 + " ✓"
    assert len(text.encode()) > 80
    path = write_mask(np.ones((5, 4, 3), bool), _reference(), tmp_path / "m.nii.gz", description=text)
    assert read_mask_description(path) == text
    assert nib.load(path).header["descrip"].tobytes().strip(b"\x00") == b""  # too long for descrip


def test_mask_without_description(tmp_path):
    path = write_mask(np.zeros((5, 4, 3), np.uint8), _reference(), tmp_path / "m.nii.gz")
    assert read_mask_description(path) is None
    assert len(nib.load(path).header.extensions) == 0
    with pytest.raises(ValueError, match="NUL"):
        write_mask(np.zeros((5, 4, 3), np.uint8), _reference(), tmp_path / "n.nii.gz", description="a\0b")
    with pytest.raises(TypeError, match="description must be a string"):
        write_mask(np.zeros((5, 4, 3), np.uint8), _reference(), tmp_path / "n.nii.gz", description=7)
    assert not (tmp_path / "n.nii.gz").exists()


def test_reading_the_description_does_not_read_the_data(tmp_path):
    text = "model anunet-spleen-L2 v3"
    path = write_mask(np.ones((64, 64, 32), np.uint8), Volume(
        np.zeros((64, 64, 32), np.float32), np.eye(4), "MR", "big"), tmp_path / "m.nii", description=text)
    raw = path.read_bytes()
    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw[: int(nib.load(path).dataobj.offset) + 10])  # header, extension, 10 voxels
    error, peak = peak_bytes(lambda: read_mask_description(cut))
    assert error is None and peak < 1 << 20
    assert read_mask_description(cut) == text
    with pytest.raises(VolumeReadError):  # the data really is cut short
        read_label_nifti(cut)


@pytest.mark.parametrize("content", [b"", b"not a nifti at all" * 30], ids=["empty", "garbage"])
def test_description_of_an_unreadable_file_is_one_line_error(tmp_path, content):
    path = tmp_path / "m.nii.gz"
    path.write_bytes(content)
    with pytest.raises(VolumeReadError) as exc:
        read_mask_description(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: cannot read NIfTI: ") and "\n" not in msg


def test_description_that_is_not_utf8_is_an_error(tmp_path):
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"\xff\xfe model"))
    nib.save(img, tmp_path / "m.nii.gz")
    with pytest.raises(VolumeReadError, match="mask description is not UTF-8 text") as exc:
        read_mask_description(tmp_path / "m.nii.gz")
    assert str(exc.value).startswith(f"{tmp_path / 'm.nii.gz'}: ")
