"""Tests of anunet_core.io.dicom_seg: one DICOM SEG per DICOM case, read back two ways.

Each SEG is checked with pydicom alone, independently of the project's readers: every frame
sits on the source slice it references (its ImagePositionPatient, the series' orientation and
pixel spacing), and each of its pixels, placed in the world through the frame's own geometry,
carries the organ of the NIfTI mask voxel there. Series are written in the orientations that
break segmentation exports (A/P mirrored, rotated 90 degrees, slices numbered from the top,
sagittal, coronal; shuffled file names), as is the real TotalSegmentator CT. Then
:func:`read_dicom_seg` (highdicom) must give back the label map exactly.
"""

from __future__ import annotations

import copy
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_series import LPS_TO_RAS, write_oriented_series

from anunet_core.io import (
    DicomSegError,
    SegSegment,
    Volume,
    align_label_to_image,
    decode_source_headers,
    encode_source_headers,
    read_dicom_seg,
    read_dicom_series,
    read_label_nifti,
    write_dicom_seg,
)
from anunet_core.synthetic.dicom import write_dicom_series
from anunet_core.synthetic.phantom import make_phantom
from anunet_core.vocabulary import (
    ORGAN_LABEL_VALUES,
    ORGAN_MAP_VALUES,
    ORGAN_SNOMED,
    ORGANS,
)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SEGMENTS = [
    SegSegment("liver", 1, "anunet-liver-ct-L2", "3"),
    SegSegment("spleen", 2, "anunet-spleen-ct-L3", "1"),
    SegSegment("kidney", 3, "anunet-kidney-ct-L2", "12"),
]
IDENTIFYING = ("Doe", "Jane", "SECRET-123")  # PatientName and PatientID of the test slices


def organ_map(labels: np.ndarray) -> np.ndarray:
    """TotalSegmentator labels -> the segment job's label map (ORGAN_MAP_VALUES)."""
    out = np.zeros(labels.shape, np.uint8)
    for organ in ORGANS:
        out[np.isin(labels, ORGAN_LABEL_VALUES[organ])] = ORGAN_MAP_VALUES[organ]
    return out


@pytest.fixture(scope="module")
def phantom_mask():
    """``(organ label map, affine)`` of a CT phantom (40 x 32 x 12 voxels of 9 x 10 x 16 mm, the
    three organs on some slices only) and its image."""
    p = make_phantom(0, shape=(40, 32, 12), spacing=(9.0, 10.0, 16.0))
    return organ_map(p.labels), p.affine, p.image


def write_case(folder, phantom_mask, axcodes, mask=None):
    """The phantom as a DICOM series stored in ``axcodes`` and its mask as ``labels.nii.gz``
    (on the phantom's own RAS grid) beside it. Returns ``(volume, label map on the volume's
    grid, NIfTI mask, NIfTI affine)``: the label map aligned through the geometry."""
    labels, affine, image = phantom_mask
    labels = labels if mask is None else mask
    write_oriented_series(folder / "dicom", image, affine, axcodes)
    nib.save(nib.Nifti1Image(labels, affine), folder / "labels.nii.gz")
    volume = read_dicom_series(folder / "dicom")
    nifti, nifti_affine = read_label_nifti(folder / "labels.nii.gz")
    return volume, align_label_to_image(nifti, nifti_affine, volume), nifti, nifti_affine


