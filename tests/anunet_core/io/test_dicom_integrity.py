"""Tests of anunet_core.io.dicom: every slice of a series accounted for.

Missing slices by InstanceNumber (in the middle, and at the ends when ImagesInAcquisition
states the series' size), unreadable slices (0 bytes, cut short, a ``.dcm`` that is not
DICOM, a broken link), the files that are still skipped, and the voxel cap read from the
headers before any pixel is decoded.
"""

from __future__ import annotations

import os
import shutil
import tracemalloc

import numpy as np
import pydicom
import pytest
from dicom_series import (
    assert_one_line_naming,
    slice_pixels,
    write_dicom_slice,
    write_series,
    write_non_image_dicom,
)
from testkit import REAL_CT_DICOM, need_real_data

from anunet_core.io import (
    DEFAULT_MAX_VOXELS,
    VolumeReadError,
    VolumeTooLarge,
    might_be_dicom_slice,
    read_dicom_series,
    read_volume,
)


def set_tags(path, **tags) -> None:
    """Rewrite DICOM header values of one file in place (None deletes the tag)."""
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def by_instance(written: list[dict]) -> dict[int, dict]:
    """write_series numbers slice k (of n) as InstanceNumber n - k: {InstanceNumber: slice}."""
    n = len(written)
    return {n - k: sl for k, sl in enumerate(written)}


# ----------------------------------------------------------------------------------------------
# Missing slices by number
# ----------------------------------------------------------------------------------------------


def test_jump_in_instance_numbers_names_the_missing_numbers(tmp_path):
    # Positions are evenly spaced (geometry is fine); the numbers say 5 and 6 are gone.
    written = write_series(tmp_path / "s", n=5)
    set_tags(by_instance(written)[5]["path"], InstanceNumber=7)
    with pytest.raises(VolumeReadError) as exc:
        read_dicom_series(tmp_path / "s")
    msg = str(exc.value)
    assert msg == f"{tmp_path / 's'}: series incomplete: InstanceNumber 5-6 missing (5 files with InstanceNumber 1-7)"


def test_missing_middle_slice_is_still_reported_by_geometry_first(tmp_path):
    written = write_series(tmp_path / "s", n=6)
    written[3]["path"].unlink()
    with pytest.raises(VolumeReadError, match=r"uneven slice spacing: 5\.000 mm .*\(missing slice\?\)"):
        read_dicom_series(tmp_path / "s")


@pytest.mark.parametrize(
    "gone, missing",
    [([1, 2], "1-2"), ([6], "6"), ([1, 6], "1, 6")],
    ids=["first-two", "last", "both-ends"],
)
def test_slices_missing_at_the_ends_found_with_images_in_acquisition(tmp_path, gone, missing):
    written = write_series(tmp_path / "s", n=6)
    for number, sl in by_instance(written).items():
        if number in gone:
            sl["path"].unlink()
        else:
            set_tags(sl["path"], ImagesInAcquisition=6, AcquisitionNumber=3)
    with pytest.raises(VolumeReadError) as exc:
        read_dicom_series(tmp_path / "s")
    left = 6 - len(gone)
    lo, hi = min(set(range(1, 7)) - set(gone)), max(set(range(1, 7)) - set(gone))
    assert str(exc.value) == (
        f"{tmp_path / 's'}: series incomplete: InstanceNumber {missing} missing "
        f"({left} files with InstanceNumber {lo}-{hi}, ImagesInAcquisition 6)"
    )


def test_fewer_files_than_images_in_acquisition_without_usable_numbers(tmp_path):
    # Numbers that cannot be 1..N (267-270 for N = 6): the count alone says what is missing.
    written = write_series(tmp_path / "s", n=4)
    for number, sl in by_instance(written).items():
        set_tags(sl["path"], InstanceNumber=266 + number, ImagesInAcquisition=6)
    with pytest.raises(VolumeReadError) as exc:
        read_dicom_series(tmp_path / "s")
    assert str(exc.value) == (
        f"{tmp_path / 's'}: series incomplete: ImagesInAcquisition is 6 but 4 image files are present"
    )


