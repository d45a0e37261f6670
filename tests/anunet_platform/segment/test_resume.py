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
from anunet_platform.contracts import prediction_path, record_path
from anunet_platform.segment import image_signature, is_done, plan_resume, read_record, write_record

MODEL = "models:/anunet-liver-ct-L2/3"


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


def test_is_done_needs_same_model_preprocessing_source_and_the_mask(tmp_path: Path) -> None:
    mask = _mask(tmp_path / "m.nii.gz")
    record = {"status": "ok", "model_version": MODEL, "signature": "s", "preprocessing_version": PREPROCESSING_VERSION}
    assert is_done(record, MODEL, "s", mask)
    assert not is_done(None, MODEL, "s", mask)
    assert not is_done(record | {"status": "failed"}, MODEL, "s", mask)
    assert not is_done(record, "models:/anunet-liver-ct-L2/4", "s", mask), "a new model version redoes the case"
    assert not is_done(record, MODEL, "other", mask), "a changed scan is redone"
    assert not is_done(record | {"preprocessing_version": "old"}, MODEL, "s", mask)
    assert not is_done(record, MODEL, "s", tmp_path / "gone.nii.gz")
    # a mask another run wrote beside this record (two runs interleaved) is never trusted
    assert not is_done(record, MODEL, "s", _mask(tmp_path / "other.nii.gz", "models:/anunet-liver-ct-L4/9"))
    assert not is_done(record, MODEL, "s", _mask(tmp_path / "unnamed.nii.gz", None))
    (tmp_path / "broken.nii.gz").write_bytes(b"x")
    assert not is_done(record, MODEL, "s", tmp_path / "broken.nii.gz")


def test_records_round_trip_and_an_unreadable_one_is_none(tmp_path: Path) -> None:
    record = {"case_id": "c1", "status": "ok", "organ_ml": 1.5, "error": None}
    path = write_record(record, tmp_path)
    assert path == record_path(tmp_path, "c1") == tmp_path / "records" / "c1.json"
    assert read_record(tmp_path, "c1") == record
    assert read_record(tmp_path, "c2") is None
    path.write_text("{truncated")
    assert read_record(tmp_path, "c1") is None, "a half-written record means: redo the case"


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    make_archive(tmp_path / "a", cases=3, modality="CT", fmt="nifti", seed=0, shape=(16, 16, 4))
    return tmp_path / "a"


def _finish(out: Path, case, model_version: str = MODEL, **changes) -> None:
    """What stage 3 leaves for a finished case: its mask and its record."""
    prediction_path(out, case.case_id).parent.mkdir(parents=True, exist_ok=True)
    _mask(prediction_path(out, case.case_id), model_version)
    write_record({"case_id": case.case_id, "status": "ok", "model_version": model_version, "organ_ml": 2.0,
                  "signature": image_signature(case), "preprocessing_version": PREPROCESSING_VERSION, **changes}, out)


def test_plan_resume_skips_only_the_finished_cases(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    inventory = take_inventory(archive)
    cases = inventory.cases
    _finish(out, cases[0])
    _finish(out, cases[1], status="failed")
    plan = plan_resume(inventory, out, MODEL)
    assert list(plan.skipped) == [cases[0].case_id]
    skipped = plan.skipped[cases[0].case_id]
    assert (skipped["status"], skipped["seconds"], skipped["organ_ml"], skipped["files"]) == ("skipped", 0.0, 2.0, 2)
    assert skipped["source"] == os.path.relpath(cases[0].image, archive)
    assert [row["case_id"] for row in plan.todo] == [c.case_id for c in cases[1:]]
    for row, case in zip(plan.todo, cases[1:], strict=True):
        assert row["signature"] == image_signature(case) and row["seconds"] == 0.0
        assert row["files"] == 2, "the image and its label"
        assert row["source"] == os.path.relpath(case.image, archive) == f"{case.case_id}/image.nii.gz"

    assert plan_resume(inventory, out, "models:/anunet-liver-ct-L2/4").skipped == {}, "another model"
    assert plan_resume(inventory, out, MODEL, recompute=True).skipped == {}
    assert len(plan_resume(inventory, out, MODEL, recompute=True).todo) == 3


def test_any_file_name_has_a_signature_and_a_printable_source(tmp_path: Path) -> None:
    """A name that is not UTF-8 used to crash the signature before any work started."""
    archive = tmp_path / "a"
    make_archive(archive, cases=1, modality="CT", fmt="dicom", seed=0, shape=(16, 16, 4))
    series = discover_cases(archive)[0].image
    weird = series.parent / os.fsdecode(b"M\xfcller \xe9t\xe9")
    series.rename(weird)
    inventory = take_inventory(archive)
    plan = plan_resume(inventory, tmp_path / "out", MODEL)
    (row,) = plan.todo
    assert row["source"].endswith("M\\xfcller \\xe9t\\xe9") and row["source"].isprintable()
    assert len(row["signature"]) == 64 and row["case_id"].isascii()