def truth_on_frame(truth, affine, ipp, iop, pixel_spacing, rows, cols) -> np.ndarray:
    """``(rows, cols)``: the mask ``truth`` (on the RAS ``affine``) at each pixel's centre, the
    pixel placed by DICOM PS3.3 C.7.6.2.1.1 (P = IPP + c * dc * row_dir + r * dr * col_dir)."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    iop = np.asarray(iop, float)
    dr, dc = (float(v) for v in pixel_spacing)
    lps = np.asarray(ipp, float) + c[..., None] * dc * iop[:3] + r[..., None] * dr * iop[3:]
    points = np.c_[lps.reshape(-1, 3), np.ones(rows * cols)] @ LPS_TO_RAS.T
    voxel = (np.linalg.inv(affine) @ points.T)[:3].T
    index = np.rint(voxel).astype(int)
    assert np.abs(voxel - index).max() < 1e-3  # the series samples the mask's voxel centres
    assert np.all(index >= 0) and np.all(index < truth.shape)
    return truth[index[:, 0], index[:, 1], index[:, 2]].reshape(rows, cols)


def check_seg(path, sources, truth, affine, segments=SEGMENTS) -> pydicom.Dataset:
    """The SEG at ``path`` read with pydicom: it references the series of ``sources`` (their
    headers), every frame lies on the slice it references, and its pixels are the organ's
    voxels of ``truth`` there; exactly the non-empty (organ, slice) pairs have a frame, unless
    nothing at all is segmented (one empty frame per segment)."""
    seg = pydicom.dcmread(path)
    first = sources[0]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY" and seg.BitsAllocated == 1
    assert seg.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID and seg.SOPInstanceUID not in by_uid
    assert seg.PatientName == first.PatientName and seg.PatientID == first.PatientID
    assert seg.SeriesDescription == "ANU-Net segmentation" and seg.SeriesNumber == 901
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert sorted(ref.ReferencedSOPInstanceUID for ref in series.ReferencedInstanceSequence) == sorted(by_uid)

    organ_of = {}
    for number, (item, segment) in enumerate(zip(seg.SegmentSequence, segments, strict=True), start=1):
        assert item.SegmentNumber == number and item.SegmentLabel == segment.organ
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == segment.algorithm_name
        (algorithm,) = item.SegmentationAlgorithmIdentificationSequence
        assert algorithm.AlgorithmName == segment.algorithm_name
        assert algorithm.AlgorithmVersion == segment.algorithm_version
        (family,) = algorithm.AlgorithmFamilyCodeSequence
        assert (family.CodeValue, family.CodingSchemeDesignator, family.CodeMeaning) == (
            "123110", "DCM", "Artificial Intelligence")
        (category,) = item.SegmentedPropertyCategoryCodeSequence
        assert (category.CodeValue, category.CodingSchemeDesignator, category.CodeMeaning) == (
            "123037004", "SCT", "Anatomical Structure")
        (kind,) = item.SegmentedPropertyTypeCodeSequence
        assert (kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning) == ORGAN_SNOMED[segment.organ]
        organ_of[number] = segment

    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    assert iop == [float(v) for v in first.ImageOrientationPatient]
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    assert spacing == [float(v) for v in first.PixelSpacing]
    rows, cols = int(first.Rows), int(first.Columns)
    assert (seg.Rows, seg.Columns) == (rows, cols)

    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), rows, cols)
    seen = []
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        (derivation,) = item.DerivationImageSequence
        (source,) = derivation.SourceImageSequence
        src = by_uid[str(source.ReferencedSOPInstanceUID)]
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert position == [float(v) for v in src.ImagePositionPatient]
        segment = organ_of[int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)]
        expected = truth_on_frame(truth, affine, position, iop, spacing, rows, cols) == segment.label_value
        np.testing.assert_array_equal(frame, expected.astype(np.uint8))
        if frame.any():
            seen.append((segment.organ, str(src.SOPInstanceUID)))
    wanted = {
        (segment.organ, uid)
        for uid, src in by_uid.items()
        for segment in segments
        if (truth_on_frame(truth, affine, src.ImagePositionPatient, iop, spacing, rows, cols) == segment.label_value).any()
    }
    assert len(seen) == len(set(seen))
    assert set(seen) == wanted
    if wanted:
        assert len(frames) == len(wanted)  # empty frames are omitted
    else:
        assert len(frames) == len(segments)  # nothing segmented: one empty frame per segment
    return seg


def source_headers(folder) -> list[pydicom.Dataset]:
    """The series' headers read with pydicom alone (no project code)."""
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]


