"""Tests of anunet_core.archives.msd."""

from __future__ import annotations

import shutil

import numpy as np

from anunet_core.archives import default_label_values, detect_layout, discover_cases, load_case


def test_msd_test_images_nnunet_suffix_and_macos_files(archives, tmp_path):
    root, expected = archives["msd"]
    task = tmp_path / "decathlon" / "Task03_Liver"
    shutil.copytree(root, task)
    (task / "imagesTs").mkdir()
    shutil.copy(task / "imagesTr" / "case_0004.nii.gz", task / "imagesTs" / "case_0099.nii.gz")
    (task / "imagesTs" / "._case_0099.nii.gz").write_bytes(b"junk")
    (task / "__MACOSX").mkdir()
    (task / "__MACOSX" / "._case_0004.nii.gz").write_bytes(b"junk")
    cases = discover_cases(tmp_path / "decathlon")  # the task folder one level down
    assert detect_layout(tmp_path / "decathlon") == detect_layout(tmp_path) == "msd"
    assert discover_cases(tmp_path) == cases  # ... or two
    assert [(c.case_id, c.label is not None) for c in cases] == [
        ("case_0003", True),
        ("case_0004", True),
        ("case_0099", False),
    ]
    assert [c.case_id for c in discover_cases(tmp_path, require_labels=True)] == sorted(expected)
    # nnU-Net v2 channel suffix: imagesTr/<case>_0000.nii.gz <-> labelsTr/<case>.nii.gz
    for name in ("case_0003", "case_0004"):
        (task / "imagesTr" / f"{name}.nii.gz").rename(task / "imagesTr" / f"{name}_0000.nii.gz")
    images = task / "imagesTr"
    shutil.copy(images / "case_0003_0000.nii.gz", images / "case_0003_0001.nii.gz")
    shutil.copy(images / "case_0003_0000.nii.gz", images / "case_0007_0000.nii.gz")  # no label
    (task / "imagesTs" / "case_0099.nii.gz").rename(task / "imagesTs" / "case_0099_0000.nii.gz")
    cases = discover_cases(tmp_path)
    assert [(c.case_id, c.image.name, c.label and c.label.name) for c in cases] == [
        ("case_0003", "case_0003_0000.nii.gz", "case_0003.nii.gz"),
        ("case_0004", "case_0004_0000.nii.gz", "case_0004.nii.gz"),
        ("case_0007", "case_0007_0000.nii.gz", None),
        ("case_0099", "case_0099_0000.nii.gz", None),
    ]
    phantom = expected["case_0003"][1]
    image, mask = load_case(cases[0], "liver", modality="CT")
    np.testing.assert_array_equal(mask, (phantom.labels == 5).astype(np.uint8))
    assert default_label_values("msd", "spleen") == frozenset({1, 2})

