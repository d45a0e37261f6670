"""Resuming: the image signature, the done rule and the split of an archive into skipped and todo."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from anunet_core.archives import discover_cases, take_inventory
from anunet_core.io import Volume, write_mask
from anunet_core.preprocessing import PREPROCESSING_VERSION
from anunet_core.synthetic import make_archive
from anunet_platform.contracts import organ_mask_path, prediction_path, record_path
from anunet_platform.segment import OrganOutput, image_signature, is_done, plan_resume, read_record, write_record
from anunet_platform.segment.outputs import mask_description
from anunet_platform.segment.resume import record_rows

MODEL = "models:/anunet-liver-ct-L2/3"
LIVER = OrganOutput(organ="liver", label_value=1, model_name="anunet-liver-ct-L2", version="3", depth=2,
                    depth_reason="r", postprocess=False, postprocess_reason="off")
SPLEEN = OrganOutput(organ="spleen", label_value=2, model_name="anunet-spleen-ct-L1", version="7", depth=1,
                     depth_reason="r", postprocess=True, postprocess_reason="on")


def test_image_signature_follows_the_files_not_their_place(tmp_path: Path) -> None:
    make_archive(tmp_path / "a", cases=1, modality="CT", fmt="dicom", seed=0, shape=(16, 16, 4))
    case = discover_cases(tmp_path / "a")[0]
    first = image_signature(case)
    assert first == image_signature(case) and len(first) == 64
    one = min(case.image.iterdir())
    os.utime(one, ns=(one.stat().st_atime_ns, one.stat().st_mtime_ns + 10**9))
    assert image_signature(case) != first, "a replaced slice changes the signature"


def _mask(path: Path, model_version: str | None = MODEL) -> Path:
    return write_mask(np.zeros((4, 4, 2), np.uint8), Volume(np.zeros((4, 4, 2), np.float32), np.eye(4), "CT", "c"), path,
                      description=model_version)


def _row(organ: OrganOutput = LIVER, **changes) -> dict:
    return {"case_id": "c", "organ": organ.organ, "status": "ok", "model_version": organ.model_version, "signature": "s",
            "preprocessing_version": PREPROCESSING_VERSION, "postprocess": "on" if organ.postprocess else "off",
            "organ_ml": 2.0, **changes}


def test_is_done_needs_same_model_preprocessing_source_and_the_mask(tmp_path: Path) -> None:
    _mask(prediction_path(tmp_path, "c"))
    record = {"case_id": "c", "formats": ["nifti"], "rows": [_row()]}
    assert is_done(record, [LIVER], "s", tmp_path, "c")
    assert not is_done(None, [LIVER], "s", tmp_path, "c")
    assert not is_done(record | {"rows": [_row(status="failed")]}, [LIVER], "s", tmp_path, "c")
    newer = OrganOutput(**(LIVER.to_dict() | {"version": "4"}))
    assert not is_done(record, [newer], "s", tmp_path, "c"), "a new model version redoes the case"
    assert not is_done(record, [LIVER], "other", tmp_path, "c"), "a changed scan is redone"
    assert not is_done(record | {"rows": [_row(preprocessing_version="old")]}, [LIVER], "s", tmp_path, "c")
    postprocessed = OrganOutput(**(LIVER.to_dict() | {"postprocess": True}))
    assert not is_done(record, [postprocessed], "s", tmp_path, "c"), "post-processing switched on redoes it"
    assert not is_done(record, [LIVER], "s", tmp_path, "c", formats=("nifti", "dicom-seg")), "a SEG asked for now"
    assert not is_done(record, [LIVER], "s", tmp_path / "elsewhere", "c"), "no mask"
    # a mask another run wrote beside this record (two runs interleaved) is never trusted
    _mask(prediction_path(tmp_path, "c"), "models:/anunet-liver-ct-L4/9")
    assert not is_done(record, [LIVER], "s", tmp_path, "c")
    _mask(prediction_path(tmp_path, "c"), None)
    assert not is_done(record, [LIVER], "s", tmp_path, "c")
    prediction_path(tmp_path, "c").write_bytes(b"x")
    assert not is_done(record, [LIVER], "s", tmp_path, "c")


def test_a_record_of_one_row_from_before_several_organs_still_resumes(tmp_path: Path) -> None:
    _mask(prediction_path(tmp_path, "c"))
    old = {"case_id": "c", "status": "ok", "model_version": MODEL, "signature": "s",
           "preprocessing_version": PREPROCESSING_VERSION}
    assert record_rows(old) == [old] and is_done(old, [LIVER], "s", tmp_path, "c")


def test_several_organs_are_done_only_all_together(tmp_path: Path) -> None:
    organs = [LIVER, SPLEEN]
    _mask(prediction_path(tmp_path, "c"), mask_description(organs))
    for organ in organs:
        organ_mask_path(tmp_path, "c", organ.organ).parent.mkdir(parents=True, exist_ok=True)
        _mask(organ_mask_path(tmp_path, "c", organ.organ), organ.model_version)
    record = {"case_id": "c", "formats": ["nifti", "dicom-seg"], "rows": [_row(LIVER), _row(SPLEEN)]}
    assert is_done(record, organs, "s", tmp_path, "c", formats=("nifti", "dicom-seg"))
    assert not is_done(record, [LIVER], "s", tmp_path, "c"), "another set of organs"
    assert not is_done(record | {"rows": [_row(LIVER)]}, organs, "s", tmp_path, "c"), "an organ missing"
    assert not is_done(record | {"rows": [_row(LIVER), _row(SPLEEN, status="failed")]}, organs, "s", tmp_path, "c")
    newer = OrganOutput(**(SPLEEN.to_dict() | {"version": "8"}))
    assert not is_done(record, [LIVER, newer], "s", tmp_path, "c"), "one organ's new model redoes the case"
    organ_mask_path(tmp_path, "c", "spleen").unlink()
    assert not is_done(record, organs, "s", tmp_path, "c"), "an organ's mask gone"


def test_records_round_trip_and_an_unreadable_one_is_none(tmp_path: Path) -> None:
    rows = [{"case_id": "c1", "organ": "liver", "status": "ok", "organ_ml": 1.5, "error": None},
            {"case_id": "c1", "organ": "spleen", "status": "ok", "organ_ml": 0.5, "error": None}]
    path = write_record(rows, tmp_path, formats=("nifti", "dicom-seg"))
    assert path == record_path(tmp_path, "c1") == tmp_path / "records" / "c1.json"
    assert read_record(tmp_path, "c1") == {"case_id": "c1", "formats": ["nifti", "dicom-seg"], "rows": rows}
    assert read_record(tmp_path, "c2") is None
    path.write_text("{truncated")
    assert read_record(tmp_path, "c1") is None, "a half-written record means: redo the case"


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    make_archive(tmp_path / "a", cases=3, modality="CT", fmt="nifti", seed=0, shape=(16, 16, 4))
    return tmp_path / "a"


def _finish(out: Path, case, organ: OrganOutput = LIVER, **changes) -> None:
    """What stage 3 leaves for a finished case: its mask and its record."""
    prediction_path(out, case.case_id).parent.mkdir(parents=True, exist_ok=True)
    _mask(prediction_path(out, case.case_id), organ.model_version)
    write_record([_row(organ, case_id=case.case_id, signature=image_signature(case), **changes)], out)


def test_plan_resume_skips_only_the_finished_cases(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    inventory = take_inventory(archive)
    cases = inventory.cases
    _finish(out, cases[0])
    _finish(out, cases[1], status="failed")
    plan = plan_resume(inventory, out, [LIVER])
    assert list(plan.skipped) == [cases[0].case_id]
    (skipped,) = plan.skipped[cases[0].case_id]
    assert (skipped["status"], skipped["seconds"], skipped["organ_ml"], skipped["files"]) == ("skipped", 0.0, 2.0, 2)
    assert skipped["source"] == os.path.relpath(cases[0].image, archive)
    assert [row["case_id"] for row in plan.todo] == [c.case_id for c in cases[1:]]
    for row, case in zip(plan.todo, cases[1:], strict=True):
        assert row["signature"] == image_signature(case) and row["seconds"] == 0.0
        assert row["files"] == 2, "the image and its label"
        assert row["source"] == os.path.relpath(case.image, archive) == f"{case.case_id}/image.nii.gz"

    newer = OrganOutput(**(LIVER.to_dict() | {"version": "4"}))
    assert plan_resume(inventory, out, [newer]).skipped == {}, "another model"
    assert plan_resume(inventory, out, [LIVER], recompute=True).skipped == {}
    assert len(plan_resume(inventory, out, [LIVER], recompute=True).todo) == 3


def test_any_file_name_has_a_signature_and_a_printable_source(tmp_path: Path) -> None:
    """A name that is not UTF-8 used to crash the signature before any work started."""
    archive = tmp_path / "a"
    make_archive(archive, cases=1, modality="CT", fmt="dicom", seed=0, shape=(16, 16, 4))
    series = discover_cases(archive)[0].image
    weird = series.parent / os.fsdecode(b"M\xfcller \xe9t\xe9")
    series.rename(weird)
    inventory = take_inventory(archive)
    plan = plan_resume(inventory, tmp_path / "out", [LIVER])
    (row,) = plan.todo
    assert row["source"].endswith("M\\xfcller \\xe9t\\xe9") and row["source"].isprintable()
    assert len(row["signature"]) == 64 and row["case_id"].isascii()
