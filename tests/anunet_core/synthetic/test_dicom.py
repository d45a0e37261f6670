"""Tests of anunet_core.synthetic.dicom: series and archives read back with pydicom and
nibabel directly (not with the project's own readers): pixels, geometry, tags, UIDs."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from anunet_core import synthetic as syn
from anunet_core.synthetic import write_dicom_archive, write_dicom_series
from anunet_core.vocabulary import MODALITIES

with warnings.catch_warnings():  # nibabel warns that its DICOM readers are experimental
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import dicomwrappers


def _read_series(folder: Path):
    """Slices sorted along the slice normal -> (volume (I, J, K) in stored-grid order, RAS affine,
    datasets). Uses only pydicom and numpy."""
    ds = [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]  # no force=True: valid files
    iop = np.array(ds[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ds.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float))))
    slope = float(getattr(ds[0], "RescaleSlope", 1.0))
    intercept = float(getattr(ds[0], "RescaleIntercept", 0.0))
    pixels = np.stack([d.pixel_array.astype(np.float64) * slope + intercept for d in ds])
    volume = np.transpose(pixels, (2, 1, 0))  # (K, rows, cols) -> (cols, rows, K)
    row_spacing, col_spacing = (float(v) for v in ds[0].PixelSpacing)
    ipp = [np.array(d.ImagePositionPatient, dtype=float) for d in ds]
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_spacing
    lps[:3, 1] = iop[3:] * row_spacing
    lps[:3, 2] = (ipp[-1] - ipp[0]) / (len(ds) - 1)
    lps[:3, 3] = ipp[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return volume, ras, ds


def _check_tags(ds: list, p: syn.Phantom, modality: str) -> None:
    d0 = ds[0]
    sop_class = syn.CT_IMAGE_STORAGE if modality == "CT" else syn.MR_IMAGE_STORAGE
    assert d0.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert d0.file_meta.MediaStorageSOPClassUID == sop_class == d0.SOPClassUID
    assert d0.Modality == modality
    assert (d0.Rows, d0.Columns) == (p.shape[1], p.shape[0])
    assert (d0.BitsAllocated, d0.BitsStored, d0.HighBit) == (16, 16, 15)
    assert d0.SamplesPerPixel == 1 and d0.PhotometricInterpretation == "MONOCHROME2"
    assert float(d0.SliceThickness) == p.spacing[2]
    if modality == "CT":
        assert float(d0.RescaleIntercept) == -1024 and float(d0.RescaleSlope) == 1
    assert str(d0.PatientName) == d0.PatientID == f"SYNTH-{p.case_id}"
    assert len({d.SOPInstanceUID for d in ds}) == len(ds) == p.shape[2]
    assert len({(d.StudyInstanceUID, d.SeriesInstanceUID, d.FrameOfReferenceUID)
                 for d in ds}) == 1
    # head first: instance 1 is the top slice
    assert [int(d.InstanceNumber) for d in ds] == list(range(p.shape[2], 0, -1))


@pytest.mark.parametrize("standard", [False, True], ids=["phantom-grid", "scanner-orientation"])
@pytest.mark.parametrize("modality", MODALITIES)
def test_dicom_archive_round_trip(tmp_path, small, no_temp_files, on_stored_grid, modality, standard):
    phantoms = small[modality]
    cases = write_dicom_archive(tmp_path, phantoms, standard_orientation=standard)
    assert cases == [tmp_path / p.case_id for p in phantoms]
    series_uids = set()
    for p in phantoms:
        folder = tmp_path / p.case_id / "dicom"
        volume, affine, ds = _read_series(folder)
        expected, expected_affine = on_stored_grid(p.image, p.affine, standard)
        np.testing.assert_array_equal(volume, expected)
        np.testing.assert_allclose(affine, expected_affine, atol=1e-6)
        # every voxel lands at the same world position as in the phantom
        ijk = np.array([[0, 0, 0, 1], [5, 7, 3, 1], [47, 39, 11, 1]], dtype=float)
        world = (affine @ ijk.T).T
        back = (np.linalg.inv(p.affine) @ world.T).T
        np.testing.assert_array_equal(p.image[tuple(np.rint(back[:, :3]).astype(int).T)],
                                      volume[tuple(ijk[:, :3].astype(int).T)])
        # labels beside the series, on the phantom's own grid
        lab = nib.load(tmp_path / p.case_id / "labels.nii.gz")
        np.testing.assert_array_equal(np.asarray(lab.dataobj), p.labels)
        np.testing.assert_allclose(lab.affine, p.affine)
        _check_tags(ds, p, modality)
        series_uids.add(ds[0].SeriesInstanceUID)
        assert {f.name for f in folder.glob("*.dcm")} == {f"{d.SOPInstanceUID}.dcm" for d in ds}
        # file names say nothing about slice order
        by_name = [pydicom.dcmread(f, stop_before_pixels=True)
                   for f in sorted(folder.glob("*.dcm"))]
        z = [float(d.ImagePositionPatient[2]) for d in by_name]
        assert z != sorted(z) and z != sorted(z, reverse=True)
    assert len(series_uids) == len(phantoms)
    assert no_temp_files(tmp_path)


def test_dicom_geometry_agrees_with_nibabel(tmp_path, small):
    """nibabel's own DICOM wrapper puts each slice where the phantom's affine says."""
    p = small["CT"][0]
    files = write_dicom_series(tmp_path / "series", p)
    for k in (0, 5, p.shape[2] - 1):
        w = dicomwrappers.wrapper_from_file(files[k])
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ w.affine  # wrapper: (row, col, 0) -> LPS mm
        np.testing.assert_allclose(ras[:3, 0], p.affine[:3, 1], atol=1e-6)  # rows run along j
        np.testing.assert_allclose(ras[:3, 1], p.affine[:3, 0], atol=1e-6)  # columns along i
        np.testing.assert_allclose(ras[:3, 3], (p.affine @ [0, 0, k, 1])[:3], atol=1e-6)
        np.testing.assert_array_equal(w.get_data(), p.image[:, :, k].T)  # rescaled to HU


def test_dicom_uids_are_reproducible(tmp_path, small):
    p = small["MR"][0]
    a = write_dicom_series(tmp_path / "a", p)
    b = write_dicom_series(tmp_path / "b", p)
    assert [f.name for f in a] == [f.name for f in b]
    assert a[0].read_bytes() == b[0].read_bytes()


def test_series_names_must_be_uid_or_chaos(tmp_path, small):
    with pytest.raises(ValueError, match="names"):
        write_dicom_series(tmp_path / "s", small["CT"][0], names="sorted")
    assert not (tmp_path / "s").exists()