@pytest.mark.parametrize(
    "tags",
    [
        {1: {"InstanceNumber": 267}, 2: {"InstanceNumber": 268}, 3: {"InstanceNumber": 269}, 4: {"InstanceNumber": 270}},
        {1: {"ImagesInAcquisition": 9}},  # not on every slice
        {n: {"ImagesInAcquisition": 9, "AcquisitionNumber": n} for n in range(1, 5)},  # 4 acquisitions
        {n: {"ImagesInAcquisition": 3} for n in range(1, 5)},  # fewer than the files: not this series
        {n: {"ImagesInAcquisition": 4} for n in range(1, 5)},  # exactly complete
        {2: {"InstanceNumber": 1}},  # duplicated numbers: not usable
        {3: {"InstanceNumber": None}},  # a number missing: not usable
    ],
    ids=["starts-at-267", "count-on-one-slice", "several-acquisitions", "count-too-small",
         "count-equal", "duplicate-numbers", "no-number"],
)
def test_complete_series_with_odd_numbers_read(tmp_path, tags):
    written = write_series(tmp_path / "s", n=4)
    for number, change in tags.items():
        set_tags(by_instance(written)[number]["path"], **change)
    vol = read_dicom_series(tmp_path / "s")
    assert vol.shape == (4, 6, 4)
    np.testing.assert_array_equal(vol.array[:, :, 2], written[2]["pixels"].T)


# ----------------------------------------------------------------------------------------------
# Unreadable slices and the files still skipped
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("img001", b"", "0 bytes"),  # a slice emptied in place
        ("extra.dcm", b"", "0 bytes"),
        ("IM0009", b"\x00" * 100, "100 bytes: cut before the DICM marker at byte 128"),
        ("notes.dcm", b"\x00" * 50, "50 bytes: cut before the DICM marker at byte 128"),
        ("slice.DCM", b"this is not DICOM at all " * 10, "not DICOM: no DICM marker at byte 128"),
        # pydicom parses garbage after the marker leniently: an image with no pixels
        ("IM0010", b"\x00" * 128 + b"DICM" + b"\xff" * 40, "no PixelData: truncated file?)"),
    ],
    ids=["emptied-slice", "empty-dcm", "cut-in-preamble", "nul-dcm", "text-dcm", "corrupt"],
)
@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_unreadable_slice_fails_the_series_naming_the_file(tmp_path, name, content, reason):
    write_series(tmp_path / "s", n=3)
    bad = tmp_path / "s" / name
    bad.write_bytes(content)
    with pytest.raises(VolumeReadError) as exc:
        read_dicom_series(tmp_path / "s")
    assert_one_line_naming(exc, bad)
    assert str(exc.value).startswith(f"{bad}: unreadable slice ({reason}")


def test_broken_link_or_fifo_in_a_series_is_an_unreadable_slice(tmp_path):
    written = write_series(tmp_path / "s", n=3)
    link = tmp_path / "s" / "img009"
    link.symlink_to(tmp_path / "elsewhere" / "gone")
    with pytest.raises(VolumeReadError) as exc:
        read_dicom_series(tmp_path / "s")
    assert str(exc.value) == f"{link}: unreadable slice (broken symbolic link)"
    link.unlink()
    assert read_dicom_series(tmp_path / "s").shape == (4, 6, len(written))
    fifo = tmp_path / "s" / "img010"
    os.mkfifo(fifo)  # opening it would block: refused from its type
    with pytest.raises(VolumeReadError) as exc:
        read_dicom_series(tmp_path / "s")
    assert str(exc.value) == f"{fifo}: unreadable slice (not a regular file)"


