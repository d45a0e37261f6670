"""Evaluation of segmentation masks against labels: per-case metrics, Parquet/CSV, the job."""

from __future__ import annotations

import math
import runpy
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from anunet_core import metrics
from anunet_core.archives import discover_cases, load_case
from anunet_core.io import Volume, write_mask
from anunet_core.synthetic import make_archive
from anunet_platform.cli import PARSERS, evaluate_parser
from anunet_platform.contracts import prediction_path
from anunet_platform.evaluate import (
    EVALUATION_SCHEMA,
    CaseEvaluation,
    evaluate,
    evaluation_table,
    rows_to_table,
    run_evaluate,
    summarize,
    write_evaluation,
)

REPO = Path(__file__).resolve().parents[2]
SHAPE = (48, 48, 12)


def _archive(root: Path, fmt: str) -> Path:
    make_archive(root, cases=2, modality="CT", fmt=fmt, shape=SHAPE)
    return root


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("archives")
    return {"pairs": _archive(base / "pairs", "nifti"), "dicom": _archive(base / "dicom", "dicom")}


def _truth(archive: Path) -> dict[str, tuple[Volume, np.ndarray]]:
    return {c.case_id: load_case(c, "liver", "CT") for c in discover_cases(archive, require_labels=True)}


def _expected(pred: np.ndarray, truth: np.ndarray, image: Volume) -> dict[str, float]:
    """The metrics computed directly on the full arrays (no cropping, no I/O)."""
    c = metrics.confusion_counts(torch.from_numpy(pred > 0), torch.from_numpy(truth > 0), per="volume")
    return {
        "dice": float(metrics.dice(c)),
        "iou": float(metrics.iou(c)),
        "precision": float(metrics.precision(c)),
        "recall": float(metrics.recall(c)),
        "hd95_mm": metrics.hausdorff_distance_95(pred, truth, image.spacing),
    }


def test_schema_matches_the_row_dataclass() -> None:
    assert EVALUATION_SCHEMA.names == [f.name for f in fields(CaseEvaluation)]


@pytest.mark.parametrize("layout", ["pairs", "dicom"])
def test_ground_truth_as_prediction_scores_perfectly(tmp_path: Path, archives: dict[str, Path], layout: str) -> None:
    truth = _truth(archives[layout])
    for case_id, (image, mask) in truth.items():
        write_mask(mask, image, prediction_path(tmp_path, case_id))
    rows = evaluate(tmp_path, archives[layout], "liver", modality="CT")
    assert [r.case_id for r in rows] == sorted(truth)
    for r in rows:
        image, mask = truth[r.case_id]
        assert r.status == "ok" and r.error is None
        assert (r.dice, r.iou, r.precision, r.recall, r.hd95_mm) == (1.0, 1.0, 1.0, 1.0, 0.0)
        voxel_ml = float(np.prod(image.spacing)) / 1000
        assert r.organ_voxels_true == r.organ_voxels_pred == int(mask.sum()) > 0
        assert r.organ_ml_true == pytest.approx(mask.sum() * voxel_ml) and r.organ_ml_pred == r.organ_ml_true
        assert r.prediction == f"masks/{r.case_id}.nii.gz"
        assert r.source is not None and not Path(r.source).is_absolute()
    # DICOM (and CT-tagged) archives need no --modality
    assert evaluate(tmp_path, archives[layout], "liver") == rows


