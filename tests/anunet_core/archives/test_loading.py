"""Tests of anunet_core.archives.loading: a case's image and organ mask, its files and checksum."""

from __future__ import annotations

import re
import shutil

import nibabel as nib
import numpy as np
import pytest
from archive_builders import (
    KIDNEYS,
    SPACING,
    SPLEEN,
    assert_one_line,
    organ_truth,
    truth_on_grid,
)

from anunet_core.archives import (
    LAYOUTS,
    ArchiveError,
    case_checksum,
    default_label_values,
    discover_cases,
    load_case,
    source_files,
)
from anunet_core.io import (
    DEFAULT_MAX_VOXELS,
    LabelMismatchError,
    Volume,
    VolumeReadError,
    VolumeTooLarge,
)
from anunet_core.synthetic.files import write_gzip_bomb_nifti


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_case_puts_the_organ_where_it_was_written(archives, layout):
    root, expected = archives[layout]
    modality = None if layout in ("lits", "chaos", "dicom") else "CT"
    for case in discover_cases(root):
        phantom = expected[case.case_id][1]
        image, mask = load_case(case, "liver", modality=modality)
        assert isinstance(image, Volume) and image.case_id == case.case_id
        assert image.modality == phantom.modality
        assert mask.shape == image.shape and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 1}
        # The image itself came through the same geometry as the truth...
        expected_image = truth_on_grid(phantom.image, phantom.affine, image)
        np.testing.assert_array_equal(image.array, expected_image)
        # ... and the organ lies where it was written.
        truth = truth_on_grid(organ_truth(layout, phantom), phantom.affine, image)
        np.testing.assert_array_equal(mask, truth)
        image2, none = load_case(case, "liver", modality=modality, with_label=False)
        assert none is None
        np.testing.assert_array_equal(image2.array, image.array)


@pytest.mark.parametrize("layout", ["chaos", "dicom", "pairs"])
def test_kidney_is_both_kidneys_and_spleen_its_code(archives, layout):
    root, expected = archives[layout]
    case = discover_cases(root)[-1]
    phantom = expected[case.case_id][1]
    modality = "CT" if layout == "pairs" else None
    for organ, values in (("kidney", KIDNEYS), ("spleen", SPLEEN)):
        image, mask = load_case(case, organ, modality=modality)
        organ_truth = np.isin(phantom.labels, values).astype(np.uint8)
        truth = truth_on_grid(organ_truth, phantom.affine, image)
        assert truth.sum() > 0
        np.testing.assert_array_equal(mask, truth)


def test_label_on_another_region_is_a_label_mismatch(archives, tmp_path):
    root, _ = archives["pairs"]
    shutil.copytree(root / "case_0003", tmp_path / "case_x")
    lab = nib.load(tmp_path / "case_x" / "labels.nii.gz")
    moved = lab.affine.copy()
    moved[:3, 3] += 5 * np.array(SPACING)  # shifted by whole voxels
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj), moved), tmp_path / "case_x" / "labels.nii.gz")
    case = discover_cases(tmp_path)[0]
    with pytest.raises(LabelMismatchError, match="labels.nii.gz") as info:
        load_case(case, "liver", modality="CT")
    assert_one_line(info.value)


def test_label_values_override(archives):
    root, expected = archives["pairs"]
    case = discover_cases(root)[0]
    phantom = expected[case.case_id][1]
    _, mask = load_case(case, "liver", modality="CT", label_values=[1])
    np.testing.assert_array_equal(mask, (phantom.labels == 1).astype(np.uint8))
    _, mask = load_case(case, "kidney", modality="CT", label_values=5)
    np.testing.assert_array_equal(mask, (phantom.labels == 5).astype(np.uint8))
    _, mask = load_case(case, "liver", modality="CT", label_values=(np.int64(2), 3.0))
    np.testing.assert_array_equal(mask, np.isin(phantom.labels, KIDNEYS).astype(np.uint8))
    for bad in ([], "5", [1.5], [None]):
        with pytest.raises(ArchiveError, match="label_values"):
            load_case(case, "liver", modality="CT", label_values=bad)
    with pytest.raises(ArchiveError, match="organ"):
        load_case(case, "pancreas", modality="CT")


def test_default_label_values_table():
    for layout in ("chaos", "dicom", "pairs"):
        assert default_label_values(layout, "liver") == {5}
        assert default_label_values(layout, "spleen") == {1}
        assert default_label_values(layout, "kidney") == {2, 3}
    with pytest.raises(ArchiveError, match="unknown archive layout"):
        default_label_values("auto", "liver")


