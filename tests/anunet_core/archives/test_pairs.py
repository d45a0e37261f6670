"""Tests of anunet_core.archives.pairs: NIfTI pairs in folders or flat."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from archive_builders import SHAPE
from testkit import REAL_MR, need_real_data

from anunet_core.archives import ArchiveError, detect_layout, discover_cases, load_case


def test_pairs_flat_folder_and_label_on_another_grid(archives, tmp_path):
    root, expected = archives["pairs"]
    phantom = expected["case_0003"][1]
    img = nib.load(root / "case_0003" / "image.nii.gz")
    nib.save(img, tmp_path / "liver 07.nii.gz")
    # the label stored transposed and flipped, with the matching affine: same voxels in space
    labels = np.asarray(nib.load(root / "case_0003" / "labels.nii.gz").dataobj)
    affine = phantom.affine.copy()
    flipped = labels[::-1].transpose(2, 0, 1)
    lab_affine = affine @ np.array(
        [[0, -1, 0, SHAPE[0] - 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float
    )
    nib.save(nib.Nifti1Image(flipped, lab_affine), tmp_path / "liver 07_seg.nii.gz")
    shutil.copy(root / "case_0004" / "image.nii.gz", tmp_path / "other.nii")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "orphan_mask.nii.gz")
    cases = discover_cases(tmp_path)
    assert detect_layout(tmp_path) == "pairs"
    assert [c.case_id for c in cases] == sorted([cases[0].case_id, "other"])
    flat = next(c for c in cases if c.case_id != "other")
    assert flat.case_id.startswith("liver_07-") and flat.label.name == "liver 07_seg.nii.gz"
    assert next(c for c in cases if c.case_id == "other").label is None
    image, mask = load_case(flat, "liver", modality="CT")
    np.testing.assert_array_equal(mask, (phantom.labels == 5).astype(np.uint8))
    with pytest.raises(ArchiveError, match="no modality tag"):
        load_case(flat, "liver")


def test_pairs_case_folder_subfolders_are_not_cases(archives, tmp_path):
    """TotalSegmentator's dataset: s0001/ct.nii.gz + s0001/segmentations/<structure>.nii.gz.
    The per-structure masks must not become cases of their own."""
    root, _ = archives["pairs"]
    case_dir = tmp_path / "s0001"
    (case_dir / "segmentations").mkdir(parents=True)
    shutil.copy(root / "case_0003" / "image.nii.gz", case_dir / "ct.nii.gz")
    for organ in ("liver", "spleen", "kidney_left"):
        target = case_dir / "segmentations" / f"{organ}.nii.gz"
        shutil.copy(root / "case_0003" / "labels.nii.gz", target)
    (case,) = discover_cases(tmp_path)
    assert (case.case_id, case.image.name, case.label) == ("s0001", "ct.nii.gz", None)


def test_real_mr_pairs_archive():
    root = need_real_data(REAL_MR)
    assert detect_layout(root) == "pairs"
    (case,) = discover_cases(root)
    assert case.case_id == "totalseg-mr" and case.label.name == "labels.nii.gz"
    labels = np.asarray(nib.load(root / "labels.nii.gz").dataobj)
    image, kidney = load_case(case, "kidney", modality="MR")
    assert image.shape == kidney.shape == (117, 91, 20)
    assert kidney.sum() == np.isin(labels, (2, 3)).sum() > 0
    assert (labels == 2).sum() > 0 and (labels == 3).sum() > 0
    _, liver = load_case(case, "liver", modality="MR")
    voxel_ml = float(np.prod(image.spacing)) / 1000.0
    assert liver.sum() * voxel_ml == pytest.approx((labels == 5).sum() * voxel_ml)
    with pytest.raises(ArchiveError, match="no modality tag"):
        load_case(case, "liver")