# ----------------------------------------------------------------------------------------------
# Geometry: frames on the source slices, pixels equal to the mask through the geometry
# ----------------------------------------------------------------------------------------------

ORIENTATIONS = [
    (("L", "P", "S"), [1, 0, 0, 0, 1, 0]),  # a scanner's axial series
    (("L", "A", "I"), [1, 0, 0, 0, -1, 0]),  # mirrored A/P
    (("P", "L", "I"), [0, 1, 0, 1, 0, 0]),  # rotated 90 degrees in-plane (rows and columns swapped)
    (("A", "L", "S"), [0, -1, 0, 1, 0, 0]),  # rotated the other way
    (("L", "P", "I"), [1, 0, 0, 0, 1, 0]),  # axial, slices numbered and stored from the top
    (("P", "I", "R"), [0, 1, 0, 0, 0, -1]),  # sagittal
    (("L", "I", "P"), [1, 0, 0, 0, 0, -1]),  # coronal
]


@pytest.mark.parametrize(
    "axcodes, iop", ORIENTATIONS,
    ids=["axial", "mirrored-ap", "rotated-90", "rotated-minus-90", "reversed-slices", "sagittal", "coronal"],
)
def test_seg_frames_lie_on_the_source_slices_and_equal_the_mask(tmp_path, phantom_mask, axcodes, iop):
    volume, label_map, nifti, nifti_affine = write_case(tmp_path, phantom_mask, axcodes)
    sources = source_headers(tmp_path / "dicom")
    assert {tuple(float(v) for v in ds.ImageOrientationPatient) for ds in sources} == {tuple(map(float, iop))}
    assert label_map.shape == volume.shape and set(np.unique(label_map)) == {0, 1, 2, 3}

    out = write_dicom_seg(label_map, volume.dicom_headers, SEGMENTS, tmp_path / "seg.dcm")

    assert out == tmp_path / "seg.dcm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dicom", "labels.nii.gz", "seg.dcm"]  # no temporaries
    check_seg(out, sources, nifti, nifti_affine)
    np.testing.assert_array_equal(read_dicom_seg(out, volume.dicom_headers), label_map)


@pytest.mark.parametrize("standard_orientation", [False, True], ids=["phantom-grid", "scanner-orientation"])
def test_seg_of_a_synthetic_archive_series(tmp_path, standard_orientation):
    # The series the segment job's tests read (anunet_core.synthetic: uint16 + rescale, UIDs
    # derived from the phantom, labels.nii.gz on the phantom's grid beside it).
    p = make_phantom(1, shape=(36, 28, 10), spacing=(10.0, 11.0, 18.0))
    write_dicom_series(tmp_path / "dicom", p, standard_orientation=standard_orientation)
    volume = read_dicom_series(tmp_path / "dicom")
    truth = organ_map(p.labels)
    label_map = align_label_to_image(truth, p.affine, volume)
    write_dicom_seg(label_map, volume.dicom_headers, SEGMENTS, tmp_path / "seg.dcm")
    seg = check_seg(tmp_path / "seg.dcm", source_headers(tmp_path / "dicom"), truth, p.affine)
    assert seg.PatientID == f"SYNTH-{p.case_id}"
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "seg.dcm", volume.dicom_headers), label_map)


@pytest.mark.parametrize("axcodes", [("L", "A", "I"), ("P", "I", "R")], ids=["mirrored-ap", "sagittal"])
def test_seg_from_headers_passed_as_json_is_the_same(tmp_path, phantom_mask, axcodes):
    volume, label_map, nifti, nifti_affine = write_case(tmp_path, phantom_mask, axcodes)
    text = encode_source_headers(volume.dicom_headers)
    assert isinstance(text, str) and "7FE00010" not in text  # no pixel data
    headers = decode_source_headers(text)
    assert len(headers) == volume.shape[2]
    for decoded, original in zip(headers, volume.dicom_headers, strict=True):
        assert decoded.to_json_dict() == original.to_json_dict()
    write_dicom_seg(label_map, headers, SEGMENTS, tmp_path / "seg.dcm")
    check_seg(tmp_path / "seg.dcm", source_headers(tmp_path / "dicom"), nifti, nifti_affine)
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "seg.dcm", headers), label_map)