def test_shifted_and_eroded_masks_match_the_metrics_computed_directly(tmp_path: Path, archives: dict[str, Path]) -> None:
    from scipy import ndimage

    truth = _truth(archives["pairs"])
    (id0, (image0, mask0)), (id1, (image1, mask1)) = sorted(truth.items())
    assert not mask0[:2].any()  # so a roll by -2 along i moves the organ without wrapping it around
    shifted = np.roll(mask0, -2, axis=0)  # 2 voxels of 3 mm along i
    eroded = ndimage.binary_erosion(mask1, iterations=1).astype(np.uint8)
    write_mask(shifted, image0, prediction_path(tmp_path, id0))
    write_mask(eroded, image1, prediction_path(tmp_path, id1))

    rows = {r.case_id: r for r in evaluate(tmp_path, archives["pairs"], "liver", modality="CT")}
    for case_id, pred, (image, mask) in ((id0, shifted, truth[id0]), (id1, eroded, truth[id1])):
        row, want = rows[case_id], _expected(pred, mask, image)
        assert row.status == "ok"
        for key, value in want.items():
            assert getattr(row, key) == pytest.approx(value, rel=1e-12, abs=1e-12), key
        assert 0 < row.dice < 1 and 0 < row.iou < row.dice
        assert row.organ_voxels_pred == int(pred.sum())
    # hand-checkable: a pure shift keeps the volume, so precision == recall; erosion keeps
    # precision at 1 and loses recall; a 2-voxel shift along 3 mm voxels is about 6 mm at the top
    assert rows[id0].precision == pytest.approx(rows[id0].recall)
    assert rows[id0].hd95_mm == pytest.approx(6.0, abs=1.5)
    assert rows[id1].precision == 1.0 and rows[id1].recall < 1.0
    assert 0 < rows[id1].hd95_mm < 10.0  # about a voxel (3 x 3 x 5 mm; thin parts vanish under erosion)


def test_empty_prediction_gives_zero_overlap_and_infinite_hd95(tmp_path: Path, archives: dict[str, Path]) -> None:
    truth = _truth(archives["pairs"])
    (id0, (image0, mask0)), (id1, (image1, mask1)) = sorted(truth.items())
    write_mask(np.zeros_like(mask0), image0, prediction_path(tmp_path, id0))
    write_mask(mask1, image1, prediction_path(tmp_path, id1))
    rows = evaluate(tmp_path, archives["pairs"], "liver", modality="CT")
    assert (rows[0].dice, rows[0].recall, rows[0].hd95_mm) == (0.0, 0.0, math.inf)
    summary = summarize(rows)
    assert summary["hd95_infinite"] == 1 and summary["hd95_mm"] == 0.0 and summary["dice"] == pytest.approx(0.5)
    table = evaluation_table(rows)
    assert "HD95 mean over 1 finite values; 1 case(s) have an infinite HD95" in table
    assert " inf " in table


def test_missing_corrupt_and_misplaced_predictions_are_rows(tmp_path: Path, archives: dict[str, Path]) -> None:
    make_archive(tmp_path / "labels", cases=4, modality="CT", fmt="nifti", shape=SHAPE)
    truth = _truth(tmp_path / "labels")
    ids = sorted(truth)
    pred = tmp_path / "pred"
    # case 0: fine; case 1: no prediction; case 2: corrupt file; case 3: wrong shape
    image, mask = truth[ids[0]]
    write_mask(mask, image, prediction_path(pred, ids[0]))
    prediction_path(pred, ids[2]).write_bytes(b"not a nifti file at all\n" * 10)
    image3, _ = truth[ids[3]]
    small = Volume(np.zeros((48, 48, 10), np.float32), image3.affine, "CT", ids[3])
    write_mask(np.zeros((48, 48, 10), np.uint8), small, prediction_path(pred, ids[3]))

    rows = {r.case_id: r for r in evaluate(pred, tmp_path / "labels", "liver", modality="CT")}
    assert [rows[i].status for i in ids] == ["ok", "missing", "failed", "failed"]
    assert rows[ids[1]].error == f"no prediction masks/{ids[1]}.nii.gz" and rows[ids[1]].dice is None
    for i in ids[2:]:
        assert "\n" not in rows[i].error and rows[i].dice is None and rows[i].hd95_mm is None
    assert "cannot read NIfTI" in rows[ids[2]].error and f"{ids[2]}.nii.gz" in rows[ids[2]].error
    assert rows[ids[3]].error == (
        f"masks/{ids[3]}.nii.gz: prediction is 48x48x10 voxels but the scan is 48x48x12 "
        f"(not written in the scan's geometry)"
    )
    summary = summarize(list(rows.values()))
    assert (summary["ok"], summary["missing"], summary["failed"]) == (1, 1, 2)
    assert summary["dice"] == 1.0


