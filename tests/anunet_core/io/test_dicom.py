"""Tests of anunet_core.io.dicom: series grouping, slice order, geometry checks, affine, pixel values."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from dicom_series import (
    AXIAL,
    CORONAL,
    MEDIA_STORAGE_DIRECTORY,
    OBLIQUE,
    SAGITTAL,
    assert_one_line_naming,
    expected_world_ras,
    slice_pixels,
    write_dicom_slice,
    write_series,
    write_non_image_dicom,
)

from anunet_core.io import VolumeReadError, read_dicom_series

# ----------------------------------------------------------------------------------------------
# DICOM: geometry and values
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iop, shear",
    [
        (AXIAL, (0, 0, 0)),
        (CORONAL, (0, 0, 0)),
        (SAGITTAL, (0, 0, 0)),
        (OBLIQUE, (0, 0, 0)),
        (AXIAL, (0.0, 0.8, 0.0)),  # gantry tilt: positions sheared along y
    ],
    ids=["axial", "coronal", "sagittal", "oblique", "gantry-tilt"],
)
def test_dicom_sorting_values_and_affine(tmp_path, iop, shear):
    written = write_series(tmp_path / "case42", n=6, iop=iop, shear=shear, seed=3)
    vol = read_dicom_series(tmp_path / "case42")
    assert vol.shape == (4, 6, 6)  # (cols, rows, slices)
    assert vol.array.dtype == np.float32
    assert vol.modality == "CT"
    assert vol.case_id == "case42"
    for k, sl in enumerate(written):
        # array[i, j, k] = pixel_array[j, i] of the k-th slice along the normal
        np.testing.assert_array_equal(vol.array[:, :, k], sl["pixels"].T.astype(np.float32))
        for i, j in [(0, 0), (3, 0), (0, 5), (3, 5), (2, 1)]:
            world = vol.affine @ np.array([i, j, k, 1.0])
            expected = expected_world_ras(sl, iop, (0.7, 0.9), i, j)
            np.testing.assert_allclose(world[:3], expected, atol=1e-4)
    np.testing.assert_allclose(vol.spacing[:2], (0.9, 0.7), atol=1e-6)


def test_dicom_sorting_ignores_names_and_instance_numbers(tmp_path):
    """Slices written with positions descending in InstanceNumber and shuffled file names."""
    written = write_series(tmp_path / "s", n=8, seed=11)
    vol = read_dicom_series(tmp_path / "s")
    ks = [int(round(vol.array[0, 0, k] / 1000)) for k in range(8)]
    assert ks == list(range(8))
    assert vol.affine[2, 2] == pytest.approx(2.5)  # ascending along +z (S)
    origin = expected_world_ras(written[0], AXIAL, (0.7, 0.9), 0, 0)
    np.testing.assert_allclose(vol.affine[:3, 3], origin)


def test_dicom_axial_affine_is_lps_flipped(tmp_path):
    write_series(tmp_path / "s", n=3)
    vol = read_dicom_series(tmp_path / "s")
    expected = np.array(
        [[-0.9, 0, 0, 30.0], [0, -0.7, 0, -20.0], [0, 0, 2.5, 100.0], [0, 0, 0, 1]]
    )
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
    assert nib.aff2axcodes(vol.affine) == ("L", "P", "S")


@pytest.mark.parametrize(
    "slope, intercept", [(None, None), (1.0, -1024.0), (2.0, -1000.0), (0.5, 3.0)]
)
def test_dicom_rescale_applied(tmp_path, slope, intercept):
    written = write_series(tmp_path / "s", n=3, slope=slope, intercept=intercept)
    vol = read_dicom_series(tmp_path / "s")
    s = 1.0 if slope is None else slope
    b = 0.0 if intercept is None else intercept
    for k, sl in enumerate(written):
        np.testing.assert_allclose(vol.array[:, :, k], sl["pixels"].T * s + b, rtol=1e-6)
    assert vol.array.dtype == np.float32


def test_dicom_modality_from_tag_and_override(tmp_path):
    write_series(tmp_path / "mr", n=3, modality="MR")
    assert read_dicom_series(tmp_path / "mr").modality == "MR"
    write_series(tmp_path / "pt", n=3, modality="PT")
    with pytest.raises(VolumeReadError, match="Modality 'PT'"):
        read_dicom_series(tmp_path / "pt")
    assert read_dicom_series(tmp_path / "pt", modality="ct").modality == "CT"


def test_dicom_case_id_never_from_patient_fields(tmp_path):
    write_series(tmp_path / "folder_name", n=2)
    vol = read_dicom_series(tmp_path / "folder_name")
    assert vol.case_id == "folder_name"
    assert "Doe" not in repr(vol) and "SECRET" not in repr(vol)
    assert read_dicom_series(tmp_path / "folder_name", case_id="c7").case_id == "c7"


def test_dicom_single_slice(tmp_path):
    write_series(tmp_path / "one", n=1)
    vol = read_dicom_series(tmp_path / "one")
    assert vol.shape == (4, 6, 1)
    np.testing.assert_allclose(vol.affine[:3, 2], [0, 0, 2.5])  # SliceThickness along n
    write_series(tmp_path / "none", n=1, thickness=None)
    with pytest.raises(VolumeReadError, match="single-slice"):
        read_dicom_series(tmp_path / "none")


def test_dicom_small_position_jitter_tolerated(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    for k in range(5):
        jitter = 0.004 * (-1) ** k
        write_dicom_slice(folder / f"f{k}", ipp=(0, 0, 2.5 * k + jitter), pixels=slice_pixels(k, 6, 4))
    assert read_dicom_series(folder).shape == (4, 6, 5)


# ----------------------------------------------------------------------------------------------
# DICOM: errors and skipped files
# ----------------------------------------------------------------------------------------------


def test_dicom_missing_slice_is_an_error_naming_a_file(tmp_path):
    written = write_series(tmp_path / "s", n=6)
    written[3]["path"].unlink()
    with pytest.raises(VolumeReadError, match="missing slice") as exc:
        read_dicom_series(tmp_path / "s")
    assert_one_line_naming(exc, written[4]["path"])


def test_dicom_duplicated_slice_is_an_error(tmp_path):
    written = write_series(tmp_path / "s", n=4)
    sl = written[2]
    copy = write_dicom_slice(tmp_path / "s" / "zz_copy", ipp=sl["ipp"], pixels=sl["pixels"])
    with pytest.raises(VolumeReadError, match="duplicated slice position") as exc:
        read_dicom_series(tmp_path / "s")
    msg = str(exc.value)
    assert sl["path"].name in msg and copy.name in msg


def test_dicom_position_off_line_is_an_error(tmp_path):
    written = write_series(tmp_path / "s", n=5)
    sl = written[2]
    write_dicom_slice(sl["path"], ipp=sl["ipp"] + np.array([3.0, 0, 0]), pixels=sl["pixels"])
    with pytest.raises(VolumeReadError, match="off the line") as exc:
        read_dicom_series(tmp_path / "s")
    assert_one_line_naming(exc, sl["path"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"iop": CORONAL}, "ImageOrientationPatient"),
        ({"pixel_spacing": (0.7, 1.0)}, "PixelSpacing"),
        ({"pixels": slice_pixels(2, 6, 5)}, "6x5 pixels differs"),
    ],
    ids=["orientation", "pixel-spacing", "rows-cols"],
)
def test_dicom_inconsistent_slice_is_an_error_naming_it(tmp_path, change, message):
    written = write_series(tmp_path / "s", n=4)
    sl = written[2]
    kwargs = {"ipp": sl["ipp"], "pixels": sl["pixels"], **change}
    bad = write_dicom_slice(tmp_path / "s" / "zzz_bad", **kwargs)
    sl["path"].unlink()
    with pytest.raises(VolumeReadError, match=message) as exc:
        read_dicom_series(tmp_path / "s")
    assert_one_line_naming(exc, bad)


def test_dicom_two_series_error_and_series_uid_choice(tmp_path):
    write_series(tmp_path / "s", n=3, series_uid="1.2.3.4", prefix="a")
    write_series(tmp_path / "s", n=4, series_uid="1.2.3.5", prefix="b", origin=(0, 0, 0))
    with pytest.raises(VolumeReadError, match="2 DICOM series") as exc:
        read_dicom_series(tmp_path / "s")
    assert "1.2.3.4 (3 files)" in str(exc.value) and "1.2.3.5 (4 files)" in str(exc.value)
    assert read_dicom_series(tmp_path / "s", series_uid="1.2.3.4").shape == (4, 6, 3)
    assert read_dicom_series(tmp_path / "s", series_uid="1.2.3.5").shape == (4, 6, 4)
    with pytest.raises(VolumeReadError, match="not found"):
        read_dicom_series(tmp_path / "s", series_uid="9.9")


def test_dicom_non_dicom_and_non_image_files_skipped(tmp_path):
    written = write_series(tmp_path / "s", n=3)
    (tmp_path / "s" / "README").write_text("exported by some PACS\n")
    (tmp_path / "s" / "EXPORT_LOG").write_text("no extension, not DICOM: opened and skipped\n")
    (tmp_path / "s" / "notes.txt").write_bytes(b"\x00" * 50)  # extension: never opened
    (tmp_path / "s" / "labels.nii.gz").write_bytes(b"")
    (tmp_path / "s" / "LICENSE").write_bytes(b"")
    (tmp_path / "s" / ".DS_Store").write_bytes(b"")  # hidden: ignored
    (tmp_path / "s" / "sub").mkdir()  # folders are ignored (not recursive)
    # A DICOMDIR-like object: valid DICOM file, Media Storage Directory SOP class, no pixels.
    write_non_image_dicom(tmp_path / "s" / "DICOMDIR", MEDIA_STORAGE_DIRECTORY, FileSetID="TEST")
    vol = read_dicom_series(tmp_path / "s")
    assert vol.shape == (4, 6, 3)
    np.testing.assert_array_equal(vol.array[:, :, 1], written[1]["pixels"].T)


def test_dicom_folder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing")
    with pytest.raises(VolumeReadError, match="no DICOM image files"):
        read_dicom_series(tmp_path / "empty")
    with pytest.raises(VolumeReadError, match="not a directory"):
        read_dicom_series(tmp_path / "absent")


@pytest.mark.parametrize("cut", ["pixel-data", "header", "after-preamble"])
def test_dicom_truncated_file_is_an_error_naming_it(tmp_path, cut):
    written = write_series(tmp_path / "s", n=4)
    victim = written[1]["path"]
    data = victim.read_bytes()
    ipp_offset = data.find(b"\x20\x00\x32\x00")  # (0020,0032) ImagePositionPatient
    keep = {"pixel-data": len(data) - 7, "header": ipp_offset + 3, "after-preamble": 140}[cut]
    victim.write_bytes(data[:keep])
    with pytest.raises(VolumeReadError, match="unreadable slice") as exc:
        read_dicom_series(tmp_path / "s")
    assert_one_line_naming(exc, victim)


@pytest.mark.parametrize(
    "syntax",
    ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.50"],
    ids=["jpeg2000-lossless", "jpeg-ls-lossless", "jpeg-baseline"],
)
def test_dicom_undecodable_compressed_pixels_name_the_syntax(tmp_path, syntax):
    write_series(tmp_path / "s", n=3)
    bad = write_dicom_slice(
        tmp_path / "s" / "compressed", ipp=(-30.0, 20.0, 107.5), pixels=slice_pixels(3, 6, 4),
        transfer_syntax=syntax,
    )
    with pytest.raises(VolumeReadError, match="unreadable slice \\(cannot decode pixel data") as exc:
        read_dicom_series(tmp_path / "s")
    assert_one_line_naming(exc, bad)
    assert syntax in str(exc.value)


def test_real_ct_dicom_reads(real_ct):
    image, _, _ = real_ct
    assert image.shape == (512, 512, 20)
    assert image.modality == "CT"
    np.testing.assert_allclose(image.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-4)
    assert -1100 <= float(image.array.min()) <= -1000  # air after RescaleIntercept -1024
    assert 500 <= float(image.array.max()) <= 3500  # bone/contrast, not raw stored values
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")


