"""Tests of every file accounted for: anunet_core.archives.inventory and take_inventory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from archive_builders import assert_one_line
from dicom_series import BASIC_TEXT_SR, write_non_image_dicom, write_series

from anunet_core.archives import ArchiveError, discover_cases
from anunet_core.archives.discovery import take_inventory
from anunet_core.archives.inventory import dicom_sop_class, list_entries
from anunet_core.archives.printable import path_from_printable, printable_path
from anunet_core.synthetic.nifti import save_nifti

def nifti(path: Path, shape=(6, 5, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_nifti(path, np.arange(np.prod(shape), dtype=np.int16).reshape(shape), np.eye(4))


def files_present(root: Path) -> int:
    """Every directory entry that is not a folder walked into (links to folders are entries)."""
    return sum(len(files) + sum(os.path.islink(os.path.join(top, d)) for d in dirs)
               for top, dirs, files in os.walk(root))


@pytest.fixture()
def mixed(tmp_path: Path) -> Path:
    """The issue's reproduction plus one of every kind of non-scan entry."""
    root = tmp_path / "archive"
    nifti(root / "good.nii.gz")
    nifti(root / "truncated.nii.gz").write_bytes((root / "truncated.nii.gz").read_bytes()[:100])
    write_series(root / "site_b" / "patient 7", n=3)
    write_non_image_dicom(root / "site_b" / "patient 7" / "report.dcm")  # an SR beside the slices
    (root / "site_b" / "patient 7" / "slice_0099").write_bytes(b"")  # a zero-byte slice
    nifti(root / "deep" / "er" / "scan ü.nii")  # unicode and a space, two levels down
    nifti(root / os.fsdecode(b"latin1_\xe9t\xe9.nii.gz"))  # not UTF-8
    nifti(root / "orphan_seg.nii.gz")  # a label file without its scan
    (root / "notes.txt").write_text("hello")
    (root / "empty.nii.gz").write_bytes(b"")
    (root / ".DS_Store").write_bytes(b"\0" * 64)
    write_non_image_dicom(root / "reports" / "sr.dcm")
    os.mkfifo(root / "pipe")
    outside = nifti(tmp_path / "elsewhere" / "secret.nii.gz")
    os.symlink(outside, root / "link_out.nii.gz")
    os.symlink(tmp_path / "elsewhere", root / "folder_out")
    os.symlink(root / "missing.nii.gz", root / "dangling.nii.gz")
    return root


def test_a_mix_of_nifti_files_and_dicom_series_is_found_whole(mixed: Path) -> None:
    inventory = take_inventory(mixed)
    images = {c.case_id: printable_path(os.path.relpath(c.image, mixed)) for c in inventory.cases}
    assert sorted(images.values()) == sorted([
        "good.nii.gz", "truncated.nii.gz", "site_b/patient 7", "deep/er/scan ü.nii", "latin1_\\xe9t\\xe9.nii.gz",
    ])
    assert inventory.layout == "dicom" and {c.layout for c in inventory.cases} == {"dicom", "pairs"}
    assert len(set(images)) == 5 and all(c.isascii() for c in images)
    # the series takes its 3 slices and its zero-byte slice (its reader fails it), not the SR
    assert inventory.case_files[next(k for k, v in images.items() if v == "site_b/patient 7")] == 4
    assert discover_cases(mixed) == inventory.cases


def test_every_other_entry_is_ignored_with_its_reason(mixed: Path) -> None:
    inventory = take_inventory(mixed)
    reasons = {printable_path(os.path.relpath(i.path, mixed)): i.reason for i in inventory.ignored}
    assert reasons == {
        ".DS_Store": "hidden file",
        "dangling.nii.gz": "broken symbolic link",
        "empty.nii.gz": "zero-byte file",
        "folder_out": "symbolic link leaving the archive",
        "link_out.nii.gz": "symbolic link leaving the archive",
        "notes.txt": "not a scan (.txt file)",
        "orphan_seg.nii.gz": "label file without its scan",
        "pipe": "not a regular file (FIFO)",
        "reports/sr.dcm": "non-image DICOM object (Basic Text SR Storage)",
        "site_b/patient 7/report.dcm": "non-image DICOM object (Basic Text SR Storage)",
    }
    assert inventory.files == files_present(mixed) == 18
    line = inventory.line()
    assert line.startswith("5 cases (1 dicom, 4 pairs) from 18 files in ") and "10 ignored: 2 symbolic link leaving" in line


def test_ingest_refuses_a_mix_it_cannot_pair(mixed: Path) -> None:
    with pytest.raises(ArchiveError, match=r"4 scan\(s\) outside the dicom layout") as info:
        take_inventory(mixed, require_labels=True)
    message = assert_one_line(info.value)
    assert "good.nii.gz" in message and "latin1_\\xe9t\\xe9.nii.gz" in message


def test_no_file_is_ever_opened_outside_the_archive_or_through_a_fifo(mixed: Path) -> None:
    entries = {e.path.name: e for e in list_entries(mixed)}
    assert entries["pipe"].kind == "other"  # listing returned: the FIFO was never opened
    assert "secret.nii.gz" not in entries and entries["folder_out"].kind == "other"


def test_a_hidden_folder_is_one_entry_standing_for_its_files(tmp_path: Path) -> None:
    nifti(tmp_path / "a.nii.gz")
    for name in ("x", "y", "z"):
        (tmp_path / "__MACOSX" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "__MACOSX" / name).write_bytes(b"1")
    inventory = take_inventory(tmp_path)
    assert [(i.path.name, i.reason, i.files) for i in inventory.ignored] == [("__MACOSX", "hidden folder", 3)]
    assert inventory.files == files_present(tmp_path) == 4


def test_links_inside_the_archive_are_followed_once(tmp_path: Path) -> None:
    root = tmp_path / "a"
    write_series(root / "real", n=2)
    os.symlink(root / "real", root / "zz_alias")  # same series, listed under a second name
    nifti(root / "scan.nii.gz")
    os.symlink(root / "scan.nii.gz", root / "scan_link.nii.gz")
    inventory = take_inventory(root)
    assert sorted(c.image.name for c in inventory.cases) == ["real", "scan.nii.gz", "scan_link.nii.gz"]
    assert [(i.path.name, i.reason) for i in inventory.ignored] == [
        ("zz_alias", "symbolic link to a folder already in the archive")]


@pytest.mark.parametrize("name", [
    "plain/scan.nii.gz", "spa ce/ü ñ.nii", "back\\slash\\x41", "new\nline", os.fsdecode(b"\xff\xfe/\xe9"),
])
def test_printable_paths_are_lossless(name: str) -> None:
    text = printable_path(name)
    assert text.isprintable() and path_from_printable(text) == name
    assert os.fsencode(path_from_printable(text)) == os.fsencode(name)


def test_sop_class_is_read_from_the_file_meta_alone(tmp_path: Path) -> None:
    sr = write_non_image_dicom(tmp_path / "sr.dcm")
    assert dicom_sop_class(sr.read_bytes()[:4096]) == BASIC_TEXT_SR
    image = write_series(tmp_path / "series", n=1)[0]["path"]
    assert dicom_sop_class(Path(image).read_bytes()[:4096]) == pydicom.dcmread(image).file_meta.MediaStorageSOPClassUID
    assert dicom_sop_class(b"\0" * 128 + b"DICM") is None