def test_segments_keep_their_organ_whatever_their_number(tmp_path, phantom_mask):
    # A run of two models (spleen, kidney): SEG segments 1 and 2, read back as 2 and 3.
    volume, label_map, nifti, nifti_affine = write_case(tmp_path, phantom_mask, ("L", "A", "I"))
    label_map[label_map == 1] = 0
    nifti = np.where(nifti == 1, 0, nifti).astype(np.uint8)
    segments = SEGMENTS[:0:-1]  # kidney, spleen
    write_dicom_seg(label_map, volume.dicom_headers, segments, tmp_path / "seg.dcm")
    seg = check_seg(tmp_path / "seg.dcm", source_headers(tmp_path / "dicom"), nifti, nifti_affine, segments)
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["kidney", "spleen"]
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "seg.dcm", volume.dicom_headers), label_map)


@pytest.mark.parametrize("empty", [("liver", "spleen", "kidney"), ("spleen",)], ids=["all-organs", "one-organ"])
def test_seg_with_empty_organs_is_still_a_valid_seg(tmp_path, phantom_mask, empty):
    import highdicom as hd

    labels = phantom_mask[0].copy()
    for organ in empty:
        labels[labels == ORGAN_MAP_VALUES[organ]] = 0
    volume, label_map, nifti, nifti_affine = write_case(tmp_path, phantom_mask, ("P", "L", "I"), mask=labels)
    write_dicom_seg(label_map, volume.dicom_headers, SEGMENTS, tmp_path / "seg.dcm")

    seg = check_seg(tmp_path / "seg.dcm", source_headers(tmp_path / "dicom"), nifti, nifti_affine)
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["liver", "spleen", "kidney"]
    framed = {int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
              for item in seg.PerFrameFunctionalGroupsSequence}
    if len(empty) == 3:  # one empty frame per segment, on the first slice
        assert seg.NumberOfFrames == 3 and not seg.pixel_array.any()
        assert framed == {1, 2, 3}
        first = str(volume.dicom_headers[0].SOPInstanceUID)
        assert {str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
                for item in seg.PerFrameFunctionalGroupsSequence} == {first}
    else:
        assert framed == {1, 3}
    hd_seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert hd_seg.number_of_segments == 3
    back = read_dicom_seg(tmp_path / "seg.dcm", volume.dicom_headers)
    np.testing.assert_array_equal(back, label_map)
    assert back.dtype == np.uint8 and back.shape == volume.shape


def test_identifying_values_are_never_logged_and_odd_ones_do_not_stop_the_seg(tmp_path, phantom_mask, caplog):
    # Values pydicom and highdicom warn about by quoting them: a name without "^", a sex and
    # dates highdicom refuses. The SEG keeps the name, leaves the refused values empty.
    import warnings

    odd = {"PatientName": "DOE JANE QX7", "PatientID": "QX7-ID", "PatientSex": "UNKNOWN-QX7",
           "PatientBirthDate": "1970QX7", "StudyDate": "2001QX7"}
    labels, affine, image = phantom_mask
    with warnings.catch_warnings():  # writing the odd values warns and logs (the test's own doing)
        warnings.simplefilter("ignore")
        write_oriented_series(tmp_path / "dicom", image, affine, ("L", "P", "S"), attributes=odd)
    caplog.set_level("DEBUG")
    caplog.clear()
    volume = read_dicom_series(tmp_path / "dicom")
    label_map = align_label_to_image(labels, affine, volume)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        headers = decode_source_headers(encode_source_headers(volume.dicom_headers))
        write_dicom_seg(label_map, headers, SEGMENTS, tmp_path / "seg.dcm")
        back = read_dicom_seg(tmp_path / "seg.dcm", headers)
    said = [record.getMessage() for record in caplog.records] + [str(w.message) for w in caught]
    assert not [line for line in said if "QX7" in line]
    np.testing.assert_array_equal(back, label_map)
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert (seg.PatientName, seg.PatientID) == ("DOE JANE QX7", "QX7-ID")
    assert (seg.PatientSex, seg.PatientBirthDate, seg.StudyDate) == ("", "", "")


