"""Tests of anunet_core.io.nifti: NIfTI images and labels in, masks out in the source geometry."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_series import LPS_TO_RAS, OBLIQUE, assert_one_line_naming, oblique_affine, write_series

from anunet_core.io import (
    Volume,
    VolumeReadError,
    read_dicom_series,
    read_label_nifti,
    read_nifti,
    read_volume,
    write_mask,
)

# ----------------------------------------------------------------------------------------------
# NIfTI
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_read_nifti_values_affine_case_id(tmp_path, suffix):
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    img = nib.Nifti1Image(data, oblique_affine())
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / f"patient_7{suffix}")
    vol = read_nifti(tmp_path / f"patient_7{suffix}", "ct")
    assert vol.case_id == "patient_7" and vol.modality == "CT"
    assert vol.array.dtype == np.float32 and vol.shape == (4, 5, 3)
    np.testing.assert_allclose(vol.array, data * 2.0 - 1024.0)
    np.testing.assert_allclose(vol.affine, oblique_affine(), atol=1e-5)
    np.testing.assert_allclose(vol.spacing, (0.8, 0.9, 2.5), atol=1e-5)
    assert read_volume(tmp_path / f"patient_7{suffix}", modality="CT").shape == (4, 5, 3)


def test_read_nifti_4d(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3, 1), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    assert read_nifti(tmp_path / "a.nii.gz", "MR").shape == (4, 5, 3)
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3, 2), np.float32), np.eye(4)), tmp_path / "b.nii.gz")
    with pytest.raises(VolumeReadError, match="4-D") as exc:
        read_nifti(tmp_path / "b.nii.gz", "MR")
    assert_one_line_naming(exc, tmp_path / "b.nii.gz")


@pytest.mark.parametrize("kind", ["truncated-gz", "garbage", "empty", "truncated-nii", "missing"])
def test_read_nifti_corrupt_is_volume_read_error(tmp_path, kind):
    data = np.random.default_rng(0).normal(size=(16, 16, 8)).astype(np.float32)
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), good)
    path = tmp_path / ("bad.nii" if kind == "truncated-nii" else "bad.nii.gz")
    if kind == "truncated-gz":
        path.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not a nifti file" * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated-nii":
        raw = gzip.decompress(good.read_bytes())
        path.write_bytes(raw[: 352 + 100])
    with pytest.raises(VolumeReadError) as exc:
        read_nifti(path, "CT")
    assert_one_line_naming(exc, path)
    assert isinstance(exc.value, ValueError)


def test_read_label_nifti_dtypes(tmp_path):
    lab = np.zeros((4, 4, 2), np.int32)
    lab[1, 1, 1] = 5
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "l.nii.gz")
    out, aff = read_label_nifti(tmp_path / "l.nii.gz")
    assert out.dtype == np.uint8 and out[1, 1, 1] == 5 and aff.shape == (4, 4)
    lab[0, 0, 0] = 1000
    nib.save(nib.Nifti1Image(lab.astype(np.float32), np.eye(4)), tmp_path / "f.nii.gz")
    out, _ = read_label_nifti(tmp_path / "f.nii.gz")
    assert out.dtype == np.int16 and out[0, 0, 0] == 1000
    nib.save(nib.Nifti1Image(lab.astype(np.float32) + 0.3, np.eye(4)), tmp_path / "g.nii.gz")
    with pytest.raises(VolumeReadError, match="non-integer"):
        read_label_nifti(tmp_path / "g.nii.gz")


# ----------------------------------------------------------------------------------------------
# write_mask
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "affine",
    [np.diag([1.0, 1.0, 1.0, 1.0]), LPS_TO_RAS @ np.diag([0.9, 0.7, 2.5, 1.0]), oblique_affine()],
    ids=["ras", "dicom-lps", "oblique"],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.int64])
def test_write_mask_round_trip(tmp_path, affine, dtype):
    ref = Volume(np.zeros((5, 6, 3), np.float32), affine, "CT", "c1")
    mask = (np.random.default_rng(1).random((5, 6, 3)) > 0.5).astype(dtype)
    out = write_mask(mask, ref, tmp_path / "masks" / "c1.nii.gz")
    assert os.listdir(tmp_path / "masks") == ["c1.nii.gz"]
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    assert img.shape == (5, 6, 3)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), mask.astype(np.uint8))
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-4)


def test_write_mask_dicom_sourced_geometry(tmp_path):
    write_series(tmp_path / "d", n=4, iop=OBLIQUE)
    ref = read_dicom_series(tmp_path / "d")
    mask = (ref.array > 2000).astype(np.uint8)
    out = write_mask(mask, ref, tmp_path / "m.nii.gz")
    back, aff = read_label_nifti(out)
    np.testing.assert_array_equal(back, mask)
    np.testing.assert_allclose(aff, ref.affine, atol=1e-4)


def test_write_mask_validation_and_atomicity(tmp_path, monkeypatch):
    ref = Volume(np.zeros((5, 6, 3), np.float32), np.eye(4), "MR", "c1")
    with pytest.raises(ValueError, match="5x6x3"):
        write_mask(np.zeros((6, 5, 3), np.uint8), ref, tmp_path / "a.nii.gz")
    with pytest.raises(TypeError, match="threshold"):
        write_mask(np.zeros((5, 6, 3), np.float32), ref, tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match=".nii"):
        write_mask(np.zeros((5, 6, 3), np.uint8), ref, tmp_path / "a.png")
    target = write_mask(np.ones((5, 6, 3), np.uint8), ref, tmp_path / "a.nii.gz")
    before = target.read_bytes()

    def boom(img, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_mask(np.zeros((5, 6, 3), np.uint8), ref, target)
    assert os.listdir(tmp_path) == ["a.nii.gz"]  # no temp file left behind
    assert target.read_bytes() == before  # the old file is intact


