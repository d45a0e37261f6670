"""DICOM: a phantom as one series of valid Part 10 files, and the DICOM archive layout.

- :func:`write_dicom_series`: one file per axial slice, CT or MR Image Storage, explicit VR
  little endian, UIDs derived from the phantom (the same phantom always gives the same bytes).
- :func:`write_dicom_archive`: ``OUT/<case_id>/dicom/<SOPInstanceUID>.dcm`` +
  ``OUT/<case_id>/labels.nii.gz``.

A series is written into a temporary folder that then replaces the target as a whole.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from anunet_core.io import write_folder_atomic
from anunet_core.synthetic.nifti import save_nifti
from anunet_core.synthetic.phantom import Phantom

__all__ = [
    "CT_IMAGE_STORAGE",
    "MR_IMAGE_STORAGE",
    "pixel_layout",
    "stored_grid",
    "write_dicom_archive",
    "write_dicom_series",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (its own inverse)


def write_dicom_series(
    series_dir: str | os.PathLike,
    phantom: Phantom,
    *,
    names: str = "uid",
    standard_orientation: bool = False,
) -> list[Path]:
    """Write ``phantom.image`` as one DICOM series (one file per axial slice) in ``series_dir``.

    Valid Part 10 files (explicit VR little endian, CT or MR Image Storage), UIDs derived
    from the case id, seed, modality and sequence (the same phantom always gets the same UIDs),
    PatientName = PatientID = ``"SYNTH-<case_id>"``. Pixels are unsigned 16 bit: CT stores
    ``HU + 1024`` with RescaleIntercept -1024 and RescaleSlope 1; MR stores the value itself
    (no rescale tags). InstanceNumber 1 is the most superior slice.

    Geometry (DICOM patient space is LPS = diag(-1, -1, 1) RAS): pixel ``(r, c)`` of the slice
    at k holds ``image[c, r, k]``; ImageOrientationPatient = the LPS directions of the affine's
    columns 0 and 1; ImagePositionPatient of slice k = LPS of ``affine @ (0, 0, k, 1)``;
    PixelSpacing = ``[spacing_j, spacing_i]`` (mm). So a reader that sorts by position along
    the slice normal gets back the phantom's array and affine.

    Args:
        series_dir: the folder to create (replaced as a whole if it exists).
        names: ``"uid"``: ``<SOPInstanceUID>.dcm``, written in a shuffled order (name order
            says nothing about slice order); ``"chaos"``: ``IMG-0001-00001.dcm`` ... numbered by
            InstanceNumber (name order = superior to inferior). Default ``"uid"``.
        standard_orientation: ``True``: store slices as scanners do (ImageOrientationPatient
            ``1,0,0,0,1,0`` for this affine: columns toward the patient's left, rows toward
            posterior), i.e. the phantom's grid reversed in i and j, the same world positions.
            Default ``False`` (the stored grid is the phantom's grid).

    Returns:
        the written files, in slice order k = 0 .. K-1.
    """
    if names not in ("uid", "chaos"):
        raise ValueError(f"names must be 'uid' or 'chaos', got {names!r}")
    datasets = _datasets(phantom, standard_orientation)
    order = np.random.default_rng([phantom.seed, 7]).permutation(len(datasets))
    target = Path(series_dir)
    files: dict[int, Path] = {}
    with write_folder_atomic(target) as tmp:
        for k in (order if names == "uid" else range(len(datasets))):
            ds = datasets[int(k)]
            if names == "uid":
                name = f"{ds.SOPInstanceUID}.dcm"
            else:
                name = f"IMG-0001-{int(ds.InstanceNumber):05d}.dcm"
            (tmp / name).write_bytes(_dicom_bytes(ds))
            files[int(k)] = target / name
    return [files[k] for k in range(len(datasets))]


def write_dicom_archive(
    out_dir: str | os.PathLike, phantoms: Sequence[Phantom], *, standard_orientation: bool = False
) -> list[Path]:
    """``OUT/<case_id>/dicom/*.dcm`` (:func:`write_dicom_series`) + ``labels.nii.gz`` beside.

    The labels stay on the phantom's grid and affine (like TotalSegmentator's output beside a
    DICOM series): with ``standard_orientation=True`` they line up with the DICOM only through
    their geometry. Returns the case folders.
    """
    out = Path(out_dir)
    cases = []
    for p in phantoms:
        case = out / p.case_id
        write_dicom_series(case / "dicom", p, standard_orientation=standard_orientation)
        save_nifti(case / "labels.nii.gz", p.labels, p.affine)
        cases.append(case)
    return cases


def stored_grid(
    affine: np.ndarray, shape: Sequence[int], standard_orientation: bool
) -> tuple[bool, bool, np.ndarray]:
    """Flips and the affine of the grid the DICOM slices are stored on.

    Returns ``(flip_i, flip_j, grid_affine)``: the stored grid is the phantom's grid (``shape``
    ``(I, J, K)``) with axis i (and j) reversed where flagged; ``grid_affine`` ``(4, 4)`` maps
    its voxels to RAS mm.
    """
    flip_i = flip_j = False
    if standard_orientation:  # columns toward +x LPS (patient left), rows toward +y (posterior)
        col0, col1 = _LPS @ affine[:3, 0], _LPS @ affine[:3, 1]
        flip_i = bool(col0[np.argmax(np.abs(col0))] < 0)
        flip_j = bool(col1[np.argmax(np.abs(col1))] < 0)
    grid = affine.astype(np.float64).copy()
    if flip_i:
        grid[:3, 3] += (shape[0] - 1) * grid[:3, 0]
        grid[:3, 0] *= -1
    if flip_j:
        grid[:3, 3] += (shape[1] - 1) * grid[:3, 1]
        grid[:3, 1] *= -1
    return flip_i, flip_j, grid


def pixel_layout(volume: np.ndarray, flip_i: bool, flip_j: bool) -> np.ndarray:
    """``(I, J, K)`` -> ``(K, rows=J, cols=I)``: pixel ``(r, c)`` of slice k = ``volume[c, r, k]``
    of the (possibly flipped) grid."""
    v = volume[::-1] if flip_i else volume
    v = v[:, ::-1] if flip_j else v
    return np.ascontiguousarray(np.transpose(v, (2, 1, 0)))


def _ds(v: float) -> str:
    return format_number_as_ds(float(v) + 0.0)  # + 0.0: no "-0.0"


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=["anunet-synthetic", *[str(p) for p in parts]])


def _dicom_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@dataclass(frozen=True)
class _Series:
    """What every slice of one series shares."""

    phantom: Phantom
    grid: np.ndarray  # (4, 4) stored grid voxel -> RAS mm
    stored: np.ndarray  # uint16 (K, rows, cols), CT: HU + 1024
    iop: list[float]  # ImageOrientationPatient (LPS)
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing), mm
    slice_spacing: float  # mm
    study: str
    series: str
    frame: str


def _series(p: Phantom, standard_orientation: bool) -> _Series:
    """The stored pixels, geometry and UIDs of ``p``'s series."""
    flip_i, flip_j, grid = stored_grid(p.affine, p.shape, standard_orientation)
    pixels = pixel_layout(p.image, flip_i, flip_j)
    row_vec, col_vec = _LPS @ grid[:3, 0], _LPS @ grid[:3, 1]
    col_spacing, row_spacing = np.linalg.norm(row_vec), np.linalg.norm(col_vec)
    iop = [*(row_vec / col_spacing), *(col_vec / row_spacing)]
    stored = pixels.astype(np.int32) + (1024 if p.modality == "CT" else 0)  # CT: intercept -1024
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError(f"{p.case_id}: pixel values out of the uint16 range")
    key = (p.case_id, p.seed, p.modality, p.sequence)
    return _Series(
        phantom=p, grid=grid, stored=stored.astype("<u2"), iop=iop,
        pixel_spacing=(row_spacing, col_spacing), slice_spacing=float(np.linalg.norm(grid[:3, 2])),
        study=_uid(*key, "study"), series=_uid(*key, "series"), frame=_uid(*key, "frame"),
    )


def _datasets(p: Phantom, standard_orientation: bool) -> list[Dataset]:
    """One dataset per slice, in k order (k = 0 most inferior)."""
    s = _series(p, standard_orientation)
    return [_slice(s, k) for k in range(p.shape[2])]


def _slice(s: _Series, k: int) -> Dataset:
    """The dataset of slice ``k``: patient, study, equipment, series, position and pixels."""
    p, ct = s.phantom, s.phantom.modality == "CT"
    key = (p.case_id, p.seed, p.modality, p.sequence)
    sop = _uid(*key, "slice", k)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE if ct else MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop
    _study_tags(ds, s)
    if ct:
        ds.KVP = "120"
    else:
        _mr_tags(ds, p.sequence)
    _position_tags(ds, s, k)
    _pixel_tags(ds, s, k)
    return ds


def _study_tags(ds: Dataset, s: _Series) -> None:
    """Patient, study, equipment and series tags (the same on every slice)."""
    p = s.phantom
    patient = f"SYNTH-{p.case_id}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = p.modality
    ds.Manufacturer = "anunet synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "synthetic abdomen"
    ds.SeriesDescription = f"synthetic {p.modality} {p.sequence or 'portal venous'}"
    ds.PatientName = patient
    ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = "ABDOMEN"
    ds.SliceThickness = _ds(s.slice_spacing)
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = s.study
    ds.SeriesInstanceUID = s.series
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.ImagesInAcquisition = s.stored.shape[0]  # lets a reader see missing end slices
    ds.FrameOfReferenceUID = s.frame
    ds.PositionReferenceIndicator = ""


def _mr_tags(ds: Dataset, sequence: str | None) -> None:
    """MR acquisition tags of a fat-suppressed T2 spin echo (T2SPIR) or a T1 gradient echo."""
    t2 = sequence == "T2SPIR"
    ds.ScanningSequence = "SE" if t2 else "GR"
    ds.SequenceVariant = "SK" if t2 else "SP"
    ds.ScanOptions = "FS" if t2 else ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = "1600" if t2 else "150"
    ds.EchoTime = "80" if t2 else "4.6"
    ds.EchoTrainLength = "16" if t2 else "1"
    ds.MagneticFieldStrength = "1.5"


def _position_tags(ds: Dataset, s: _Series, k: int) -> None:
    """Where slice ``k`` lies (LPS mm) and its InstanceNumber (head first: 1 is the top)."""
    ipp = _LPS @ (s.grid @ np.array([0.0, 0.0, k, 1.0]))[:3]
    ds.InstanceNumber = s.phantom.shape[2] - k
    ds.ImagePositionPatient = [_ds(v) for v in ipp]
    ds.ImageOrientationPatient = [_ds(v) for v in s.iop]
    ds.SliceLocation = _ds(ipp[2])


def _pixel_tags(ds: Dataset, s: _Series, k: int) -> None:
    """Unsigned 16-bit MONOCHROME2 pixels of slice ``k`` (CT: with the HU rescale and window)."""
    row_spacing, col_spacing = s.pixel_spacing
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(s.stored.shape[1]), int(s.stored.shape[2])
    ds.PixelSpacing = [_ds(row_spacing), _ds(col_spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if s.phantom.modality == "CT":
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
    ds.PixelData = s.stored[k].tobytes()