def test_prediction_with_another_affine_fails(tmp_path: Path, archives: dict[str, Path]) -> None:
    truth = _truth(archives["pairs"])
    for case_id, (image, mask) in truth.items():
        affine = image.affine.copy()
        affine[0, 3] += 2.5  # 2.5 mm off
        write_mask(mask, Volume(image.array, affine, "CT", case_id), prediction_path(tmp_path, case_id))
    rows = evaluate(tmp_path, archives["pairs"], "liver", modality="CT")
    assert {r.status for r in rows} == {"failed"}
    assert all("prediction affine differs from the scan's by up to 2.5 mm" in r.error for r in rows)


def test_unreadable_label_is_a_failed_row(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    make_archive(labels, cases=2, modality="CT", fmt="nifti", shape=SHAPE)
    truth = _truth(labels)
    for case_id, (image, mask) in truth.items():
        write_mask(mask, image, prediction_path(tmp_path / "pred", case_id))
    bad = discover_cases(labels)[1]
    bad.label.write_bytes(b"\x00" * 100)
    rows = evaluate(tmp_path / "pred", labels, "liver", modality="CT")
    assert [r.status for r in rows] == ["ok", "failed"]
    assert "labels.nii.gz" in rows[1].error and "\n" not in rows[1].error


def test_manifest_adds_depth_and_the_segment_failure(tmp_path: Path, archives: dict[str, Path]) -> None:
    truth = _truth(archives["pairs"])
    ids = sorted(truth)
    image, mask = truth[ids[0]]
    write_mask(mask, image, prediction_path(tmp_path, ids[0]))
    manifest = pa.table(
        {
            "case_id": ids,
            "status": ["ok", "failed"],
            "error": [None, "corrupt DICOM file"],
            "depth": [2, 2],
            "model_version": ["3", "3"],
        }
    )
    pq.write_table(manifest, tmp_path / "manifest.parquet")
    rows = evaluate(tmp_path, archives["pairs"], "liver", modality="CT")
    assert [(r.depth, r.model_version) for r in rows] == [(2, "3"), (2, "3")]
    assert rows[1].status == "missing" and rows[1].error.endswith("(segment failed: corrupt DICOM file)")
    assert "ANU-Net L2 mean (1 ok)" in evaluation_table(rows)
    # an unreadable manifest is ignored
    (tmp_path / "manifest.parquet").write_bytes(b"junk")
    assert [r.depth for r in evaluate(tmp_path, archives["pairs"], "liver", modality="CT")] == [None, None]


def test_parquet_and_csv_agree(tmp_path: Path, archives: dict[str, Path]) -> None:
    truth = _truth(archives["pairs"])
    ids = sorted(truth)
    image, mask = truth[ids[0]]
    write_mask(np.roll(mask, 1, axis=1), image, prediction_path(tmp_path, ids[0]))
    image, mask = truth[ids[1]]
    write_mask(np.zeros_like(mask), image, prediction_path(tmp_path, ids[1]))  # HD95 inf
    rows = evaluate(tmp_path, archives["pairs"], "liver", modality="CT") + [
        CaseEvaluation(case_id="zz", status="missing", error='no prediction, "quoted", comma')
    ]
    parquet, csv = write_evaluation(rows, tmp_path / "report")
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["evaluation.csv", "evaluation.parquet"]
    from_parquet = pq.read_table(parquet)
    assert from_parquet.schema.equals(EVALUATION_SCHEMA, check_metadata=False)
    assert from_parquet.to_pylist() == rows_to_table(rows).to_pylist()
    from_csv = pacsv.read_csv(
        csv, convert_options=pacsv.ConvertOptions(column_types=EVALUATION_SCHEMA, strings_can_be_null=True)
    )
    assert from_csv.column_names == EVALUATION_SCHEMA.names
    for a, b in zip(from_parquet.to_pylist(), from_csv.to_pylist()):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float):
                assert b[key] == pytest.approx(a[key], rel=1e-12), key
            else:
                assert a[key] == b[key], key
    assert math.isinf(from_csv.column("hd95_mm")[1].as_py())


