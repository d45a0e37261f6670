"""DICOM Segmentation (SEG) objects for scans that came from a DICOM series.

:func:`write_dicom_seg` turns a label map on a series' voxel grid (the layout of
:func:`~anunet_core.io.dicom.read_dicom_series`: ``array[i, j, k] =
pixel_array_of_sorted_slice_k[j, i]``) into one DICOM Segmentation object (highdicom,
segmentation type BINARY, explicit VR little endian) that a PACS files with the source study:

- one segment per organ: segmented property category SCT 123037004 "Anatomical Structure",
  type the organ's SNOMED CT concept (:data:`~anunet_core.vocabulary.ORGAN_SNOMED`), algorithm
  type AUTOMATIC, algorithm family DCM 123110 "Artificial Intelligence", algorithm name and
  version those of the registered model that drew it (:class:`SegSegment`);
- frame ``k`` of a segment is the segment's pixels on source slice ``k``, ``(rows, cols) =
  label_map[:, :, k].T``: it references that slice's SOP instance and carries its
  ImagePositionPatient; the orientation and pixel spacing are the series' own. Frames where a
  segment is absent are omitted; a mask with no organ at all keeps one empty frame per segment
  (on the first slice), so the SEG is still a valid image;
- new Series and SOP Instance UIDs; patient, study and frame of reference copied from the source
  slices, so the SEG attaches to the source study (a PatientSex, PatientBirthDate, StudyDate or
  StudyTime that highdicom refuses as malformed is left empty rather than losing the SEG).

The source headers (``Volume.dicom_headers``) carry the patient's identifying fields. They go
into the DICOM object and nowhere else: no message of this module quotes a header value (only
file paths, slice numbers and attribute keywords), nothing here logs, and while the headers are
handled here the warnings pydicom and highdicom give about odd values are dropped (they quote
the value: an invalid birth date, a person name without ``^``; :func:`_values_unspoken`).
Between the stages of a job the headers travel as JSON (:func:`encode_source_headers`,
:func:`decode_source_headers`).

:func:`read_dicom_seg` reads a SEG back onto the source grid (for tests and users).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.valuerep import DA, TM

from anunet_core.io.atomic import write_atomic
from anunet_core.io.dicom import slice_order
from anunet_core.io.volume import fmt_shape
from anunet_core.vocabulary import ORGAN_MAP_VALUES, ORGAN_SNOMED, validate_organ

__all__ = [
    "ANATOMICAL_STRUCTURE",
    "ARTIFICIAL_INTELLIGENCE",
    "DicomSegError",
    "SegSegment",
    "decode_source_headers",
    "encode_source_headers",
    "read_dicom_seg",
    "write_dicom_seg",
]

ANATOMICAL_STRUCTURE: tuple[str, str, str] = ("123037004", "SCT", "Anatomical Structure")
"""Segmented property category of every segment (DICOM CID 7150; pydicom's older code table
still lists the inactive SNOMED concept 91723000 for it)."""

ARTIFICIAL_INTELLIGENCE: tuple[str, str, str] = ("123110", "DCM", "Artificial Intelligence")
"""Algorithm family of every segment (DICOM CID 7162)."""

#: Attributes every source slice must have for the SEG to reference it (and place its frames).
_REFERENCE_KEYWORDS: tuple[str, ...] = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
    "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
    "Rows", "Columns",
)
#: Type 2 patient/study attributes highdicom reads from the first slice: empty when absent (an
#: anonymised export may drop them).
_TYPE2_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
    "StudyDate", "StudyTime", "ReferringPhysicianName",
)
#: Values highdicom checks and refuses when malformed: left empty in the SEG instead (Type 2).
_CHECKED_TYPE2: dict[str, Callable[[object], object]] = {
    "PatientSex": lambda v: hd.PatientSexValues(v),
    "PatientBirthDate": DA,
    "StudyDate": DA,
    "StudyTime": TM,
}
#: Loggers that quote header values in their warnings.
_VALUE_LOGGERS: tuple[str, ...] = ("pydicom", "highdicom.base", "highdicom.image")
#: Pixel data elements: never part of the headers passed on.
_PIXEL_TAGS: frozenset[str] = frozenset({"7FE00010", "7FE00008", "7FE00009"})
_LO_MAX_CHARS = 64  # DICOM LO (algorithm name and version)
_ORIENTATION_ATOL = 1e-4  # as anunet_core.io.dicom


class DicomSegError(ValueError):
    """A DICOM SEG could not be written or read; one line naming the file (or the source slice
    and the missing attribute's keyword), never a header value."""


class _DropUpToWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING


@contextmanager
def _values_unspoken() -> Iterator[None]:
    """While the source headers are handled: Python warnings are ignored, and the records up to
    WARNING of pydicom's and highdicom's loggers dropped. Both quote header values when they
    find them odd (an invalid date, a person name without ``^``), and those values identify the
    patient. (``warnings.catch_warnings`` is process-wide and not thread-safe: while one thread
    is in here, other threads' warnings are hidden too.)"""
    drop = _DropUpToWarning()
    loggers = [logging.getLogger(name) for name in _VALUE_LOGGERS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop)


@dataclass(frozen=True)
class SegSegment:
    """One segment of a SEG: an organ, its value in the label map, and the model that drew it.

    Attributes:
        organ: ``liver``, ``spleen`` or ``kidney`` (lower-cased when built).
        label_value: the organ's value in the label map, 1..255 (the segment job uses
            :data:`~anunet_core.vocabulary.ORGAN_MAP_VALUES`).
        algorithm_name: the registered model's name, e.g. ``"anunet-liver-ct-L2"`` (1-64
            characters, no backslash).
        algorithm_version: the registered model's version, e.g. ``"3"`` (likewise).
    """

    organ: str
    label_value: int
    algorithm_name: str
    algorithm_version: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "organ", validate_organ(self.organ))
        value = self.label_value
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 255:
            raise ValueError(f"SegSegment.label_value must be an integer in 1..255, got {value!r}")
        object.__setattr__(self, "label_value", int(value))
        for name in ("algorithm_name", "algorithm_version"):
            text = getattr(self, name)
            if not isinstance(text, str) or not text.strip() or len(text) > _LO_MAX_CHARS or "\\" in text:
                raise ValueError(
                    f"SegSegment.{name} must be 1-{_LO_MAX_CHARS} characters without a "
                    f"backslash, got {text!r}"
                )


