"""Tests of anunet_core.synthetic.archive: make_archive, the entry point of
jobs/make_synthetic.py, in every layout."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from anunet_core import synthetic as syn
from anunet_core.synthetic import make_archive, make_phantom


@pytest.mark.parametrize(
    "fmt, layout, expected",
    [
        ("nifti", None, ["case_0000/image.nii.gz", "case_0000/labels.nii.gz",
                         "case_0001/image.nii.gz", "case_0001/labels.nii.gz"]),
        ("nifti", "msd", ["dataset.json", "imagesTr/case_0000.nii.gz",
                          "imagesTr/case_0001.nii.gz", "labelsTr/case_0000.nii.gz",
                          "labelsTr/case_0001.nii.gz"]),
        ("nifti", "lits", ["segmentation-0.nii", "segmentation-1.nii", "volume-0.nii",
                           "volume-1.nii"]),
        ("dicom", None, ["case_0000/labels.nii.gz", "case_0001/labels.nii.gz"]),
    ],
)
def test_make_archive_layouts(tmp_path, small_grid, no_temp_files, fmt, layout, expected):
    written = make_archive(tmp_path, 2, "CT", fmt, layout, seed=1, **small_grid)
    assert len(written) == 2 and all(w.exists() for w in written)
    files = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*")
                   if f.is_file() and f.suffix != ".dcm")
    assert files == expected
    if fmt == "dicom":
        for case in written:
            assert len(list((case / "dicom").glob("*.dcm"))) == small_grid["shape"][2]
    assert no_temp_files(tmp_path)


def test_make_archive_chaos_is_mr_only(tmp_path, small_grid):
    written = make_archive(tmp_path, 1, "MR", "dicom", "chaos", **small_grid)
    assert written == [tmp_path / "MR" / "1"]
    with pytest.raises(ValueError, match="MR"):
        make_archive(tmp_path, 1, "CT", "dicom", "chaos", **small_grid)
    with pytest.raises(ValueError, match="layout"):
        make_archive(tmp_path, 1, "CT", "nifti", "chaos", **small_grid)
    with pytest.raises(ValueError, match="fmt"):
        make_archive(tmp_path, 1, "CT", "png", **small_grid)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cases": 0}, "cases"),
        ({"modality": "PET"}, "modality"),
        ({"layout": "msd", "organ": "pancreas"}, "organ"),
    ],
)
def test_make_archive_bad_arguments_raise_before_writing(tmp_path, small_grid, kwargs, match):
    args = {"cases": 1, "modality": "CT", "fmt": "nifti", **kwargs}
    with pytest.raises(ValueError, match=match):
        make_archive(tmp_path / "out", **args, **small_grid)
    assert not (tmp_path / "out").exists()


def test_make_archive_is_reproducible_and_cases_differ(tmp_path, small_grid):
    a = make_archive(tmp_path / "a", 2, "MR", "nifti", seed=4, **small_grid)
    b = make_archive(tmp_path / "b", 2, "MR", "nifti", seed=4, **small_grid)
    for x, y in zip(a, b):
        assert (x / "image.nii.gz").read_bytes() == (y / "image.nii.gz").read_bytes()
    img0 = nib.load(a[0] / "image.nii.gz").get_fdata()
    img1 = nib.load(a[1] / "image.nii.gz").get_fdata()
    assert not np.array_equal(img0, img1)
    expected = make_phantom(syn.case_seed(4, 1), "MR", **small_grid)
    np.testing.assert_array_equal(img1, expected.image)
