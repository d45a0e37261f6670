"""Tests of anunet_core.synthetic.files, and of the folder writes the archive writers rely on."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from anunet_core.io import write_folder_atomic
from anunet_core.synthetic.files import (
    write_bytes_atomic,
    write_gzip_bomb_nifti,
    write_oversized_header_nifti,
)


def test_atomic_dir_replaces_the_folder_as_a_whole(tmp_path):
    target = tmp_path / "series"
    write_bytes_atomic(target / "old.dcm", b"old")
    with write_folder_atomic(target) as tmp:
        (tmp / "new.dcm").write_bytes(b"new")
        assert (target / "old.dcm").exists()  # readers see the old folder until the end
    assert sorted(f.name for f in tmp_path.rglob("*")) == ["new.dcm", "series"]


def test_atomic_dir_leaves_the_old_folder_on_failure(tmp_path):
    target = tmp_path / "series"
    write_bytes_atomic(target / "old.dcm", b"old")
    with pytest.raises(RuntimeError):
        with write_folder_atomic(target) as tmp:
            (tmp / "half.dcm").write_bytes(b"half")
            raise RuntimeError("killed")
    assert sorted(f.name for f in tmp_path.rglob("*")) == ["old.dcm", "series"]


@pytest.mark.parametrize("shape, dtype", [((64, 64, 33), np.int16), ((3, 500, 700), np.float32)])
def test_gzip_bomb_is_a_valid_small_deterministic_nifti(tmp_path, shape, dtype):
    path = write_gzip_bomb_nifti(tmp_path / "a.nii.gz", shape, dtype=dtype)
    raw = gzip.decompress(path.read_bytes())  # concatenated members: one valid gzip stream
    n_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    assert len(raw) == 352 + n_bytes and raw[352:].count(0) == n_bytes
    assert path.stat().st_size * 100 < n_bytes  # compressed far below its content
    img = nib.load(path)
    assert img.shape == shape and img.get_data_dtype() == dtype
    np.testing.assert_array_equal(img.affine, np.eye(4))
    assert not np.asanyarray(img.dataobj).any()
    again = write_gzip_bomb_nifti(tmp_path / "b.nii.gz", shape, dtype=dtype)
    assert again.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]  # no temporaries


def test_gzip_bomb_of_a_gigavoxel_grid_is_about_two_megabytes(tmp_path):
    path = write_gzip_bomb_nifti(tmp_path / "bomb.nii.gz", (1024, 1024, 1024))
    assert 1 << 20 < path.stat().st_size < 3 << 20
    assert nib.load(path).shape == (1024, 1024, 1024)  # the header claims 2 GiB of int16


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_oversized_header_is_a_header_alone(tmp_path, suffix):
    path = write_oversized_header_nifti(tmp_path / f"h{suffix}", (4096, 4096, 4096, 2), dtype=np.uint8)
    raw = path.read_bytes()
    raw = gzip.decompress(raw) if suffix == ".nii.gz" else raw
    assert len(raw) == 352
    hdr = nib.load(path).header
    assert hdr.get_data_shape() == (4096, 4096, 4096, 2) and hdr.get_data_dtype() == np.uint8


def test_hostile_writers_refuse_other_names_and_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="must end with .nii.gz"):
        write_gzip_bomb_nifti(tmp_path / "a.nii", (4, 4, 4))
    with pytest.raises(ValueError, match="must end with .nii or .nii.gz"):
        write_oversized_header_nifti(tmp_path / "a.img", (4, 4, 4))
    with pytest.raises(ValueError, match="1 to 7 positive sizes"):
        write_oversized_header_nifti(tmp_path / "a.nii", (4, 0, 4))
    assert list(tmp_path.iterdir()) == []