def _package_version() -> str:
    try:
        return metadata.version("anunet")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


# ----------------------------------------------------------------------------------------------
# Headers between the stages of a job
# ----------------------------------------------------------------------------------------------


def encode_source_headers(headers: Sequence[pydicom.Dataset]) -> str:
    """The source slices' headers as one JSON string (a list of DICOM JSON objects, PS3.18
    F.2, in the given order), to pass between the stages of a job.

    Pixel data elements are left out; other binary values are inlined (base64). Elements pydicom
    cannot convert are dropped (only their keyword could be named, and none is needed for the
    SEG). The text holds the patient's identifying fields: never log it.
    """
    items = []
    with _values_unspoken():
        for ds in headers:
            item = ds.to_json_dict(suppress_invalid_tags=True)
            items.append({tag: value for tag, value in item.items() if tag.upper() not in _PIXEL_TAGS})
    return json.dumps(items, separators=(",", ":"))


def decode_source_headers(text: str) -> list[pydicom.Dataset]:
    """The headers :func:`encode_source_headers` wrote, as pydicom datasets in the same order.

    Raises :class:`DicomSegError` when ``text`` is not such a list (the message never quotes it).
    """
    try:
        items = json.loads(text)
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise TypeError("not a list of DICOM JSON objects")
        with _values_unspoken():
            return [pydicom.Dataset.from_json(item) for item in items]
    except Exception as exc:  # JSON, pydicom and type errors alike: the text itself is not shown
        raise DicomSegError(
            f"source headers: not a JSON list of DICOM datasets ({type(exc).__name__})"
        ) from exc


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _slice_name(ds: pydicom.Dataset, k: int) -> str:
    """``"source slice 3 (/data/case/IM0004.dcm)"``: the slice number and, when the header was
    read from a file, its path."""
    filename = getattr(ds, "filename", None)
    return f"source slice {k} ({filename})" if isinstance(filename, (str, os.PathLike)) else f"source slice {k}"


