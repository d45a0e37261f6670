"""jobs/compare.py end to end: a tiny comparison (2 architectures, 1 epoch, 64 px, 4 cases) on a
real local Ray cluster and a real MLflow store, registered; the same name again (resume); then
the nightly job with the registered baseline."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from testkit import ingest_synthetic_ct

from anunet_core import ANUNet, count_parameters, prune

REPO = Path(__file__).resolve().parents[3]
COMPARISON_COLUMNS = [
    "method", "arch", "depth", "n", "seeds", "cases", "iou_mean", "iou_std", "dice_mean", "dice_std", "precision_mean",
    "precision_std", "recall_mean", "recall_std", "hd95_mm_mean", "hd95_mm_std", "hd95_inf", "assd_mm_mean",
    "assd_mm_std", "assd_inf", "params", "error",
]


def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _env(tmp_path: Path) -> dict[str, str]:
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return env


def _compare(tmp_path: Path, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "jobs/compare.py", "--data", str(data), "--archs", "anunet,unet", "--epochs", "1",
         "--name", "tiny", "--storage-path", str(tmp_path / "store"), "--out", str(tmp_path / "out"),
         "--timed-slices", "32", "--register"],
        cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=1500,
    )


@pytest.mark.slow
def test_a_tiny_comparison_writes_tables_that_match_its_per_case_files(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    data = ingest_synthetic_ct(tmp_path / "data", cases=4, shape=(64, 64, 12), size=64)
    done = _compare(tmp_path, data)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"

    rows = _read(out / "comparison.csv")
    assert list(rows[0]) == COMPARISON_COLUMNS
    assert [r["method"] for r in rows] == ["U-Net", "ANU-Net"]  # the paper's row order
    for row in rows:
        scores = [s for s in _read(out / "evaluation" / f"{row['arch']}-s0.csv") if s["depth"] == "4"]
        assert len(scores) == int(row["n"]) == int(row["cases"]) >= 1 and row["seeds"] == "1" and row["error"] == ""
        assert all(int(s["slices"]) == 12 for s in scores), "test cases are scored on every slice of the volume"
        for metric in ("dice", "iou", "precision", "recall"):
            values = [float(s[metric]) for s in scores]
            assert all(0.0 <= v <= 1.0 for v in values)
            assert float(row[f"{metric}_mean"]) == pytest.approx(float(np.mean(values)), abs=1e-12)
            assert float(row[f"{metric}_std"]) == pytest.approx(float(np.std(values)), abs=1e-12)
        for distance in ("hd95_mm", "assd_mm"):
            values = [float(s[distance]) for s in scores]
            finite = [v for v in values if math.isfinite(v)]
            assert all(v >= 0.0 for v in values) and int(row[distance.replace("_mm", "_inf")]) == len(values) - len(finite)
            assert not finite or float(row[f"{distance}_mean"]) == pytest.approx(float(np.mean(finite)))
    assert {r["arch"]: int(r["params"]) for r in rows} == {"unet": 7_766_369, "anunet": 8_950_594}

    # every depth of ANU-Net scored; U-Net has its one output only
    assert sorted({s["depth"] for s in _read(out / "evaluation" / "anunet-s0.csv")}) == ["1", "2", "3", "4"]
    assert {s["depth"] for s in _read(out / "evaluation" / "unet-s0.csv")} == {"4"}
    table6 = _read(out / "table6.csv")
    assert [(r["arch"], int(r["depth"])) for r in table6] == [("anunet", d) for d in (1, 2, 3, 4)]
    assert [int(r["params"]) for r in table6] == [count_parameters(prune(ANUNet(), d)) for d in (1, 2, 3, 4)]
    assert all(float(r["seconds"]) > 0 and int(r["slices"]) == 2000 for r in table6)
    for r in table6:  # Dice and IoU in %, from the per-case file at that depth
        own = [s for s in _read(out / "evaluation" / "anunet-s0.csv") if s["depth"] == r["depth"]]
        for metric in ("dice", "iou"):
            assert float(r[f"{metric}_mean"]) == pytest.approx(100 * float(np.mean([float(s[metric]) for s in own])))
            assert float(r[f"{metric}_std"]) == pytest.approx(100 * float(np.std([float(s[metric]) for s in own])))
    assert (out / "fig13.png").read_bytes()[:4] == b"\x89PNG"
    text = (out / "comparison.md").read_text()
    assert "| U-Net |" in text and "| ANU-Net |" in text and "## Table 6: pruned ANU-Net" in text
    assert "| ANU-Net |" in done.stdout or "| ANU-Net |" in done.stderr  # the tables are printed

    # MLflow: one parent run with the files, one finished child run per training with its test Dice
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("anunet-compare")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.info.run_name == "tiny"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["arch"] for r in children) == ["anunet", "unet"]
    assert all(r.info.status == "FINISHED" and 0.0 <= r.data.metrics["test_dice"] <= 1.0 for r in children)
    assert {"comparison.md", "comparison.csv", "table6.csv", "fig13.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.metrics["dice_anunet"] == pytest.approx(float(rows[1]["dice_mean"]))
    assert parent.info.status == "FINISHED" and parent.info.end_time >= max(r.info.end_time for r in children)

    # the same name resumes: nothing is trained again, the tables come out the same
    checkpoints = sorted(p for p in (tmp_path / "store" / "tiny" / "train").rglob("checkpoint_*") if p.is_dir())
    again = _compare(tmp_path, data)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming comparison tiny" in again.stdout + again.stderr
    assert sorted(p for p in (tmp_path / "store" / "tiny" / "train").rglob("checkpoint_*") if p.is_dir()) == checkpoints
    assert _read(out / "comparison.csv") == rows
    runs = client.search_runs([experiment.experiment_id])
    assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]) == 2
    resumed = client.get_run(parent.info.run_id)  # reopened by the rerun, and ended again
    assert resumed.info.status == "FINISHED" and resumed.info.end_time > parent.info.end_time

    # registered under each family's names (the same versions after the rerun), tagged with the arch
    names = {m.name: m for m in client.search_registered_models()}
    assert set(names) == {"anunet-liver-ct-L1", "anunet-liver-ct-L2", "anunet-liver-ct-L3", "anunet-liver-ct-L4",
                          "unet-liver-ct"}
    for name in names:
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) == 1, name
        assert versions[0].tags["arch"] == name.split("-")[0]
    unet = client.get_model_version("unet-liver-ct", "1")
    assert unet.tags["depth"] == "4" and int(unet.tags["params"]) == 7_766_369 and "exit_tau" not in unet.tags
    assert any(k.startswith("qc_") for k in unet.tags)  # QC thresholds from its one head

    # the nightly job runs the registered baseline (its one depth)
    segmented = subprocess.run(
        [sys.executable, "jobs/segment.py", "--archive", str(tmp_path / "data" / "archive"), "--out",
         str(tmp_path / "seg"), "--model", "unet-liver-ct", "--allow-unpromoted"],
        cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=900,
    )
    assert segmented.returncode == 0, segmented.stdout[-3000:] + segmented.stderr[-3000:]
    import pyarrow.parquet as pq

    manifest = pq.read_table(tmp_path / "seg" / "manifest.parquet").to_pylist()
    assert len(manifest) == 4 and {r["status"] for r in manifest} == {"ok"}
    assert {r["model_version"] for r in manifest} == {"models:/unet-liver-ct/1"} and {r["depth"] for r in manifest} == {4}
    assert all((tmp_path / "seg" / "masks" / f"{r['case_id']}.nii.gz").is_file() for r in manifest)

    # and evaluate scores the baseline's masks like any family's
    evaluated = subprocess.run(
        [sys.executable, "jobs/evaluate.py", "--pred", str(tmp_path / "seg"), "--labels", str(tmp_path / "data" / "archive"),
         "--organ", "liver", "--modality", "CT"],
        cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    scored = pq.read_table(tmp_path / "seg" / "evaluation.parquet").to_pylist()
    assert sorted(r["case_id"] for r in scored) == sorted(r["case_id"] for r in manifest)
    assert all(r["status"] == "ok" and 0.0 <= r["dice"] <= 1.0 for r in scored)
