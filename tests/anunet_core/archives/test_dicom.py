"""Tests of anunet_core.archives.dicom: series folders with labels beside them."""

from __future__ import annotations

import re
import shutil

import nibabel as nib
import numpy as np
import pytest
from archive_builders import SAFE_ID, assert_one_line
from testkit import REAL_CT_DICOM, need_real_data

from anunet_core.archives import (
    ArchiveError,
    case_checksum,
    detect_layout,
    discover_cases,
    load_case,
    source_files,
)


def test_dicom_lps_series_gets_the_ras_labels_flipped(archives):
    """standard_orientation DICOM stores the phantom's grid reversed in i and j (LPS); its
    RAS labels.nii.gz must come out flipped the same way."""
    root, expected = archives["dicom"]
    case = discover_cases(root)[0]
    phantom = expected[case.case_id][1]
    image, mask = load_case(case, "liver")
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    assert nib.aff2axcodes(phantom.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(image.array, phantom.image[::-1, ::-1, :])
    np.testing.assert_array_equal(mask, (phantom.labels == 5)[::-1, ::-1, :])


def test_dicom_case_ids_labels_beside_and_nested_folders(archives, tmp_path):
    root, _ = archives["dicom"]
    shutil.copytree(root / "case_0003" / "dicom", tmp_path / "site b" / "patient7")
    shutil.copy(root / "case_0003" / "labels.nii.gz", tmp_path / "site b" / "patient7.nii.gz")
    shutil.copytree(root / "case_0004" / "dicom", tmp_path / "P2" / "series")
    shutil.copy(root / "case_0004" / "labels.nii.gz", tmp_path / "P2" / "series" / "seg.nii.gz")
    shutil.copytree(root / "case_0004" / "dicom", tmp_path / "P2" / "nolabel")
    (tmp_path / "P2" / "nolabel" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    (tmp_path / "README.txt").write_text("not a scan")
    cases = discover_cases(tmp_path)
    assert detect_layout(tmp_path) == "dicom"
    ids = [c.case_id for c in cases]
    assert ids[:2] == ["P2__nolabel", "P2__series"]
    assert ids[2].startswith("site_b-") and ids[2].endswith("__patient7")  # space -> _ + hash
    assert all(SAFE_ID.match(i) for i in ids)
    by_id = {c.case_id: c for c in cases}
    assert by_id["P2__nolabel"].label is None
    assert by_id["P2__series"].label.name == "seg.nii.gz"
    assert by_id[ids[2]].label.name == "patient7.nii.gz"
    assert all(p.suffix == ".dcm" for p in source_files(by_id["P2__nolabel"]))  # no DICOMDIR
    image, mask = load_case(by_id[ids[2]], "liver")
    assert image.case_id == ids[2] and mask.sum() > 0
    # ids never depend on DICOM tags (PatientName/PatientID are "SYNTH-case_...")
    assert not any("SYNTH" in i for i in ids)


def test_dicom_modality_tag_is_checked(archives):
    root, _ = archives["dicom"]
    case = discover_cases(root)[0]
    assert load_case(case, "liver", modality="CT", with_label=False)[0].modality == "CT"
    with pytest.raises(ArchiveError, match="DICOM Modality is CT") as info:
        load_case(case, "liver", modality="MR")
    assert_one_line(info.value)


def test_real_ct_dicom_archive():
    root = need_real_data(REAL_CT_DICOM)
    from pydicom.pixels.decoders import JPEG2000LosslessDecoder

    if not JPEG2000LosslessDecoder.is_available:
        pytest.skip("no JPEG 2000 decoder for pydicom (Pillow with OpenJPEG) in this environment")
    assert detect_layout(root) == "dicom"
    (case,) = discover_cases(root, require_labels=True)
    assert case.case_id == "totalseg-ct-dicom" and case.patient_id == case.case_id
    assert case.image == root.resolve() / "dicom" or case.image.name == "dicom"
    assert case.label.name == "labels.nii.gz"
    image, mask = load_case(case, "liver")
    assert image.shape == mask.shape == (512, 512, 20)
    assert image.modality == "CT" and mask.dtype == np.uint8
    hu = float(image.array[mask == 1].mean())
    assert 0 < hu < 200, hu  # soft tissue, not air/bone: the mask sits on the liver
    # organ volume round trip: mL from the mask on the DICOM grid == mL counted in the file
    labels = nib.load(root / "labels.nii.gz")
    voxel_ml = float(np.prod(labels.header.get_zooms()[:3])) / 1000.0
    file_ml = int((np.asarray(labels.dataobj) == 5).sum()) * voxel_ml
    mask_ml = int(mask.sum()) * float(np.prod(image.spacing)) / 1000.0
    assert mask_ml == pytest.approx(file_ml, rel=1e-5) and mask_ml > 100
    assert re.fullmatch(r"[0-9a-f]{64}", case_checksum(case))
    assert len(source_files(case)) == 21