# ----------------------------------------------------------------------------------------------
# The real CT (anonymised: its study, series and instance UIDs are blank)
# ----------------------------------------------------------------------------------------------


def referenceable(headers) -> list[pydicom.Dataset]:
    """Copies of the real CT's headers with the UIDs a PACS export has: the SOP class and
    instance from the file meta, a study and a series UID."""
    out = []
    for ds in headers:
        ds = copy.deepcopy(ds)
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.7001"
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.7002"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        out.append(ds)
    return out


def test_real_ct_without_uids_cannot_be_referenced(tmp_path, real_ct):
    image, labels, affine = real_ct
    label_map = organ_map(align_label_to_image(labels, affine, image))
    with pytest.raises(DicomSegError) as exc:
        write_dicom_seg(label_map, image.dicom_headers, SEGMENTS, tmp_path / "seg.dcm")
    first = image.dicom_headers[0]
    assert str(exc.value) == (
        f"{tmp_path / 'seg.dcm'}: source slice 0 ({first.filename}) has no StudyInstanceUID: "
        f"the source series cannot be referenced"
    )
    assert not (tmp_path / "seg.dcm").exists()


def test_real_ct_seg_equals_its_labels_through_the_geometry(tmp_path, real_ct):
    image, labels, affine = real_ct
    assert [float(v) for v in image.dicom_headers[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    headers = referenceable(image.dicom_headers)
    truth = organ_map(labels)  # labels.nii.gz on its own grid (axis codes L, A, S)
    label_map = organ_map(align_label_to_image(labels, affine, image))
    assert np.bincount(label_map.ravel(), minlength=4).tolist() == [4745538, 366708, 130634, 0]  # no kidney here

    write_dicom_seg(label_map, headers, SEGMENTS, tmp_path / "seg.dcm")

    seg = check_seg(tmp_path / "seg.dcm", headers, truth, affine)
    assert seg.NumberOfFrames == int(np.any(label_map == 1, axis=(0, 1)).sum() + np.any(label_map == 2, axis=(0, 1)).sum())
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "seg.dcm", headers), label_map)
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "seg.dcm", decode_source_headers(encode_source_headers(headers))), label_map)


# ----------------------------------------------------------------------------------------------
# Bad input: one line naming the file, the slice and the keyword, never a header value
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def axial_case(tmp_path, phantom_mask):
    volume, label_map, _, _ = write_case(tmp_path / "case", phantom_mask, ("L", "P", "S"))
    return volume, label_map


@pytest.mark.parametrize("blank", [False, True], ids=["absent", "blank"])
@pytest.mark.parametrize(
    "keyword",
    ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID", "ImagePositionPatient"],
)
def test_slice_that_cannot_be_referenced_raises(tmp_path, axial_case, keyword, blank):
    volume, label_map = axial_case
    headers = [copy.deepcopy(ds) for ds in volume.dicom_headers]
    if blank:
        setattr(headers[2], keyword, "")
    else:
        delattr(headers[2], keyword)
    with pytest.raises(DicomSegError) as exc:
        write_dicom_seg(label_map, headers, SEGMENTS, tmp_path / "seg.dcm")
    assert isinstance(exc.value, ValueError)
    assert str(exc.value) == (
        f"{tmp_path / 'seg.dcm'}: source slice 2 ({headers[2].filename}) has no {keyword}: "
        f"the source series cannot be referenced"
    )
    assert not any(word in str(exc.value) for word in IDENTIFYING)
    assert not (tmp_path / "seg.dcm").exists()
    assert keyword in volume.dicom_headers[2] and volume.dicom_headers[2].get(keyword)  # caller's headers untouched


