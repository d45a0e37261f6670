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
    attributes: dict | None = None,
) -> Path:
    """One slice: ``pixels`` (rows, cols) as signed 16 bit; ``attributes`` (keyword -> value) are
    set last (e.g. FrameOfReferenceUID, or an attribute set to None)."""
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
    for keyword, value in (attributes or {}).items():
        setattr(ds, keyword, value)
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


# ----------------------------------------------------------------------------------------------
# A series in any orientation, and compressed copies of a series
# ----------------------------------------------------------------------------------------------


def write_oriented_series(
    folder: Path,
    image: np.ndarray,
    affine: np.ndarray,
    axcodes: tuple[str, str, str],
    *,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    frame_of_reference: str = "1.2.826.0.1.3680043.8.498.2",
    seed: int = 0,
    attributes: dict | None = None,
) -> np.ndarray:
    """Write ``image`` (``(I, J, K)`` on the RAS ``affine``) as a series stored on the same
    voxels, reoriented to the axis codes ``axcodes`` (nibabel's, e.g. ``("L", "A", "I")``).

    The stored grid's axes are (along a row, down a column, slice k); slice k is written with
    InstanceNumber k + 1 under a shuffled file name, its pixels ``stored[:, :, k].T`` as signed
    16 bit. So ``("L", "P", "S")`` is a scanner's axial series (ImageOrientationPatient
    ``1,0,0,0,1,0``), ``("L", "A", "I")`` its A/P mirror (``1,0,0,0,-1,0``), ``("P", "L", "I")``
    a 90-degree in-plane rotation (``0,1,0,1,0,0``), ``("L", "P", "I")`` the axial series with
    its slices numbered from the top, ``("P", "I", "R")`` sagittal, ``("L", "I", "P")`` coronal.
    ``attributes`` are set on every slice (:func:`write_dicom_slice`). Returns the stored grid's
    affine (voxel -> RAS mm).
    """
    import nibabel.orientations as ornt

    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(axcodes))
    stored = ornt.apply_orientation(np.asarray(image), transform)
    grid = np.asarray(affine, float) @ ornt.inv_ornt_aff(transform, np.asarray(image).shape)
    lps = LPS_TO_RAS @ grid
    dx, dy, dz = (float(np.linalg.norm(lps[:3, a])) for a in range(3))
    iop = (*(lps[:3, 0] / dx), *(lps[:3, 1] / dy))
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"slice{idx:03d}.dcm" for idx in range(stored.shape[2])]
    random.Random(seed).shuffle(names)
    for k in range(stored.shape[2]):
        write_dicom_slice(
            folder / names[k],
            ipp=(lps @ np.array([0.0, 0.0, k, 1.0]))[:3],
            iop=iop,
            pixel_spacing=(dy, dx),
            pixels=np.ascontiguousarray(stored[:, :, k].T),
            series_uid=series_uid,
            instance=k + 1,
            thickness=dz,
            attributes={"FrameOfReferenceUID": frame_of_reference, **(attributes or {})},
        )
    return grid


def compress_slice(src: Path, dst: Path, transfer_syntax: str, encoder: str, **options) -> Path:
    """Re-encode one DICOM file with a real encoder: ``"gdcm"`` (python-gdcm's
    ImageChangeTransferSyntax) or a pydicom encoding plugin (``"pyjpegls"``, ``"pylibjpeg"``,
    ``"pydicom"``; ``options`` go to ``Dataset.compress``, e.g. ``j2k_cr=[20]``). The SOP
    Instance UID is kept."""
    import pydicom

    dst.parent.mkdir(parents=True, exist_ok=True)
    if encoder == "gdcm":
        gdcm = pytest.importorskip("gdcm")
        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        assert reader.Read(), src
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(transfer_syntax)))
        change.SetInput(reader.GetImage())
        assert change.Change(), f"gdcm cannot encode {transfer_syntax}"
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(dst))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write(), dst
    else:
        ds = pydicom.dcmread(src)
        ds.compress(transfer_syntax, encoding_plugin=encoder, generate_instance_uid=False, **options)
        ds.save_as(dst, enforce_file_format=True)
    return dst
