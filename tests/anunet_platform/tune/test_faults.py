"""Tuning under real failures: a driver killed mid-experiment resumes under its ``--name``;
a trial whose process is killed is retried and resumes its training (``FailureConfig``).

Every kill is a real SIGKILL of a real process on a real local Ray cluster, with a real MLflow
SQLite store. Both kills hit one experiment (each costs trials that train): the driver first,
then a trial of the driver that resumed it. The dataset is the package's shared one
(``small_dataset``: 5 synthetic cases at 64 px).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from anunet_platform.tune import METRIC, SearchConfig

REPO = Path(__file__).resolve().parents[3]


def _wait_for(condition: Callable[[], object], what: str, alive: Callable[[], bool], timeout_s: float = 300) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s`` or once ``alive()`` is false."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline or not alive():
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.25)


def _reported_trials(experiment: Path) -> list[Path]:
    """Trial folders of a Tune experiment whose results file holds at least one result."""
    return [f.parent for f in experiment.glob("*/result.json") if f.stat().st_size > 0]


def _checkpoints(train_run: Path) -> int:
    """Checkpoints Ray Train's controller has registered for a training run (its own record)."""
    try:
        return len(json.loads((train_run / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"])
    except (OSError, ValueError, KeyError):
        return 0


def _trial_id(trial: Path) -> str:
    with (trial / "result.json").open() as handle:
        return json.loads(handle.readline())["trial_id"]


def _other_trial(experiment: Path, first: str) -> str | None:
    """The id of a trial other than ``first`` that has reported an epoch whose checkpoint Ray
    Train has registered, once there is one (``None`` until then)."""
    for trial in _reported_trials(experiment):
        try:
            trial_id = _trial_id(trial)
        except (OSError, ValueError, KeyError):  # its first result half written
            continue
        if trial_id != first and _checkpoints(experiment / "train" / f"{experiment.name}-{trial_id}"):
            return trial_id
    return None


def _progress(trial: Path) -> list[dict[str, str]]:
    with (trial / "progress.csv").open() as handle:
        return list(csv.DictReader(handle))


def _our_processes(prefix: str) -> list[int]:
    """Live descendants of this process (its local Ray's workers among them) whose command line
    starts with ``prefix``: Ray titles an actor's process ``ray::<Class>.<method>``."""
    import psutil

    pids = []
    for process in psutil.Process().children(recursive=True):
        try:
            if " ".join(process.cmdline()).startswith(prefix) and process.status() != psutil.STATUS_ZOMBIE:
                pids.append(process.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def test_a_rerun_trial_has_one_dice_per_epoch_in_epoch_order(search) -> None:
    """A trial Tune ran again (a retry, a restored experiment) counts training_iteration from 1
    again and may report an epoch twice (reported, then killed before it was checkpointed): its
    history is one Dice per epoch, the latest, in epoch order."""
    import pandas as pd
    from anunet_platform.tune.job import trial_rows

    from anunet_core.vocabulary import DEPTHS

    dice = [0.1, 0.2, 0.25, 0.3]  # epochs 0, 1, 1 (again, after the restart), 2
    history = pd.DataFrame({"training_iteration": [1, 2, 1, 2], "epoch": [0, 1, 1, 2], METRIC: dice}
                           | {f"val_dice_L{d}": dice for d in DEPTHS})
    result = type("Result", (), {"metrics_dataframe": history, "metrics": {"trial_id": "t_00000"}, "path": "/t",
                                 "config": {"alpha": 0.5, "gamma": 2.0, "learning_rate": 1e-3}, "error": None})
    (row,) = trial_rows([result], search(epochs=3, num_samples=1), {})
    assert row.dice_history == (0.1, 0.25, 0.3) and row.status == "completed" and row.score == 0.3


def test_a_restored_experiment_keeps_its_trials_results_and_times(tmp_path: Path) -> None:
    """Tune alone, in seconds: a trial that reported an epoch, then failed, is run again by the
    restored experiment. Its first result stays in its history (Tune drops it for trials without
    a Tune checkpoint, as ours are: ``KeepTrialResults``), and its new start and end are recorded
    (Tune put the times file back as it was at the restore: ``TrialTimes``' own folder)."""
    import ray
    from anunet_platform.tune.callbacks import KeepTrialResults, TrialTimes, read_trial_times
    from anunet_platform.tune.job import TRIAL_TIMES
    from ray import tune

    def trainable(config) -> None:
        if not (tmp_path / "fixed").exists():
            tune.report({"epoch": 0})
            raise RuntimeError("the first run dies after epoch 0")
        tune.report({"epoch": 1})

    times = tmp_path / "exp" / TRIAL_TIMES
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        tune.Tuner(trainable, run_config=tune.RunConfig(
            name="exp", storage_path=str(tmp_path), callbacks=[KeepTrialResults(), TrialTimes(times)], verbose=0,
        )).fit()
        (first,) = read_trial_times(times).values()
        (tmp_path / "fixed").touch()
        (result,) = tune.Tuner.restore(str(tmp_path / "exp"), trainable=trainable, resume_errored=True).fit()
    finally:
        ray.shutdown()
    assert result.error is None and result.metrics_dataframe["epoch"].tolist() == [0, 1]
    (again,) = read_trial_times(times).values()
    assert again[0] > first[1], "the rerun's start, recorded after the restore"


def _kill_process_tree(process: subprocess.Popen) -> list[int]:
    """SIGKILL a process started in its own session: its process group and every descendant
    (Ray's GCS, raylet, dashboard, workers); returns the pids killed, once all are gone."""
    import psutil

    family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    os.killpg(process.pid, signal.SIGKILL)
    for member in family:  # any that left the group
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=30)
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, f"processes outlived the kill: {alive}"
    return [m.pid for m in family]


@pytest.mark.slow
def test_a_killed_driver_resumes_under_its_name_and_a_killed_trial_is_retried(
    tmp_path: Path, small_dataset: Path, monkeypatch
) -> None:
    """One experiment, two real faults (each used to be a test of its own; together they cost
    one trial start more than the driver's alone).

    The driver: run ``jobs/tune.py`` (its own local Ray) and SIGKILL its whole process tree once
    the first trial has reported its first epoch: the same ``--name`` restores the experiment
    (same trials, same MLflow parent run), resumes the interrupted trial from its checkpoint,
    runs the other, and ends as an experiment never killed does: every trial with a Dice per
    epoch, the report files, one finished child run per trial.

    A trial: once the other trial's first epoch is checkpointed, SIGKILL its own process (Tune's
    function trainable, which runs the TorchTrainer): the restored driver starts the trial again
    (``--max-failures``), its TorchTrainer resumes at the second epoch, and it ends completed,
    one Dice per epoch, in one MLflow child run."""
    import ray
    from anunet_platform.cli import tune_parser
    from anunet_platform.tune import run_tuning
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage, name = tmp_path / "ray_results", "killed"
    experiment = storage / name
    # --grace-period 2: ASHA stops no trial, so none waits on Ray Train's PlacementGroupCleaner,
    # which fails where another Ray cluster runs on the same host (it guesses the cluster)
    argv = ["--data", str(small_dataset), "--num-samples", "2", "--epochs", "2", "--grace-period", "2",
            "--max-concurrent-trials", "1", "--max-failures", "1", "--batch-size", "8", "--name", name,
            "--storage-path", str(storage), "--time-budget-s", "900"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "MLFLOW_TRACKING_URI": uri,
        "TUNE_GLOBAL_CHECKPOINT_S": "1",  # the experiment's state on disk follows its trials closely
    }
    with (tmp_path / "killed-job.log").open("w") as log:
        job = subprocess.Popen([sys.executable, str(REPO / "jobs" / "tune.py"), *argv], env=env,
                               cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Tune has the first epoch's result, Ray Train its checkpoint, and the experiment a state on disk
            _wait_for(lambda: _reported_trials(experiment) and list(experiment.glob("experiment_state-*.json"))
                      and any(_checkpoints(run) for run in experiment.glob("train/*")),
                      "a trial's first epoch", alive=lambda: job.poll() is None)
        finally:
            killed = _kill_process_tree(job)
    assert len(killed) > 3  # the driver, Ray's own processes and the trial's workers
    (first,) = [_trial_id(trial) for trial in _reported_trials(experiment)]
    assert not (experiment / "trials.csv").exists(), "the killed run never got to its report"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # 3 CPUs: a trial (a worker and its input pipeline) fits with one to spare, so the killed trial's
    # retry need not wait for Ray Train's PlacementGroupCleaner to free its workers (it asks the dashboard)
    ray.init(num_cpus=3, include_dashboard=True, logging_level="ERROR")
    try:
        outcome: dict = {}
        config = SearchConfig(**vars(tune_parser().parse_args(argv)))
        tuning = threading.Thread(target=lambda: outcome.setdefault("outcome", run_tuning(config)), daemon=True)
        tuning.start()
        # the other trial: Tune has its first epoch's result, and Ray Train its checkpoint
        _wait_for(lambda: _other_trial(experiment, first), "the other trial's first epoch", alive=tuning.is_alive)
        second = _other_trial(experiment, first)
        victims = _our_processes("ray::ImplicitFunc")  # the trial's process: tune_trial, its TorchTrainer's owner
        assert len(victims) == 1, victims
        os.kill(victims[0], signal.SIGKILL)
        tuning.join(timeout=600)
        assert "outcome" in outcome, "run_tuning did not return"
    finally:
        ray.shutdown()

    outcome = outcome["outcome"]
    report = outcome.report
    assert outcome.trials == 2 and {first, second} == {r.trial_id for r in report.rows}, "the killed experiment, restored"
    for r in report.rows:  # as in a run never killed: each epoch's Dice once, the times of every trial
        assert r.error is None and r.status == "completed" and len(r.dice_history) == 2, r
        assert r.started is not None and r.ended > r.started, r
    assert sum(r.is_default for r in report.rows) == 1 and report.comparison is not None
    assert report.observed_concurrency == 1
    progress = {_trial_id(trial): _progress(trial) for trial in _reported_trials(experiment)}
    # the trial the driver's kill interrupted: epoch 0 before the kill (kept), epoch 1 after, resumed from its checkpoint
    assert [(int(r["epoch"]), int(r["resumed_from_epoch"])) for r in progress[first]] == [(0, 0), (1, 1)]
    # the trial whose process was killed: epoch 0 by its first attempt; epoch 1 by the retry, resumed from
    # the checkpoint of epoch 0, which Tune counts from iteration 1 again (hence EPOCHS_DONE)
    attempts = [(int(r["epoch"]), int(r["resumed_from_epoch"]), int(r["training_iteration"])) for r in progress[second]]
    assert attempts[0] == (0, 0, 1) and attempts[-1] == (1, 1, 1), attempts
    assert [int(r["epochs_done"]) for r in progress[second]][-1] == 2
    for file in ("trials.csv", "trials.md", "dice_alpha_gamma.png"):
        assert (experiment / file).stat().st_size > 0
    with (experiment / "trials.csv").open() as handle:
        assert sorted(line["trial_id"] for line in csv.DictReader(handle)) == sorted(r.trial_id for r in report.rows)
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("anunet-tune").experiment_id
    (parent,) = client.search_runs([experiment_id], filter_string=f"tags.tune_experiment = '{name}'")
    assert parent.info.run_id == outcome.mlflow_parent_run_id, "the killed run's parent run, reopened"
    children = client.search_runs([experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        assert sorted({m.step for m in client.get_metric_history(child.info.run_id, "val_dice")}) == [0, 1]
