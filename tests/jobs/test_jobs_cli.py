"""The job entrypoints: --help works, flags are the contract of DESIGN.md, bad input is one line."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anunet_platform.cli import JOB_TARGETS, PARSERS, _default, run_job
from anunet_platform.contracts import FailedFractionExceeded

REPO = Path(__file__).resolve().parents[2]


def run(job: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("job", sorted(PARSERS))
def test_every_job_has_help_and_a_parser(job: str) -> None:
    assert (REPO / "jobs" / f"{job}.py").is_file()
    result = run(job, "--help", timeout=60)
    assert result.returncode == 0 and "usage:" in result.stdout


def _target_names(target) -> set[str]:
    if dataclasses.is_dataclass(target):
        return {f.name for f in dataclasses.fields(target)}
    return set(inspect.signature(target).parameters)


#: Where a flag's dest and its target's name differ on purpose (jobs/make_synthetic.py maps them).
_RENAMED = {("make_synthetic", "format"): "fmt", ("make_synthetic", "out"): "out_dir"}
_AUTO_IS_NONE = {("make_synthetic", "layout")}


@pytest.mark.parametrize("job", sorted(PARSERS))
def test_flags_fill_the_jobs_config_with_its_defaults(job: str) -> None:
    """Every flag is a field of the job's typed config (or a parameter of its function), and an
    optional flag's default is that field's: each default is written once."""
    assert set(JOB_TARGETS) == set(PARSERS)
    target = JOB_TARGETS[job]
    names = _target_names(target)
    actions = [a for a in PARSERS[job]()._actions if a.dest != "help"]
    assert actions, job
    for action in actions:
        name = _RENAMED.get((job, action.dest), action.dest)
        assert name in names, f"{job}: --{action.dest} is not a field of {target.__name__}"
        if action.required:
            continue
        expected = _default(target, name)
        if (job, action.dest) in _AUTO_IS_NONE:
            assert action.default == "auto" and expected is None
        else:
            assert action.default == expected, f"{job}: --{action.dest} defaults to {action.default!r}, {target.__name__} to {expected!r}"


@pytest.mark.parametrize(
    "error,code,line",
    [
        (None, 0, ""),
        (ValueError("--archive A is not a folder"), 2, "jobs/segment.py: error: --archive A is not a folder"),
        (FailedFractionExceeded("3 of 10 cases failed (30.0%), above --max-failed-fraction 0.05"), 1,
         "jobs/segment.py: 3 of 10 cases failed (30.0%), above --max-failed-fraction 0.05"),
    ],
)
def test_exit_codes_of_every_job(error, code: int, line: str, capsys: pytest.CaptureFixture) -> None:
    """0 done; 1 ran but too many cases failed (outputs written); 2 bad input: one line each."""

    def action(args) -> None:
        if error is not None:
            raise error

    argv = ["--archive", "A", "--out", "O", "--model", "anunet-liver-ct"]
    assert run_job(PARSERS["segment"](), action, argv) == code
    assert capsys.readouterr().err.strip() == line


def test_a_changed_config_default_changes_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parsers read the defaults when they are built: nothing is copied."""
    from anunet_platform.segment import SegmentConfig

    field = {f.name: f for f in dataclasses.fields(SegmentConfig)}["max_dice_drop"]
    monkeypatch.setattr(field, "default", 0.05)
    assert PARSERS["segment"]().parse_args(["--archive", "A", "--out", "O", "--model", "m"]).max_dice_drop == 0.05


@pytest.mark.parametrize(
    "job,argv",
    [
        ("make_synthetic", ["--out", "D", "--cases", "3", "--modality", "CT", "--format", "nifti"]),
        ("make_synthetic", ["--out", "D", "--cases", "3", "--modality", "MR", "--format", "dicom"]),
        ("ingest", ["--source", "A", "--out", "D", "--organ", "liver", "--modality", "CT"]),
        ("ingest", ["--source", "A", "--out", "D", "--organ", "kidney", "--modality", "MR", "--layout", "chaos", "--label-values", "2,3", "--size", "128"]),
        ("demo", []),
        ("demo", ["--workdir", "W"]),
        ("demo", ["--workdir", "W", "--cases", "4", "--epochs", "1", "--size", "32"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "anunet-liver-ct"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "anunet-liver-ct", "--depth", "auto", "--max-dice-drop", "0.01"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "anunet-kidney-mr", "--depth", "3", "--use-gpu", "--batch-size", "64"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "anunet-liver-ct", "--latency-budget-ms", "20", "--num-actors", "2"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "anunet-liver-ct", "--max-failed-fraction", "0.05", "--allow-unpromoted"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "unet-liver-ct"]),
        ("train", ["--data", "D", "--epochs", "1", "--num-workers", "1", "--arch", "unetpp"]),
        ("compare", ["--data", "D", "--archs", "all", "--epochs", "3"]),
        ("compare", ["--data", "D", "--archs", "anunet,unet", "--epochs", "3", "--seeds", "2", "--register", "--name", "n"]),
    ],
)
def test_design_contract_flags_parse(job: str, argv: list[str]) -> None:
    PARSERS[job]().parse_args(argv)