def _is_missing(value) -> bool:
    """True for an absent or empty attribute value (None, blank text, no values, zero size)."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return len(value) == 0
    return isinstance(value, (int, np.integer)) and value <= 0


def _check_headers(headers: Sequence[pydicom.Dataset], path: Path) -> None:
    """Every slice can be referenced and placed; all are one series, in slice order."""
    if len(headers) == 0:
        raise DicomSegError(f"{path}: no source slices to reference")
    for k, ds in enumerate(headers):
        if not isinstance(ds, pydicom.Dataset):
            raise DicomSegError(f"{path}: source slice {k} is a {type(ds).__name__}, not a pydicom Dataset")
        for keyword in _REFERENCE_KEYWORDS:
            if _is_missing(ds.get(keyword)):
                raise DicomSegError(
                    f"{path}: {_slice_name(ds, k)} has no {keyword}: the source series cannot be referenced"
                )
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise DicomSegError(f"{path}: {_slice_name(ds, k)} is a multi-frame image (single-frame slices only)")
    first = headers[0]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Rows", "Columns"):
        for k, ds in enumerate(headers[1:], start=1):
            if ds.get(keyword) != first.get(keyword):
                raise DicomSegError(
                    f"{path}: {_slice_name(ds, k)} differs from source slice 0 in {keyword} "
                    f"(one series only)"
                )
    if len({str(ds.SOPInstanceUID) for ds in headers}) != len(headers):
        raise DicomSegError(f"{path}: two source slices have the same SOPInstanceUID")
    try:
        iops = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in headers])
        ipps = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    except (TypeError, ValueError) as exc:
        raise DicomSegError(f"{path}: invalid ImagePositionPatient or ImageOrientationPatient") from exc
    if iops.shape[1] != 6 or ipps.shape[1] != 3:
        raise DicomSegError(f"{path}: invalid ImagePositionPatient or ImageOrientationPatient")
    for k in np.flatnonzero(np.any(np.abs(iops - iops[0]) > _ORIENTATION_ATOL, axis=1)):
        raise DicomSegError(
            f"{path}: {_slice_name(headers[k], int(k))} differs from source slice 0 in ImageOrientationPatient"
        )
    order, _ = slice_order(iops[0], ipps)
    if not np.array_equal(order, np.arange(len(headers))):
        raise DicomSegError(
            f"{path}: source slices are not in slice order (pass them in k order, as "
            f"Volume.dicom_headers)"
        )


def _segment_pixels(label_map: np.ndarray, segments: Sequence[SegSegment], shape: tuple, path: Path) -> np.ndarray:
    """``(K, rows, cols)`` uint8 segment numbers (1..N in ``segments``' order, 0 background).

    A few passes over the label map (no histogram of it: a 512 x 512 x 300 map would need a
    630 MB index array); none to renumber when the values already are 1..N in order.
    """
    label_map = np.asarray(label_map)
    if label_map.shape != shape:
        raise DicomSegError(
            f"{path}: label map is {fmt_shape(label_map.shape)}, the source series' grid is "
            f"{fmt_shape(shape)} (columns x rows x slices)"
        )
    if not (np.issubdtype(label_map.dtype, np.integer) or label_map.dtype == np.bool_):
        raise DicomSegError(f"{path}: label map must hold integers, got dtype {label_map.dtype}")
    values = [s.label_value for s in segments]
    described = sum(np.count_nonzero(label_map == v) for v in values)
    if described != np.count_nonzero(label_map):
        unknown = np.unique(label_map[(label_map != 0) & ~np.isin(label_map, values)])
        raise DicomSegError(
            f"{path}: label map has values {[int(v) for v in unknown[:10]]} that no segment "
            f"describes (segments: {values})"
        )
    frames = label_map.transpose(2, 1, 0)  # (K, rows, cols): frame k is label_map[:, :, k].T
    if values == list(range(1, len(values) + 1)):
        return np.ascontiguousarray(frames, dtype=np.uint8)
    numbers = np.zeros(frames.shape, dtype=np.uint8)
    for number, value in enumerate(values, start=1):
        numbers[frames == value] = number
    return numbers


def _check_segments(segments: Sequence[SegSegment], path: Path) -> list[SegSegment]:
    segments = list(segments)
    if not segments:
        raise DicomSegError(f"{path}: no segments")
    for s in segments:
        if not isinstance(s, SegSegment):
            raise DicomSegError(f"{path}: segments must be SegSegment, got {type(s).__name__}")
    organs = [s.organ for s in segments]
    values = [s.label_value for s in segments]
    if len(set(organs)) != len(organs) or len(set(values)) != len(values):
        raise DicomSegError(f"{path}: segments repeat an organ or a label value: {list(zip(organs, values))}")
    return segments


def _segment_description(number: int, segment: SegSegment) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.organ,
        segmented_property_category=hd.sr.CodedConcept(*ANATOMICAL_STRUCTURE),
        segmented_property_type=hd.sr.CodedConcept(*ORGAN_SNOMED[segment.organ]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=segment.algorithm_name,
            family=hd.sr.CodedConcept(*ARTIFICIAL_INTELLIGENCE),
            version=segment.algorithm_version,
        ),
    )


def write_dicom_seg(
    label_map: np.ndarray,
    headers: Sequence[pydicom.Dataset],
    segments: Sequence[SegSegment],
    path: str | os.PathLike,
    *,
    series_number: int = 901,
    series_description: str = "ANU-Net segmentation",
    manufacturer: str = "ANU-Net platform",
    manufacturer_model_name: str = "ANU-Net",
    software_version: str | None = None,
) -> Path:
    """Write ``label_map`` as one DICOM Segmentation of the series ``headers`` describe.

    Args:
        label_map: ``(I, J, K)`` = ``(Columns, Rows, number of slices)`` integers on the source
            series' voxel grid (the layout of :func:`~anunet_core.io.dicom.read_dicom_series`);
            0 background, else a ``label_value`` of ``segments``.
        headers: the source slices' pydicom datasets in ``k`` order (``Volume.dicom_headers``,
            or :func:`decode_source_headers`); not modified.
        segments: one :class:`SegSegment` per organ, distinct organs and values; the SEG's
            segment numbers are 1..N in this order. An organ absent from ``label_map`` is still
            described (an empty segment).
        path: the ``.dcm`` file to write (atomically: :func:`~anunet_core.io.atomic.write_atomic`).
        series_number: the SEG's SeriesNumber. Default 901.
        series_description: Default ``"ANU-Net segmentation"``.
        manufacturer: Default ``"ANU-Net platform"``.
        manufacturer_model_name: Default ``"ANU-Net"``.
        software_version: Default the installed ``anunet`` package's version.

    Returns:
        ``path``. About 14 MB and 2-3 s for a 512 x 512 x 300 series with three organs (1 bit
        per pixel; most of the time goes to highdicom's per-frame headers and pydicom's writer).

    Raises:
        DicomSegError: one line naming ``path`` (and the source slice and attribute keyword
            where that is the reason), never a header value: a slice without StudyInstanceUID,
            SeriesInstanceUID, SOPInstanceUID, SOPClassUID, FrameOfReferenceUID, position,
            orientation, pixel spacing or size; slices of several series or not in slice order;
            a label map of another shape or with values no segment describes; bad segments;
            anything highdicom refuses.
    """
    path = Path(path)
    headers = list(headers)
    segments = _check_segments(segments, path)
    with _values_unspoken():
        _check_headers(headers, path)
        first = headers[0]
        shape = (int(first.Columns), int(first.Rows), len(headers))
        pixels = _segment_pixels(label_map, segments, shape, path)
        source = _patient_and_study_source(first)
        seg = _build_seg(pixels, [source, *headers[1:]], segments, path, series_number=series_number,
                         series_description=series_description, manufacturer=manufacturer,
                         manufacturer_model_name=manufacturer_model_name,
                         software_version=software_version or _package_version())
        try:
            return write_atomic(path, lambda tmp: seg.save_as(tmp, enforce_file_format=True))
        except OSError:
            raise
        except Exception as exc:  # pydicom's messages may quote header values: not shown
            raise DicomSegError(f"{path}: pydicom could not write the SEG ({type(exc).__name__})") from exc


def _patient_and_study_source(first: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of the first slice, which highdicom reads the patient and study modules from:
    absent Type 2 attributes empty, and a PatientSex, PatientBirthDate, StudyDate or StudyTime
    that highdicom would refuse (``"UNKNOWN"``, ``"2000"``) empty too, rather than no SEG. The
    caller's dataset is not touched."""
    source = copy.deepcopy(first)
    for keyword in _TYPE2_KEYWORDS:
        if keyword not in source:
            setattr(source, keyword, None)
    for keyword, check in _CHECKED_TYPE2.items():
        value = source.get(keyword)
        if value not in (None, ""):
            try:
                check(value)
            except (TypeError, ValueError):
                setattr(source, keyword, None)
    return source


