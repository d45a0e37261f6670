"""The MLflow runs of training and tuning (registry.tracking), against a real SQLite store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from anunet_platform.registry import tracking


@pytest.fixture
def mlflow_client(sqlite_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=sqlite_uri)


def test_a_training_run_is_created_once_and_reopened_by_its_ray_run_name(sqlite_uri: str, mlflow_client) -> None:
    params = {"epochs": 2, "alpha": 0.5, "data": Path("/d")}
    run_id = tracking.start_training_run("anunet", "run-a", "sha256-x", params, uri=sqlite_uri)
    run = mlflow_client.get_run(run_id)
    assert run.info.run_name == "run-a" and run.info.status == "RUNNING"
    assert run.data.tags["ray_run_name"] == "run-a" and run.data.tags["dataset"] == "sha256-x"
    assert run.data.params == {"epochs": "2", "alpha": "0.5", "data": "/d"}
    experiment = mlflow_client.get_experiment(run.info.experiment_id)
    assert experiment.name == "anunet"

    # a resumed run (same name): the same MLflow run, its parameters not logged again (they would clash)
    again = tracking.start_training_run("anunet", "run-a", "sha256-x", params | {"epochs": 4}, uri=sqlite_uri)
    assert again == run_id and mlflow_client.get_run(run_id).data.params["epochs"] == "2"
    other = tracking.start_training_run("anunet", "run-b", "sha256-x", params, uri=sqlite_uri)
    assert other != run_id


def test_epoch_metrics_are_one_batch_per_epoch_stepped_by_epoch(sqlite_uri: str, mlflow_client) -> None:
    run_id = tracking.start_training_run("anunet", "run-m", "sha256-x", {}, uri=sqlite_uri)
    for epoch, dice in enumerate((0.25, 0.5, 0.75)):
        tracking.log_epoch_metrics(run_id, {"epoch": epoch, "val_dice": dice, "train_loss": 1.0 - dice}, epoch,
                                   uri=sqlite_uri)
    history = mlflow_client.get_metric_history(run_id, "val_dice")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 0.25), (1, 0.5), (2, 0.75)]
    assert "epoch" not in mlflow_client.get_run(run_id).data.metrics, "the epoch is the step, not a metric"
    assert mlflow_client.get_run(run_id).data.metrics["train_loss"] == 0.25


def test_a_checkpoint_is_logged_under_checkpoint(sqlite_uri: str, mlflow_client, tmp_path: Path) -> None:
    run_id = tracking.start_training_run("anunet", "run-c", "sha256-x", {}, uri=sqlite_uri)
    folder = tmp_path / "checkpoint_000001"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"weights")
    (folder / "state.json").write_text('{"epoch": 1}')
    tracking.log_checkpoint(run_id, folder, uri=sqlite_uri)
    assert sorted(a.path for a in mlflow_client.list_artifacts(run_id, "checkpoint")) == [
        "checkpoint/model.pt", "checkpoint/state.json"
    ]


def test_finish_run_sets_status_and_end_time(sqlite_uri: str, mlflow_client) -> None:
    run_id = tracking.start_training_run("anunet", "run-f", "sha256-x", {}, uri=sqlite_uri)
    ended = time.time() - 60
    tracking.finish_run(run_id, "FAILED", end_time_s=ended, uri=sqlite_uri)
    info = mlflow_client.get_run(run_id).info
    assert info.status == "FAILED" and info.end_time == int(ended * 1000)


def test_trial_runs_nest_under_the_tuning_run_and_are_closed_by_verdict(sqlite_uri: str, mlflow_client) -> None:
    experiment_id, parent = tracking.start_tuning_run("anunet-tune", "tune-x", "sha256-x", uri=sqlite_uri)
    assert tracking.start_tuning_run("anunet-tune", "tune-x", "sha256-x", uri=sqlite_uri) == (experiment_id, parent)
    children = {
        trial: tracking.start_trial_run(experiment_id, parent, trial, f"tune-x-{trial}", {"alpha": 0.5, "gamma": 2.0},
                                        uri=sqlite_uri)
        for trial in ("t1", "t2", "t3", "t4")
    }
    # a restored experiment reruns a trial: its run is reopened, not duplicated
    assert tracking.start_trial_run(experiment_id, parent, "t1", "tune-x-t1", {"alpha": 0.5, "gamma": 2.0},
                                    uri=sqlite_uri) == children["t1"]
    child = mlflow_client.get_run(children["t2"])
    assert child.data.tags["mlflow.parentRunId"] == parent and child.data.tags["tune_trial_id"] == "t2"
    assert child.data.tags["ray_run_name"] == "tune-x-t2" and child.info.run_name == "trial-t2"
    assert child.data.params == {"alpha": "0.5", "gamma": "2.0"}

    tracking.finish_run(children["t1"], uri=sqlite_uri)  # the trial ended its own run
    now = time.time()
    closed = tracking.close_trial_runs(
        experiment_id, parent, {"t1": (False, now), "t2": (False, now - 5), "t3": (True, None)}, uri=sqlite_uri
    )
    assert sorted(closed) == sorted([children["t2"], children["t3"]])
    status = {trial: mlflow_client.get_run(run_id).info for trial, run_id in children.items()}
    assert status["t1"].status == "FINISHED" and status["t2"].status == "FINISHED" and status["t3"].status == "FAILED"
    assert status["t2"].end_time == int((now - 5) * 1000)
    assert status["t4"].status == "RUNNING", "a trial without a verdict is left alone"
    assert mlflow_client.get_run(parent).info.status == "RUNNING"


def test_run_summary_tags_metrics_and_files(sqlite_uri: str, mlflow_client, tmp_path: Path) -> None:
    _, parent = tracking.start_tuning_run("anunet-tune", "tune-s", "sha256-x", uri=sqlite_uri)
    table = tmp_path / "trials.md"
    table.write_text("| trial |\n")
    tracking.log_run_summary(parent, tags={"best_alpha": 0.25}, metrics={"best_val_dice": 0.875}, files=[table],
                             uri=sqlite_uri)
    run = mlflow_client.get_run(parent)
    assert run.data.tags["best_alpha"] == "0.25" and run.data.metrics["best_val_dice"] == 0.875
    assert [a.path for a in mlflow_client.list_artifacts(parent)] == ["trials.md"]