@pytest.mark.parametrize(
    "job,argv",
    [
        ("make_synthetic", ["--out", "D", "--cases", "0", "--modality", "CT", "--format", "nifti"]),
        ("make_synthetic", ["--out", "D", "--cases", "2", "--modality", "PET", "--format", "nifti"]),
        ("ingest", ["--source", "A", "--out", "D", "--organ", "heart", "--modality", "CT"]),
        ("ingest", ["--source", "A", "--out", "D", "--organ", "liver", "--modality", "CT", "--label-values", "x"]),
        ("segment", ["--archive", "A", "--out", "O"]),
        ("train", ["--data", "D", "--epochs", "1", "--num-workers", "1", "--storage-path", "s3://bucket/ray"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "anunet-liver-ct", "--depth", "5"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "anunet-liver-ct", "--depth", "0"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "anunet-liver-ct", "--max-dice-drop", "1.5"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "anunet-liver-ct", "--latency-budget-ms", "0"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "anunet-liver-ct", "--batch-size", "0"]),
        ("segment", ["--archive", "A", "--out", "O", "--model", "anunet-liver-ct", "--max-failed-fraction", "1.5"]),
        ("train", ["--data", "D", "--epochs", "1", "--num-workers", "1", "--arch", "vnet"]),
        ("compare", ["--data", "D", "--epochs", "0"]),
        ("compare", ["--archs", "all", "--epochs", "1"]),
    ],
)
def test_bad_flags_are_refused(job: str, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        PARSERS[job]().parse_args(argv)
    assert exit_info.value.code == 2


@pytest.mark.parametrize("fmt,expected", [("nifti", "image.nii.gz"), ("dicom", "dicom")])
def test_make_synthetic_writes_a_readable_archive(tmp_path: Path, fmt: str, expected: str) -> None:
    result = run("make_synthetic", "--out", str(tmp_path / "a"), "--cases", "2", "--modality", "CT", "--format", fmt, "--seed", "3")
    assert result.returncode == 0, result.stderr
    cases = sorted((tmp_path / "a").iterdir())
    assert [c.name for c in cases] == ["case_0000", "case_0001"]
    assert all((c / expected).exists() and (c / "labels.nii.gz").is_file() for c in cases)
    labels = np.asarray(nib.load(cases[0] / "labels.nii.gz").dataobj)
    assert (labels == 5).any(), "the liver is labelled"


def test_ingest_of_an_empty_archive_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run("ingest", "--source", str(tmp_path / "empty"), "--out", str(tmp_path / "ds"), "--organ", "liver", "--modality", "CT")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("jobs/ingest.py: error:") and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "ds").exists()


@pytest.mark.slow
def test_demo_runs_the_chain_end_to_end(tmp_path: Path, monkeypatch) -> None:
    """The main job, shrunk: synthetic archive -> ingest -> Ray Train -> registry -> promote."""
    import json

    import ray

    from anunet_platform import registry
    from anunet_platform.demo import DemoConfig, run_demo
    from anunet_platform.registry import load_registered
    from anunet_platform.selection import DepthPolicy, candidates_from_registry, choose_depth

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        report = run_demo(DemoConfig(workdir=tmp_path / "demo", cases=4, volume_shape=(64, 64, 16), size=32, epochs=2))
    finally:
        ray.shutdown()
    assert [d.depth for d in report.depths] == [1, 2, 3, 4]
    assert [d.params for d in report.depths] == [103_812, 513_387, 2_191_829, 8_950_594]
    assert [d.model for d in report.depths] == [f"anunet-liver-ct-L{d}" for d in (1, 2, 3, 4)]
    production = registry.production_depths("liver", "CT", uri=report.tracking_uri)
    assert [d.val_dice for d in report.depths] == [production[d.depth].val_dice for d in report.depths]
    assert all(d.latency_ms_per_slice > 0 for d in report.depths)
    assert report.tracking_uri == f"sqlite:///{tmp_path / 'demo' / 'mlflow.db'}"
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved["dataset_checksum"] == report.dataset_checksum and saved["mlflow_run_id"] == report.mlflow_run_id
    model, version = load_registered("anunet-liver-ct-L2", alias="production", uri=report.tracking_uri)
    assert model.depth == 2 and version.run_id == report.mlflow_run_id
    assert (tmp_path / "demo" / "dataset" / "summary.json").is_file() and (tmp_path / "demo" / "ray_results").is_dir()
    # the nightly job on the new scans, at the depth the policy chose, and their evaluation
    import pyarrow.parquet as pq

    manifest = pq.read_table(tmp_path / "demo" / "segmentations" / "manifest.parquet").to_pylist()
    assert [r["status"] for r in manifest] == ["ok"] * 3 and report.segmented_cases == 3
    expected = choose_depth(candidates_from_registry(production), DepthPolicy())
    assert {r["depth"] for r in manifest} == {report.segment_depth} == {expected.depth}
    assert {r["model_version"] for r in manifest} == {f"models:/anunet-liver-ct-L{report.segment_depth}/1"}
    evaluation = pq.read_table(tmp_path / "demo" / "segmentations" / "evaluation.parquet").to_pylist()
    assert [r["status"] for r in evaluation] == ["ok"] * 3
    assert report.incoming_dice == pytest.approx(sum(r["dice"] for r in evaluation) / 3, abs=1e-12)
    assert (tmp_path / "demo" / "segmentations" / "evaluation.csv").is_file()
