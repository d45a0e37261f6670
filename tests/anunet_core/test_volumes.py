"""Tests for anunet_core.volumes: NIfTI/DICOM readers, label alignment, mask writing."""

from __future__ import annotations

import gzip
import itertools
import os
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from anunet_core.io import (
    LabelMismatchError,
    Volume,
    VolumeReadError,
    align_label_to_image,
    read_dicom_series,
    read_label_nifti,
    read_nifti,
    read_volume,
    write_mask,
)

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
CT_DIR = REAL / "totalseg-ct-dicom"
MR_DIR = REAL / "totalseg-mr"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (a clone without ../shared/data/real)")
    return path


# ----------------------------------------------------------------------------------------------
# Synthetic DICOM series
# ----------------------------------------------------------------------------------------------


def _rotation(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
_R = _rotation((1.0, 2.0, 0.5), 23.0)
OBLIQUE = tuple(np.round(np.concatenate([_R[:, 0], _R[:, 1]]), 8))


def _pixels(k: int, rows: int, cols: int) -> np.ndarray:
    """Slice content unique per (slice, row, col): 1000*k + 10*row + col."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return (1000 * k + 10 * r + c).astype(np.int16)


def write_dicom_slice(
    path: Path,
    *,
    ipp,
    iop=AXIAL,
    pixel_spacing=(0.7, 0.9),
    pixels: np.ndarray,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    instance: int = 1,
    slope: float | None = None,
    intercept: float | None = None,
    modality: str = "CT",
    transfer_syntax: str = ExplicitVRLittleEndian,
    thickness: float | None = 2.5,
) -> Path:
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-123"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.100"
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = instance
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
    ds.PixelSpacing = list(pixel_spacing)
    if thickness is not None:
        ds.SliceThickness = thickness
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if transfer_syntax == ExplicitVRLittleEndian:
        ds.PixelData = pixels.astype(np.int16).tobytes()
    else:  # "compressed": garbage fragments in an encapsulated PixelData element
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a real codestream" * 4])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    n: int = 5,
    *,
    iop=AXIAL,
    origin=(-30.0, 20.0, 100.0),
    spacing: float = 2.5,
    shear=(0.0, 0.0, 0.0),
    rows: int = 6,
    cols: int = 4,
    pixel_spacing=(0.7, 0.9),
    seed: int = 0,
    prefix: str = "img",
    **kwargs,
) -> list[dict]:
    """Write n slices with shuffled file names and reversed InstanceNumbers.

    Slice k (true anatomical order along the normal) sits at origin + k*(spacing*n + shear)
    and holds ``_pixels(k)``. Returns, per k, a dict with its path, IPP and pixels.
    """
    folder.mkdir(parents=True, exist_ok=True)
    iop = np.asarray(iop, float)
    normal = np.cross(iop[:3], iop[3:])
    step = normal * spacing + np.asarray(shear, float)
    names = [f"{prefix}{idx:03d}" for idx in range(n)]
    random.Random(seed).shuffle(names)
    out = []
    for k in range(n):
        ipp = np.asarray(origin, float) + k * step
        pixels = _pixels(k, rows, cols)
        path = write_dicom_slice(
            folder / names[k],
            ipp=ipp,
            iop=iop,
            pixel_spacing=pixel_spacing,
            pixels=pixels,
            instance=n - k,
            **kwargs,
        )
        out.append({"path": path, "ipp": ipp, "pixels": pixels})
    return out


def _expected_world_ras(sl: dict, iop, pixel_spacing, i: int, j: int) -> np.ndarray:
    """DICOM PS3.3 C.7.6.2.1.1: P = IPP + X * dc * i + Y * dr * j (LPS), then -> RAS."""
    iop = np.asarray(iop, float)
    dr, dc = pixel_spacing  # PixelSpacing = [row spacing, column spacing]
    lps = sl["ipp"] + iop[:3] * dc * i + iop[3:] * dr * j
    return np.array([-lps[0], -lps[1], lps[2]])


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
            expected = _expected_world_ras(sl, iop, (0.7, 0.9), i, j)
            np.testing.assert_allclose(world[:3], expected, atol=1e-4)
    np.testing.assert_allclose(vol.spacing[:2], (0.9, 0.7), atol=1e-6)


def test_dicom_sorting_ignores_names_and_instance_numbers(tmp_path):
    """Slices written with positions descending in InstanceNumber and shuffled file names."""
    written = write_series(tmp_path / "s", n=8, seed=11)
    vol = read_dicom_series(tmp_path / "s")
    ks = [int(round(vol.array[0, 0, k] / 1000)) for k in range(8)]
    assert ks == list(range(8))
    assert vol.affine[2, 2] == pytest.approx(2.5)  # ascending along +z (S)
    origin = _expected_world_ras(written[0], AXIAL, (0.7, 0.9), 0, 0)
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
        write_dicom_slice(folder / f"f{k}", ipp=(0, 0, 2.5 * k + jitter), pixels=_pixels(k, 6, 4))
    assert read_dicom_series(folder).shape == (4, 6, 5)


# ----------------------------------------------------------------------------------------------
# DICOM: errors and skipped files
# ----------------------------------------------------------------------------------------------


def _one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    assert path.name in msg, msg


def test_dicom_missing_slice_is_an_error_naming_a_file(tmp_path):
    written = write_series(tmp_path / "s", n=6)
    written[3]["path"].unlink()
    with pytest.raises(VolumeReadError, match="missing slice") as exc:
        read_dicom_series(tmp_path / "s")
    _one_line_naming(exc, written[4]["path"])


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
    _one_line_naming(exc, sl["path"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"iop": CORONAL}, "ImageOrientationPatient"),
        ({"pixel_spacing": (0.7, 1.0)}, "PixelSpacing"),
        ({"pixels": _pixels(2, 6, 5)}, "6x5 pixels differs"),
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
    _one_line_naming(exc, bad)


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
    (tmp_path / "s" / "notes.dcm").write_bytes(b"\x00" * 50)
    (tmp_path / "s" / "sub").mkdir()  # folders are ignored (not recursive)
    # A DICOMDIR-like object: valid DICOM file, Media Storage Directory SOP class, no pixels.
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "TEST"
    ds.save_as(tmp_path / "s" / "DICOMDIR", enforce_file_format=True)
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
    with pytest.raises(VolumeReadError) as exc:
        read_dicom_series(tmp_path / "s")
    _one_line_naming(exc, victim)


@pytest.mark.parametrize(
    "syntax",
    ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.50"],
    ids=["jpeg2000-lossless", "jpeg-ls-lossless", "jpeg-baseline"],
)
def test_dicom_undecodable_compressed_pixels_name_the_syntax(tmp_path, syntax):
    write_series(tmp_path / "s", n=3)
    bad = write_dicom_slice(
        tmp_path / "s" / "compressed", ipp=(-30.0, 20.0, 107.5), pixels=_pixels(3, 6, 4),
        transfer_syntax=syntax,
    )
    with pytest.raises(VolumeReadError, match="cannot decode pixel data") as exc:
        read_dicom_series(tmp_path / "s")
    _one_line_naming(exc, bad)
    assert syntax in str(exc.value)


# ----------------------------------------------------------------------------------------------
# NIfTI
# ----------------------------------------------------------------------------------------------


def _oblique_affine(spacing=(0.8, 0.9, 2.5), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = _rotation((0.3, 1.0, 0.2), 17.0) @ np.diag(spacing) @ np.diag([-1, 1, 1])
    aff[:3, 3] = origin
    return aff


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_read_nifti_values_affine_case_id(tmp_path, suffix):
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    img = nib.Nifti1Image(data, _oblique_affine())
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / f"patient_7{suffix}")
    vol = read_nifti(tmp_path / f"patient_7{suffix}", "ct")
    assert vol.case_id == "patient_7" and vol.modality == "CT"
    assert vol.array.dtype == np.float32 and vol.shape == (4, 5, 3)
    np.testing.assert_allclose(vol.array, data * 2.0 - 1024.0)
    np.testing.assert_allclose(vol.affine, _oblique_affine(), atol=1e-5)
    np.testing.assert_allclose(vol.spacing, (0.8, 0.9, 2.5), atol=1e-5)
    assert read_volume(tmp_path / f"patient_7{suffix}", modality="CT").shape == (4, 5, 3)


def test_read_nifti_4d(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3, 1), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    assert read_nifti(tmp_path / "a.nii.gz", "MR").shape == (4, 5, 3)
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3, 2), np.float32), np.eye(4)), tmp_path / "b.nii.gz")
    with pytest.raises(VolumeReadError, match="4-D") as exc:
        read_nifti(tmp_path / "b.nii.gz", "MR")
    _one_line_naming(exc, tmp_path / "b.nii.gz")


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
    _one_line_naming(exc, path)
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


def test_read_volume_dispatch_errors(tmp_path):
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(VolumeReadError, match="not a NIfTI"):
        read_volume(tmp_path / "x.png")
    with pytest.raises(ValueError, match="pass modality"):
        read_volume(tmp_path / "x.nii.gz")
    write_series(tmp_path / "d", n=2)
    assert read_volume(tmp_path / "d").shape == (4, 6, 2)


# ----------------------------------------------------------------------------------------------
# write_mask
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "affine",
    [np.diag([1.0, 1.0, 1.0, 1.0]), LPS_TO_RAS @ np.diag([0.9, 0.7, 2.5, 1.0]), _oblique_affine()],
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


def test_volume_validation():
    with pytest.raises(ValueError, match="3-D"):
        Volume(np.zeros((2, 2)), np.eye(4), "CT", "x")
    with pytest.raises(ValueError, match="modality"):
        Volume(np.zeros((2, 2, 2)), np.eye(4), "PET", "x")
    with pytest.raises(ValueError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1, 0, 1, 1]), "CT", "x")
    vol = Volume(np.zeros((2, 2, 2)), np.diag([2, 3, 4, 1]), "mr", "x")
    assert vol.spacing == (2.0, 3.0, 4.0) and vol.modality == "MR"


# ----------------------------------------------------------------------------------------------
# align_label_to_image
# ----------------------------------------------------------------------------------------------

_ORNTS = [
    np.array([[axis, flip] for axis, flip in zip(perm, flips)], dtype=float)
    for perm in itertools.permutations(range(3))
    for flips in itertools.product((1, -1), repeat=3)
]


def _reoriented(labels: np.ndarray, affine: np.ndarray, ornt: np.ndarray):
    """The same voxels stored in another axis order/direction (nibabel's own transform)."""
    return apply_orientation(labels, ornt), affine @ inv_ornt_aff(ornt, labels.shape)


@pytest.fixture(scope="module")
def image_and_labels():
    rng = np.random.default_rng(5)
    image = Volume(rng.normal(size=(7, 5, 4)).astype(np.float32), _oblique_affine(), "CT", "img")
    labels = rng.integers(0, 6, size=(7, 5, 4)).astype(np.uint8)
    return image, labels


def _ornt_id(ornt) -> str:
    return "".join(f"{int(a)}{'+' if f > 0 else '-'}" for a, f in ornt)


@pytest.mark.parametrize("ornt", _ORNTS, ids=_ornt_id)
def test_align_label_permutations_and_flips(image_and_labels, ornt):
    image, labels = image_and_labels
    lab2, aff2 = _reoriented(labels, image.affine, ornt)
    out = align_label_to_image(lab2, aff2, image)
    assert out.dtype == labels.dtype
    np.testing.assert_array_equal(out, labels)


def test_align_label_identical_grid_returned_as_is(image_and_labels):
    image, labels = image_and_labels
    assert align_label_to_image(labels, image.affine.copy(), image) is labels


def _scaled(aff, factors):
    out = aff.copy()
    out[:3, :3] = out[:3, :3] @ np.diag(factors)
    return out


def _shifted(aff, voxels):
    out = aff.copy()
    out[:3, 3] = aff[:3, 3] + aff[:3, :3] @ np.asarray(voxels, float)
    return out


def _rotated(aff, degrees):
    out = aff.copy()
    out[:3, :3] = _rotation((0, 0, 1), degrees) @ aff[:3, :3]
    return out


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda lab, aff: (lab, _scaled(aff, (1.0, 1.0, 1.2))), "spacing"),
        (lambda lab, aff: (lab, _shifted(aff, (0, 0, 1))), "shifted by"),
        (lambda lab, aff: (lab, _shifted(aff, (0.5, 0, 0))), "mm off"),
        (lambda lab, aff: (lab, _rotated(aff, 10.0)), "mm off"),
        (lambda lab, aff: (lab, _rotated(aff, 45.0)), "rotated"),
        (lambda lab, aff: (lab[:, :, :3], aff), "grid 7x5x3 .* does not cover image grid 7x5x4"),
        (lambda lab, aff: (np.pad(lab, ((0, 1), (0, 0), (0, 0))), aff), "is larger than"),
        (lambda lab, aff: (lab[..., 0], aff), "3-D"),
    ],
    ids=["spacing", "shift-1-voxel", "shift-half-voxel", "rotation-10", "rotation-45",
         "smaller", "larger", "2d"],
)
def test_align_label_mismatch_raises(image_and_labels, make, message):
    image, labels = image_and_labels
    lab, aff = make(labels, image.affine)
    with pytest.raises(LabelMismatchError, match=message) as exc:
        align_label_to_image(lab, aff, image)
    assert "\n" not in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_align_label_tolerates_float32_affine_rounding(image_and_labels):
    image, labels = image_and_labels
    lab2, aff2 = _reoriented(labels, image.affine, _ORNTS[13])
    out = align_label_to_image(lab2, aff2.astype(np.float32).astype(np.float64), image)
    np.testing.assert_array_equal(out, labels)