def test_slice_without_uid_after_json_names_the_slice(tmp_path, axial_case):
    volume, label_map = axial_case
    items = json.loads(encode_source_headers(volume.dicom_headers))
    del items[4]["0020000E"]  # SeriesInstanceUID
    with pytest.raises(DicomSegError) as exc:
        write_dicom_seg(label_map, decode_source_headers(json.dumps(items)), SEGMENTS, tmp_path / "seg.dcm")
    assert str(exc.value) == (
        f"{tmp_path / 'seg.dcm'}: source slice 4 has no SeriesInstanceUID: the source series cannot be referenced"
    )


def _reverse(headers, label_map):
    return headers[::-1], label_map


def _other_series(headers, label_map):
    headers = [copy.deepcopy(ds) for ds in headers]
    headers[3].SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.99"
    return headers, label_map


def _one_slice_short(headers, label_map):
    return headers[:-1], label_map


def _undescribed_value(headers, label_map):
    label_map = label_map.copy()
    label_map[0, 0, 0] = 7
    return headers, label_map


def _float_labels(headers, label_map):
    return headers, label_map.astype(np.float32)


def _same_uid_twice(headers, label_map):
    headers = [copy.deepcopy(ds) for ds in headers]
    headers[1].SOPInstanceUID = headers[0].SOPInstanceUID
    return headers, label_map


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (_reverse, "source slices are not in slice order (pass them in k order, as Volume.dicom_headers)"),
        (_other_series, "differs from source slice 0 in SeriesInstanceUID (one series only)"),
        (_one_slice_short, "label map is 40x32x12, the source series' grid is 40x32x11 (columns x rows x slices)"),
        (_undescribed_value, "label map has values [7] that no segment describes (segments: [1, 2, 3])"),
        (_float_labels, "label map must hold integers, got dtype float32"),
        (_same_uid_twice, "two source slices have the same SOPInstanceUID"),
    ],
    ids=["reversed", "two-series", "shape", "undescribed-value", "float", "duplicate-uid"],
)
def test_inconsistent_input_raises(tmp_path, axial_case, spoil, reason):
    volume, label_map = axial_case
    headers, label_map = spoil(list(volume.dicom_headers), label_map)
    with pytest.raises(DicomSegError) as exc:
        write_dicom_seg(label_map, headers, SEGMENTS, tmp_path / "seg.dcm")
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'seg.dcm'}: ") and message.endswith(reason)
    assert "\n" not in message and not any(word in message for word in IDENTIFYING)


@pytest.mark.parametrize(
    "segments, reason",
    [
        ([], "no segments"),
        ([SEGMENTS[0], SegSegment("liver", 2, "m", "1")], "segments repeat an organ or a label value"),
        ([SEGMENTS[0], SegSegment("spleen", 1, "m", "1")], "segments repeat an organ or a label value"),
    ],
    ids=["none", "organ-twice", "value-twice"],
)
def test_bad_segment_lists_raise(tmp_path, axial_case, segments, reason):
    volume, label_map = axial_case
    with pytest.raises(DicomSegError, match=reason):
        write_dicom_seg(np.zeros_like(label_map), volume.dicom_headers, segments, tmp_path / "seg.dcm")


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"organ": "lung"}, "organ must be one of"),
        ({"label_value": 0}, "label_value must be an integer in 1..255, got 0"),
        ({"label_value": 256}, "label_value must be an integer in 1..255, got 256"),
        ({"label_value": True}, "label_value must be an integer in 1..255, got True"),
        ({"algorithm_name": ""}, "algorithm_name must be 1-64 characters without a backslash, got ''"),
        ({"algorithm_name": "a\\b"}, "algorithm_name must be 1-64 characters"),
        ({"algorithm_name": "m" * 65}, "algorithm_name must be 1-64 characters"),
        ({"algorithm_version": 3}, "algorithm_version must be 1-64 characters without a backslash, got 3"),
    ],
    ids=["organ", "zero", "too-big", "bool", "empty-name", "backslash", "long-name", "int-version"],
)
def test_seg_segment_checks_its_fields(kwargs, reason):
    fields = {"organ": "liver", "label_value": 1, "algorithm_name": "anunet-liver-ct-L2", "algorithm_version": "3"}
    with pytest.raises(ValueError, match=reason.replace("\\", "\\\\")):
        SegSegment(**{**fields, **kwargs})


