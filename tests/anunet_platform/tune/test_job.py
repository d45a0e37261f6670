"""Tests of anunet_platform.tune.job: whole experiments on a real local Ray cluster and MLflow."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import pytest

from anunet_platform.tune import SearchConfig
from testkit import running_mlflow_server

from anunet_core.vocabulary import DEPTHS


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_more_trials_than_fit_finish_one_at_a_time_on_two_cpus(tmp_path: Path, small_dataset: Path, monkeypatch) -> None:
    """Today's hang, reproduced: 3 trials on a 2-CPU cluster where one trial (1 worker CPU +
    1 for its input pipeline) fills it (3, not more: each trial costs about a minute of CI). Before the fix every trial started at once and no
    epoch ever finished; the time budget turns a hang into a failure here."""
    import ray
    from anunet_platform.tune import run_tuning
    from mlflow.tracking import MlflowClient

    records = _Records()
    for name in ("ray.tune", "ray", ""):
        logging.getLogger(name).addHandler(records)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    ray.init(num_cpus=2, include_dashboard=True, logging_level="ERROR")  # Train's PlacementGroupCleaner asks it
    try:
        config = SearchConfig(data=small_dataset, num_samples=3, epochs=1, batch_size=8, name="three-on-two",
                              storage_path=tmp_path / "ray_results", time_budget_s=1200)
        outcome = run_tuning(config)
    finally:
        ray.shutdown()
        for name in ("ray.tune", "ray", ""):
            logging.getLogger(name).removeHandler(records)

    ignored = [m for m in records.messages if "max_concurrent_trials" in m]
    assert not ignored, f"Ray ignored the concurrency limit: {ignored}"
    report = outcome.report
    assert outcome.trials == 3 and report.max_concurrent_trials == 1
    assert [r.status for r in report.rows] == ["completed"] * 3, [(r.trial_id, r.status, r.error) for r in report.rows]
    assert all(r.epochs == 1 and r.score > 0.0 for r in report.rows)
    assert all(r.score == r.best_dice[4] for r in report.rows), "the searched metric is the deepest head's Dice"
    # running trials never exceeded the limit: from every trial's start and end time
    intervals = [(r.started, r.ended) for r in report.rows]
    assert all(start is not None and end > start for start, end in intervals)
    ordered = sorted(intervals)
    assert all(later[0] >= earlier[1] for earlier, later in zip(ordered, ordered[1:])), ordered
    assert report.observed_concurrency == 1
    # the default configuration ran as one of the trials, and the comparison is against it
    defaults = [r for r in report.rows if r.is_default]
    assert len(defaults) == 1 and (defaults[0].alpha, defaults[0].gamma, defaults[0].learning_rate) == (0.5, 2.0, 1e-3)
    assert report.comparison is not None and report.comparison.epochs == 1
    assert report.comparison.default_dice == defaults[0].score and report.comparison.best_dice == report.best.score
    assert report.best.score == max(r.score for r in report.rows) == outcome.best_val_dice

    # the report files, beside the experiment and under the MLflow parent run
    folder = tmp_path / "ray_results" / "three-on-two"
    lines = _read_csv(folder / "trials.csv")
    assert sorted(line["trial_id"] for line in lines) == sorted(r.trial_id for r in report.rows)
    for line in lines:
        r = next(r for r in report.rows if r.trial_id == line["trial_id"])
        assert math.isclose(float(line["best_val_dice_L4"]), r.best_dice[4]) and float(line["alpha"]) == r.alpha
        assert all(float(line[f"best_val_dice_L{d}"]) == r.best_dice[d] for d in DEPTHS)
    table = (folder / "trials.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 4  # the header and a row per trial
    assert "(default)" in table and f"{report.best.trial_id}*" in table
    assert (folder / "dice_alpha_gamma.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(outcome.mlflow_parent_run_id)
    assert parent.info.status == "FINISHED", "the job ends its parent run"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"trials.csv", "trials.md", "dice_alpha_gamma.png"}
    assert parent.data.metrics["best_val_dice"] == pytest.approx(report.best.score)
    assert parent.data.metrics["gain_over_default"] == pytest.approx(report.comparison.gain)
    assert parent.data.metrics["observed_concurrent_trials"] == 1
    assert float(parent.data.tags["best_alpha"]) == report.best.alpha
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}


@pytest.fixture()
def mlflow_server(tmp_path: Path):
    with running_mlflow_server(tmp_path) as uri:
        yield uri


@pytest.mark.slow
def test_tpe_with_asha_against_a_tracking_server_and_restored(tmp_path: Path, small_dataset: Path, mlflow_server: str, monkeypatch) -> None:
    """TPE through a ConcurrencyLimiter: 2 trials at a time on 2 CPUs, ASHA over 2 epochs,
    every trial a child run on a real MLflow server; the same name restores the experiment.
    The trials decode their data once (--cache-data), the path the streaming test leaves out:
    with no input pipeline to feed, a trial holds only its worker's CPU, so two fill the
    cluster exactly, and must still finish."""
    import ray
    from anunet_platform.tune import run_tuning
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    ray.init(num_cpus=2, include_dashboard=True, logging_level="ERROR")
    try:
        config = SearchConfig(data=small_dataset, num_samples=3, epochs=2, batch_size=8, search="tpe", name="tpe-three",
                              storage_path=tmp_path / "ray_results", time_budget_s=1200, cache_data=True)
        outcome = run_tuning(config)
        report = outcome.report
        assert outcome.trials == 3 and report.max_concurrent_trials == 2
        assert 1 <= report.observed_concurrency <= 2
        for r in report.rows:  # ASHA's rung is epoch 1: a trial ran 1 epoch (stopped) or both
            assert (r.epochs, r.status) in ((1, "stopped"), (2, "completed")), (r.trial_id, r.epochs, r.status, r.error)
            low, high = config.alpha_range
            assert low <= r.alpha <= high and config.gamma_range[0] <= r.gamma <= config.gamma_range[1]
        assert sum(r.is_default for r in report.rows) == 1
        client = MlflowClient(mlflow_server)
        children = client.search_runs(
            [client.get_experiment_by_name("anunet-tune").experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{outcome.mlflow_parent_run_id}'",
        )
        assert len(children) == 3  # concurrent trials logged through the server: no "database is locked"
        assert all(client.get_metric_history(c.info.run_id, "val_dice_L4") for c in children)
        assert {c.info.status for c in children} == {"FINISHED"}  # ASHA-stopped trials' runs are ended too

        # the driver comes back: the same name restores the finished experiment, no new trials (seconds: no
        # trial runs; not the fault test's resume, which restores a random search mid-experiment)
        again = run_tuning(config)
        assert again.trials == 3 and again.mlflow_parent_run_id == outcome.mlflow_parent_run_id
        assert again.best_config == outcome.best_config
        assert sorted((r.trial_id, r.started, r.ended, r.dice_history) for r in again.report.rows) == sorted(
            (r.trial_id, r.started, r.ended, r.dice_history) for r in report.rows
        )
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_a_cluster_without_the_state_api_is_refused_before_any_trial() -> None:
    """Without the dashboard, Ray Train never frees the workers of a trial ASHA stops and the
    experiment would hang on its next trials: a clear error instead."""
    import ray
    from anunet_platform.tune import require_state_api

    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        with pytest.raises(ValueError, match="tuning needs Ray's state API"):
            require_state_api()
    finally:
        ray.shutdown()
