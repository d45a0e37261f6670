"""Tests of anunet_core.archives.discovery: which layout an archive has, and its cases."""

from __future__ import annotations

import pytest
from archive_builders import SAFE_ID, assert_one_line

from anunet_core.archives import LAYOUTS, ArchiveError, detect_layout, discover_cases


@pytest.mark.parametrize("layout", LAYOUTS)
def test_detect_and_discover(archives, layout):
    root, expected = archives[layout]
    assert detect_layout(root) == layout
    cases = discover_cases(root)
    assert [c.case_id for c in cases] == sorted(expected)
    assert {c.case_id: c.patient_id for c in cases} == {k: v[0] for k, v in expected.items()}
    assert all(c.layout == layout and c.label is not None for c in cases)
    assert all(SAFE_ID.match(c.case_id) for c in cases)
    assert discover_cases(root, layout=layout) == cases
    assert discover_cases(str(root), layout=layout.upper(), require_labels=True) == cases
    want_modality = {"lits": "CT", "chaos": "MR"}.get(layout)
    assert {c.modality for c in cases} == {want_modality}


def test_empty_folder(tmp_path):
    for call in (detect_layout, discover_cases):
        with pytest.raises(ArchiveError, match="no cases found in") as info:
            call(tmp_path)
        message = assert_one_line(info.value)
        assert "empty" in message and all(layout in message for layout in LAYOUTS)


def test_folder_of_junk(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "notes.dcm").write_bytes(b"not really dicom" * 20)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(bytes(range(256)))
    (tmp_path / ".DS_Store").write_bytes(b"\0" * 200)
    with pytest.raises(ArchiveError, match="no cases found in") as info:
        discover_cases(tmp_path)
    assert "4 files" in assert_one_line(info.value)  # .DS_Store is a file of the archive too
    for layout in LAYOUTS:  # forced: still a clear error
        with pytest.raises(ArchiveError, match=f"no cases found in .* for layout '{layout}'"):
            discover_cases(tmp_path, layout=layout)


def test_bad_root_and_unknown_layout(tmp_path):
    with pytest.raises(ArchiveError, match="no such archive folder"):
        discover_cases(tmp_path / "missing")
    (tmp_path / "file.nii.gz").write_bytes(b"x")
    with pytest.raises(ArchiveError, match="not a folder"):
        detect_layout(tmp_path / "file.nii.gz")
    with pytest.raises(ArchiveError, match="unknown archive layout 'nifti'") as info:
        discover_cases(tmp_path, layout="nifti")
    assert all(layout in assert_one_line(info.value) for layout in LAYOUTS)

