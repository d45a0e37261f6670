"""Small DICOM series written slice by slice, for tests of DICOM reading: any orientation,
shear, rescale, transfer syntax, and every way a series can be broken."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def rotation(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
_R = rotation((1.0, 2.0, 0.5), 23.0)
OBLIQUE = tuple(np.round(np.concatenate([_R[:, 0], _R[:, 1]]), 8))


def slice_pixels(k: int, rows: int, cols: int) -> np.ndarray:
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
    and holds ``slice_pixels(k)``. Returns, per k, a dict with its path, IPP and pixels.
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
        pixels = slice_pixels(k, rows, cols)
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


def expected_world_ras(sl: dict, iop, pixel_spacing, i: int, j: int) -> np.ndarray:
    """DICOM PS3.3 C.7.6.2.1.1: P = IPP + X * dc * i + Y * dr * j (LPS), then -> RAS."""
    iop = np.asarray(iop, float)
    dr, dc = pixel_spacing  # PixelSpacing = [row spacing, column spacing]
    lps = sl["ipp"] + iop[:3] * dc * i + iop[3:] * dr * j
    return np.array([-lps[0], -lps[1], lps[2]])


def oblique_affine(spacing=(0.8, 0.9, 2.5), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    """A rotated, left-right mirrored voxel -> mm affine: no axis lines up with the world's."""
    aff = np.eye(4)
    aff[:3, :3] = rotation((0.3, 1.0, 0.2), 17.0) @ np.diag(spacing) @ np.diag([-1, 1, 1])
    aff[:3, 3] = origin
    return aff


def assert_one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> None:
    """The error is one line that names ``path``'s file."""
    msg = str(exc.value)
    assert "\n" not in msg
    assert path.name in msg, msg


#: SOP classes of DICOM objects that are not images.
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR


def write_non_image_dicom(path: Path, sop_class: str = BASIC_TEXT_SR, **attributes) -> Path:
    """A valid Part 10 file of a non-image SOP class (no pixels), with ``attributes`` set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    if sop_class != MEDIA_STORAGE_DIRECTORY:
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