# ----------------------------------------------------------------------------------------------
# Real scans (TotalSegmentator reference files)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_ct():
    folder = _need(CT_DIR / "dicom")
    from pydicom.pixels.decoders import JPEG2000LosslessDecoder

    if not JPEG2000LosslessDecoder.is_available:
        pytest.skip("no JPEG 2000 decoder for pydicom (Pillow with OpenJPEG) in this environment")
    image = read_dicom_series(folder)
    labels, affine = read_label_nifti(_need(CT_DIR / "labels.nii.gz"))
    return image, labels, affine


def test_real_ct_dicom_reads(real_ct):
    image, _, _ = real_ct
    assert image.shape == (512, 512, 20)
    assert image.modality == "CT"
    np.testing.assert_allclose(image.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-4)
    assert -1100 <= float(image.array.min()) <= -1000  # air after RescaleIntercept -1024
    assert 500 <= float(image.array.max()) <= 3500  # bone/contrast, not raw stored values
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")


def test_real_ct_labels_align_through_affines(real_ct):
    image, labels, label_affine = real_ct
    assert nib.aff2axcodes(label_affine) == ("L", "A", "S")
    aligned = align_label_to_image(labels, label_affine, image)
    assert aligned.shape == image.shape and aligned.dtype == np.uint8
    # Independent route: nibabel's orientation transform between the two axis codes.
    transform = ornt_transform(io_orientation(label_affine), io_orientation(image.affine))
    np.testing.assert_array_equal(aligned, apply_orientation(labels, transform))
    for value in (1, 5):  # spleen, liver
        assert (aligned == value).sum() == (labels == value).sum() > 10_000
        hu_aligned = float(image.array[aligned == value].mean())
        hu_raw = float(image.array[labels == value].mean())  # deliberately not aligned
        assert 0 < hu_aligned < 200, (value, hu_aligned)
        assert not 0 < hu_raw < 200, (value, hu_raw)
        assert hu_aligned - hu_raw > 100


def test_real_mr_labels_on_the_same_grid():
    image = read_nifti(_need(MR_DIR / "image.nii.gz"), "MR")
    labels, label_affine = read_label_nifti(_need(MR_DIR / "labels.nii.gz"))
    assert image.shape == labels.shape == (117, 91, 20)
    np.testing.assert_allclose(image.spacing, (3.0, 3.0, 3.0), atol=1e-4)
    aligned = align_label_to_image(labels, label_affine, image)
    voxel_ml = float(np.prod(image.spacing)) / 1000.0
    for value in (1, 2, 3, 5):
        before = (labels == value).sum() * float(np.prod(image.spacing)) / 1000.0
        after = (aligned == value).sum() * voxel_ml
        assert after == pytest.approx(before)
    assert 100 < (aligned == 5).sum() * voxel_ml < 5000  # a liver, in mL
