"""Tests of anunet_core.archives.lits."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from archive_builders import SHAPE, assert_one_line, phantom

from anunet_core.archives import ArchiveError, default_label_values, discover_cases, load_case
from anunet_core.synthetic import write_lits


def test_lits_test_volumes_and_pairing(tmp_path):
    p0, p1 = phantom(0), phantom(1)
    write_lits(tmp_path / "volumes", [p0, p1])
    (tmp_path / "segmentations").mkdir()
    for n in (0, 1):  # LiTS split into volumes/ + segmentations/ folders
        (tmp_path / "volumes" / f"segmentation-{n}.nii").rename(
            tmp_path / "segmentations" / f"segmentation-{n}.nii"
        )
    shutil.copy(tmp_path / "volumes" / "volume-1.nii", tmp_path / "test-volume-3.nii")
    cases = discover_cases(tmp_path)
    assert [(c.case_id, c.label is not None) for c in cases] == [
        ("lits-0", True),
        ("lits-1", True),
        ("lits-test-3", False),
    ]
    assert cases[1].label == tmp_path / "segmentations" / "segmentation-1.nii"
    # require_labels leaves out only what is unlabelled by design (the test set)
    labelled = discover_cases(tmp_path, require_labels=True)
    assert [c.case_id for c in labelled] == ["lits-0", "lits-1"]
    image, mask = load_case(cases[2], "liver")
    assert mask is None and image.modality == "CT"


def test_lits_has_only_liver_labels(archives):
    root, expected = archives["lits"]
    case = discover_cases(root)[0]
    assert default_label_values("lits", "liver") == frozenset({1, 2})
    for organ in ("spleen", "kidney"):
        with pytest.raises(ArchiveError, match="LiTS labels only the liver") as info:
            load_case(case, organ)
        assert_one_line(info.value)
        with pytest.raises(ArchiveError, match="LiTS labels only the liver"):
            default_label_values("lits", organ)
        image, mask = load_case(case, organ, with_label=False)  # segmentation job: fine
        assert mask is None and image.shape == SHAPE
    # override: liver without the tumour
    phantom = expected[case.case_id][1]
    _, mask = load_case(case, "liver", label_values=[1])
    np.testing.assert_array_equal(mask, ((phantom.labels == 5) & ~phantom.lesions).astype(np.uint8))
    assert phantom.lesions.any()


def test_lits_modality_is_ct(archives):
    root, _ = archives["lits"]
    case = discover_cases(root)[0]
    assert load_case(case, "liver", modality="ct")[0].modality == "CT"
    with pytest.raises(ArchiveError, match="holds CT scans"):
        load_case(case, "liver", modality="MR")