def test_hidden_and_non_image_files_are_still_skipped(tmp_path):
    written = write_series(tmp_path / "s", n=3)
    folder = tmp_path / "s"
    (folder / "._img000").write_bytes(b"")  # macOS resource fork: hidden
    shutil.copy(written[0]["path"], folder / ".img000.swp")  # a hidden DICOM copy: not a slice
    (folder / "series.json").write_bytes(b"")
    (folder / "scan_labels.nii.gz").write_bytes(b"\x00" * 10)
    (folder / "readme").write_bytes(b"")
    (folder / "Thumbs.db").write_bytes(b"\x00" * 10)
    # A valid non-image DICOM object: a Basic Text SR, no pixels.
    write_non_image_dicom(folder / "report.dcm", SeriesInstanceUID="1.2.826.0.1.3680043.8.498.1")
    vol = read_dicom_series(folder)
    assert vol.shape == (4, 6, 3)
    np.testing.assert_array_equal(vol.array[:, :, 0], written[0]["pixels"].T)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("IM0001", True), ("slice.dcm", True), ("1.2.840.113619.2.55.3.604", True),
        ("CT.1.3.12.2.dcm", True), ("scan.IMA", True), ("DICOMDIR", False), ("README", False),
        ("notes.TXT", False), ("labels.nii.gz", False), ("a.json", False), ("._IM0001", False),
        (".DS_Store", False), ("Thumbs.db", False), ("preview.png", False),
    ],
)
def test_might_be_dicom_slice_decides_on_the_name(tmp_path, name, expected):
    assert might_be_dicom_slice(tmp_path / name) is expected
    assert not (tmp_path / name).exists()  # nothing opened or made


# ----------------------------------------------------------------------------------------------
# The voxel cap: Rows x Columns x slices, from the headers
# ----------------------------------------------------------------------------------------------


def test_dicom_voxel_cap_message_and_limits(tmp_path):
    write_series(tmp_path / "s", n=3)  # 6 rows x 4 columns x 3 slices = 72 voxels
    with pytest.raises(VolumeTooLarge) as exc:
        read_dicom_series(tmp_path / "s", max_voxels=71)
    assert str(exc.value) == f"{tmp_path / 's'}: too large (72 voxels, above the cap of 71; raise --max-voxels)"
    assert isinstance(exc.value, VolumeReadError)
    assert read_dicom_series(tmp_path / "s", max_voxels=72).shape == (4, 6, 3)
    assert read_dicom_series(tmp_path / "s", max_voxels=None).shape == (4, 6, 3)
    with pytest.raises(VolumeTooLarge, match="72 voxels"):
        read_volume(tmp_path / "s", max_voxels=50)
    with pytest.raises(ValueError, match="max_voxels must be a positive integer or None, got 0"):
        read_dicom_series(tmp_path / "s", max_voxels=0)


def test_dicom_cap_is_checked_before_any_pixel_is_decoded(tmp_path):
    # Slices whose pixel data cannot be decoded: the cap answers first.
    folder = tmp_path / "s"
    folder.mkdir()
    for k in range(3):
        write_dicom_slice(folder / f"c{k}", ipp=(0, 0, 2.5 * k), pixels=slice_pixels(k, 6, 4),
                          transfer_syntax="1.2.840.10008.1.2.4.90")
    with pytest.raises(VolumeTooLarge, match=r"too large \(72 voxels"):
        read_dicom_series(folder, max_voxels=10)


def test_dicom_headers_claiming_a_huge_grid_fail_without_allocating(tmp_path):
    written = write_series(tmp_path / "s", n=3)
    for sl in written:  # 30000 x 30000 x 3 claimed by files of a few hundred bytes
        set_tags(sl["path"], Rows=30000, Columns=30000)
    tracemalloc.start()
    try:
        with pytest.raises(VolumeTooLarge) as exc:
            read_dicom_series(tmp_path / "s")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(exc.value) == (
        f"{tmp_path / 's'}: too large (2700000000 voxels, above the cap of {DEFAULT_MAX_VOXELS}; "
        f"raise --max-voxels)"
    )
    assert peak < 4 << 20


def test_real_ct_series_cap_from_headers(tmp_path):
    folder = need_real_data(REAL_CT_DICOM / "dicom")
    with pytest.raises(VolumeTooLarge) as exc:  # 512 x 512 x 20, JPEG 2000: nothing decoded
        read_dicom_series(folder, max_voxels=512 * 512 * 20 - 1)
    assert str(exc.value).startswith(f"{folder}: too large (5242880 voxels, above the cap of 5242879;")