def _build_seg(
    pixels: np.ndarray,
    source_images: list[pydicom.Dataset],
    segments: list[SegSegment],
    path: Path,
    *,
    series_number: int,
    series_description: str,
    manufacturer: str,
    manufacturer_model_name: str,
    software_version: str,
) -> hd.seg.Segmentation:
    """The highdicom Segmentation of ``pixels`` ``(K, rows, cols)`` (segment numbers)."""
    first = source_images[0]
    plane_positions = None
    omit_empty_frames = True
    if not pixels.any():  # nothing segmented: one empty frame per segment keeps the SEG an image
        pixels = pixels[:1]
        plane_positions = [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, first.ImagePositionPatient)]
        omit_empty_frames = False
    try:
        return hd.seg.Segmentation(
            source_images=source_images,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_segment_description(n, s) for n, s in enumerate(segments, start=1)],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=manufacturer,
            manufacturer_model_name=manufacturer_model_name,
            software_versions=software_version,
            device_serial_number="1",
            series_description=series_description,
            content_label="ORGANS",
            content_description="organ segmentation: " + ", ".join(s.organ for s in segments),
            plane_positions=plane_positions,
            omit_empty_frames=omit_empty_frames,
        )
    except Exception as exc:  # highdicom/pydicom messages may quote header values: not shown
        raise DicomSegError(
            f"{path}: highdicom could not build the SEG from the source headers ({type(exc).__name__})"
        ) from exc