def test_bad_prediction_folder_and_archive_raise_value_error(tmp_path: Path, archives: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="no such prediction folder"):
        evaluate(tmp_path / "nope", archives["pairs"], "liver")
    with pytest.raises(ValueError, match="no such archive folder"):
        evaluate(tmp_path, tmp_path / "nope", "liver")
    with pytest.raises(ValueError, match="organ"):
        evaluate(tmp_path, archives["pairs"], "heart")
    make_archive(tmp_path / "lits", cases=1, modality="CT", fmt="nifti", layout="lits", shape=SHAPE)
    with pytest.raises(ValueError, match="LiTS labels only the liver"):
        evaluate(tmp_path, tmp_path / "lits", "spleen")
    # no masks folder at all: every case missing, no crash
    rows = evaluate(tmp_path, archives["pairs"], "liver", modality="CT")
    assert {r.status for r in rows} == {"missing"}
    assert "0 ok, 2 missing, 0 failed" in evaluation_table(rows)


def test_run_evaluate_prints_the_table_and_writes_to_pred_by_default(
    tmp_path: Path, archives: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    truth = _truth(archives["dicom"])
    for case_id, (image, mask) in truth.items():
        write_mask(mask, image, prediction_path(tmp_path, case_id))
    rows = run_evaluate(tmp_path, archives["dicom"], "liver", modality="CT")
    out = capsys.readouterr().out
    assert (tmp_path / "evaluation.parquet").is_file() and (tmp_path / "evaluation.csv").is_file()
    assert "IoU(%)" in out and "Dice (%)" in out and "Precision" in out and "Recall" in out and "HD95 (mm)" in out
    for r in rows:
        assert f"{r.case_id}" in out
    mean_line = next(line for line in out.splitlines() if line.startswith("ANU-Net mean (2 ok)"))
    assert mean_line.split()[4:9] == ["100.00", "100.00", "1.0000", "1.0000", "0.00"]


def test_evaluate_flags() -> None:
    assert PARSERS["evaluate"] is evaluate_parser
    args = evaluate_parser().parse_args(["--pred", "P", "--labels", "L", "--organ", "kidney"])
    assert vars(args) == {
        "pred": Path("P"), "labels": Path("L"), "organ": "kidney", "modality": None,
        "layout": "auto", "label_values": None, "out": None, "pseudonymize": False,
    }
    args = evaluate_parser().parse_args(
        ["--pred", "P", "--labels", "L", "--organ", "liver", "--modality", "mr", "--layout", "chaos",
         "--label-values", "2,3", "--out", "O", "--pseudonymize"]
    )
    assert (args.modality, args.layout, args.label_values, args.out) == ("MR", "chaos", (2, 3), Path("O"))
    assert args.pseudonymize
    for bad in (["--pred", "P", "--labels", "L"], ["--pred", "P", "--organ", "liver"],
                ["--pred", "P", "--labels", "L", "--organ", "heart"]):
        with pytest.raises(SystemExit):
            evaluate_parser().parse_args(bad)


def _job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / "evaluate.py"), *args], check=False, capture_output=True, text=True, timeout=120
    )


def test_job_prints_the_table_and_exits_0(tmp_path: Path, archives: dict[str, Path]) -> None:
    truth = _truth(archives["pairs"])
    case_id, (image, mask) = min(truth.items())
    write_mask(mask, image, prediction_path(tmp_path / "pred", case_id))
    result = _job("--pred", str(tmp_path / "pred"), "--labels", str(archives["pairs"]), "--organ", "liver",
                  "--modality", "CT", "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    assert "IoU(%)" in result.stdout and f"{case_id}" in result.stdout and "missing: no prediction" in result.stdout
    assert "2 cases: 1 ok, 1 missing, 0 failed" in result.stdout
    assert pq.read_table(tmp_path / "report" / "evaluation.parquet").num_rows == 2


def test_job_exits_2_with_one_line_on_a_missing_labels_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # the script itself, run in this interpreter (a second interpreter would only add torch's
    # import time; the subprocess test above covers the process boundary)
    (tmp_path / "pred").mkdir()
    argv = ["jobs/evaluate.py", "--pred", str(tmp_path / "pred"), "--labels", str(tmp_path / "nope"), "--organ", "liver"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "jobs" / "evaluate.py"), run_name="__main__")
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"jobs/evaluate.py: error: {tmp_path / 'nope'}: no such archive folder"]
    assert not (tmp_path / "pred" / "evaluation.parquet").exists()