def test_seg_segment_normalises_the_organ():
    assert SegSegment(" Liver ", np.uint8(1), "m", "1") == SegSegment("liver", 1, "m", "1")


@pytest.mark.parametrize(
    "text",
    ["not json", "{}", "[1, 2]", '[{"00100010": "Doe^Jane"}]', '[{"zz": {"vr": "PN"}}]'],
    ids=["text", "object", "numbers", "bare-value", "bad-tag"],
)
def test_undecodable_headers_raise(text):
    with pytest.raises(DicomSegError, match=r"^source headers: not a JSON list of DICOM datasets \(\w+\)$") as exc:
        decode_source_headers(text)
    assert "Doe" not in str(exc.value)


def test_read_dicom_seg_of_another_series_raises(tmp_path, axial_case, phantom_mask):
    volume, label_map = axial_case
    write_dicom_seg(label_map, volume.dicom_headers, SEGMENTS, tmp_path / "seg.dcm")
    other = write_case(tmp_path / "other", phantom_mask, ("L", "P", "S"))[0]  # new SOP instance UIDs
    with pytest.raises(DicomSegError) as exc:
        read_dicom_seg(tmp_path / "seg.dcm", other.dicom_headers)
    assert str(exc.value).startswith(f"{tmp_path / 'seg.dcm'}: frames reference ")
    with pytest.raises(DicomSegError, match="not a readable DICOM SEG"):
        read_dicom_seg(tmp_path / "other" / "labels.nii.gz", volume.dicom_headers)


# ----------------------------------------------------------------------------------------------
# Volume.dicom_headers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "axcodes, slices", [(("L", "P", "S"), 12), (("L", "P", "I"), 12), (("P", "I", "R"), 40)],
    ids=["axial", "reversed", "sagittal"],
)
def test_dicom_reader_keeps_the_headers_in_slice_order_without_pixels(tmp_path, phantom_mask, axcodes, slices):
    volume, _, _, _ = write_case(tmp_path, phantom_mask, axcodes)
    headers = volume.dicom_headers
    assert isinstance(headers, tuple) and len(headers) == volume.shape[2] == slices
    assert not any("PixelData" in ds for ds in headers)
    # k order: header k's position is the affine's voxel (0, 0, k)
    for k, ds in enumerate(headers):
        ras = LPS_TO_RAS[:3, :3] @ np.array([float(v) for v in ds.ImagePositionPatient])
        np.testing.assert_allclose(ras, (volume.affine @ [0, 0, k, 1])[:3], atol=1e-5)
    by_file = {str(ds.SOPInstanceUID) for ds in source_headers(tmp_path / "dicom")}
    assert {str(ds.SOPInstanceUID) for ds in headers} == by_file
    assert "dicom_headers" not in repr(volume) and "SECRET" not in repr(volume)


def test_volume_headers_are_optional_and_one_per_slice(tmp_path, phantom_mask):
    labels, affine, _ = phantom_mask
    assert Volume(labels, affine, "CT", "x").dicom_headers is None
    with pytest.raises(ValueError, match=r"^Volume.dicom_headers must have one header per slice \(12\), got 2$"):
        Volume(labels, affine, "CT", "x", dicom_headers=[pydicom.Dataset(), pydicom.Dataset()])
    headers = [pydicom.Dataset() for _ in range(12)]
    assert Volume(labels, affine, "CT", "x", dicom_headers=headers).dicom_headers == tuple(headers)