# ----------------------------------------------------------------------------------------------
# Reading back
# ----------------------------------------------------------------------------------------------


def _organ_of(item: pydicom.Dataset, path: Path) -> str:
    """The organ of a SegmentSequence item, from its segmented property type (SNOMED CT)."""
    codes = item.get("SegmentedPropertyTypeCodeSequence") or []
    code = (str(codes[0].get("CodeValue", "")), str(codes[0].get("CodingSchemeDesignator", ""))) if codes else None
    for organ, (value, scheme, _) in ORGAN_SNOMED.items():
        if code == (value, scheme):
            return organ
    raise DicomSegError(
        f"{path}: segment {item.get('SegmentNumber')} has property type {code} that is no organ of "
        f"the vocabulary"
    )


def read_dicom_seg(path: str | os.PathLike, headers: Sequence[pydicom.Dataset]) -> np.ndarray:
    """The label map of a SEG on the grid of the source series ``headers`` describe.

    Each frame is put on the slice whose SOPInstanceUID it references (highdicom's
    ``get_pixels_by_source_instance``); a slice without frames is background.

    Args:
        path: a DICOM Segmentation of the series (e.g. from :func:`write_dicom_seg`).
        headers: the source slices in ``k`` order (``Volume.dicom_headers``).

    Returns:
        ``(I, J, K)`` = ``(Columns, Rows, number of slices)`` uint8: each segment's organ
        (from its SNOMED CT property type) as its :data:`~anunet_core.vocabulary.ORGAN_MAP_VALUES`
        value, 0 background.

    Raises:
        DicomSegError: one line naming ``path``: not a readable SEG, a segment that is no organ,
            frames referencing slices not in ``headers``, overlapping segments.
    """
    with _values_unspoken():
        return _read_seg(Path(path), list(headers))


def _read_seg(path: Path, headers: list[pydicom.Dataset]) -> np.ndarray:
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # not DICOM, not a SEG, corrupt: one reason
        raise DicomSegError(f"{path}: not a readable DICOM SEG ({type(exc).__name__})") from exc
    lut = np.zeros(max(int(item.SegmentNumber) for item in seg.SegmentSequence) + 1, dtype=np.uint8)
    for item in seg.SegmentSequence:
        lut[int(item.SegmentNumber)] = ORGAN_MAP_VALUES[_organ_of(item, path)]
    uids = [str(ds.SOPInstanceUID) for ds in headers]
    referenced = {
        str(src.ReferencedSOPInstanceUID)
        for frame in seg.get("PerFrameFunctionalGroupsSequence", [])
        for derivation in frame.get("DerivationImageSequence", [])
        for src in derivation.get("SourceImageSequence", [])
    }
    if not referenced <= set(uids):
        raise DicomSegError(
            f"{path}: frames reference {len(referenced - set(uids))} slices that are not among "
            f"the {len(uids)} source slices given"
        )
    try:
        numbers = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids,
            combine_segments=True,
            assert_missing_frames_are_empty=True,
            dtype=np.uint8,
        )
    except Exception as exc:  # overlapping segments, inconsistent frames
        raise DicomSegError(
            f"{path}: cannot place the SEG's frames on the source slices ({type(exc).__name__})"
        ) from exc
    return np.ascontiguousarray(lut[numbers].transpose(2, 1, 0))