def test_corrupt_nifti_is_listed_but_fails_to_load(archives, tmp_path):
    root, _ = archives["pairs"]
    shutil.copytree(root, tmp_path / "archive")
    bad = tmp_path / "archive" / "case_0004" / "image.nii.gz"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    cases = discover_cases(tmp_path / "archive")
    assert [c.case_id for c in cases] == ["case_0003", "case_0004"]
    with pytest.raises(VolumeReadError, match=re.escape(str(bad))) as info:
        load_case(cases[1], "liver", modality="CT")
    assert_one_line(info.value)
    load_case(cases[0], "liver", modality="CT")  # the other case is fine
    bad_label = tmp_path / "archive" / "case_0003" / "labels.nii.gz"
    bad_label.write_bytes(b"garbage")
    with pytest.raises(VolumeReadError, match=re.escape(str(bad_label))):
        load_case(cases[0], "liver", modality="CT")
    assert load_case(cases[0], "liver", modality="CT", with_label=False)[1] is None


def test_corrupt_dicom_is_listed_but_fails_to_load(archives, tmp_path):
    root, _ = archives["dicom"]
    shutil.copytree(root / "case_0003", tmp_path / "case_0003")
    victim = sorted((tmp_path / "case_0003" / "dicom").glob("*.dcm"))[2]
    victim.write_bytes(victim.read_bytes()[:400])
    (case,) = discover_cases(tmp_path)
    with pytest.raises(VolumeReadError, match=re.escape(victim.name)) as info:
        load_case(case, "liver")
    assert_one_line(info.value)


def test_missing_files_after_discovery(archives, tmp_path):
    root, _ = archives["pairs"]
    shutil.copytree(root / "case_0003", tmp_path / "case_0003")
    (case,) = discover_cases(tmp_path)
    (tmp_path / "case_0003" / "labels.nii.gz").unlink()
    with pytest.raises(VolumeReadError, match="no such label file"):
        load_case(case, "liver", modality="CT")
    with pytest.raises(ArchiveError, match="no such label"):
        source_files(case)
    shutil.rmtree(tmp_path / "case_0003")
    with pytest.raises(VolumeReadError, match="no such file"):
        load_case(case, "liver", modality="CT")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_source_files_and_checksum(archives, tmp_path, layout):
    root, _ = archives[layout]
    case = discover_cases(root)[0]
    files = source_files(case)
    assert files == sorted(files) and all(p.is_file() for p in files)
    assert case.label in files or case.label in {p.parent for p in files}
    assert not any(p.name.startswith("._") for p in files)
    first = case_checksum(case)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert case_checksum(case) == first
    # independent of where the archive lies
    copy = tmp_path / "moved"
    shutil.copytree(root, copy, symlinks=True)
    moved = next(c for c in discover_cases(copy) if c.case_id == case.case_id)
    assert case_checksum(moved) == first
    # one byte of one file changed -> another checksum (label, then image)
    for victim in (source_files(moved)[-1], source_files(moved)[0]):
        data = bytearray(victim.read_bytes())
        data[-1] ^= 0xFF
        victim.write_bytes(bytes(data))
        changed = case_checksum(moved)
        assert changed != first
        first = changed


def test_checksum_sees_renamed_and_added_dicom_files(archives, tmp_path):
    root, _ = archives["dicom"]
    shutil.copytree(root / "case_0003", tmp_path / "case_0003")
    (case,) = discover_cases(tmp_path)
    first = case_checksum(case)
    victim = source_files(case)[0]
    victim.rename(victim.with_name("zzz.dcm"))
    assert case_checksum(case) != first



@pytest.mark.parametrize("layout", ["pairs", "dicom"])
def test_voxel_cap_is_read_from_the_image_header(archives, layout):
    root, _ = archives[layout]
    case = discover_cases(root)[0]
    modality = "CT" if layout == "pairs" else None
    image, mask = load_case(case, "liver", modality=modality)
    n = int(np.prod(image.shape))
    with pytest.raises(VolumeTooLarge) as info:
        load_case(case, "liver", modality=modality, max_voxels=n - 1)
    assert str(info.value) == f"{case.image}: too large ({n} voxels, above the cap of {n - 1}; raise --max-voxels)"
    capped, capped_mask = load_case(case, "liver", modality=modality, max_voxels=n)
    np.testing.assert_array_equal(capped.array, image.array)
    np.testing.assert_array_equal(capped_mask, mask)
    with pytest.raises(ArchiveError, match="max_voxels must be a positive integer or None"):
        load_case(case, "liver", modality=modality, max_voxels=0)


def test_gzip_bomb_label_fails_on_its_header(archives, tmp_path):
    root, _ = archives["pairs"]
    shutil.copytree(root / "case_0003", tmp_path / "case_0003")
    (case,) = discover_cases(tmp_path)
    write_gzip_bomb_nifti(case.label, (1024, 1024, 1024))  # 2 GiB of labels in ~2 MB
    with pytest.raises(VolumeTooLarge) as info:
        load_case(case, "liver", modality="CT")
    assert str(info.value) == f"{case.label}: too large (1073741824 voxels, above the cap of {DEFAULT_MAX_VOXELS}; raise --max-voxels)"
    image, mask = load_case(case, "liver", modality="CT", with_label=False)
    assert mask is None and image.case_id == "case_0003"
