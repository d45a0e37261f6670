"""Tuning: the search space, the concurrency and ASHA planning (pure), the search algorithms
holding the concurrency limit, and experiments end to end on real local Ray clusters: more
trials than fit (today's hang, reproduced), and TPE against a real MLflow server, restored."""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import fields
from pathlib import Path

import pytest

from anunet_core.vocabulary import DEPTHS
from anunet_platform.cli import tune_parser
from anunet_platform.train import TrainConfig
from anunet_platform.tune import (
    DEFAULT_POINT,
    SEARCH_SPACE,
    SearchConfig,
    asha_rungs,
    asha_trial_epochs,
    max_concurrent_trials,
    search_algorithm,
    search_domains,
    tpe_startup_trials,
)
from testkit import running_mlflow_server


def search(**kwargs) -> SearchConfig:
    return SearchConfig(**({"data": Path("d"), "num_samples": 8, "epochs": 2} | kwargs))


@pytest.mark.parametrize(
    "cpus,gpus,kwargs,expected",
    [
        (2, 0, {}, 1),  # 1 worker + 1 input CPU per trial
        (4, 0, {}, 2),
        (16, 0, {"num_workers": 2}, 5),
        (16, 0, {"num_workers": 2, "cpus_per_worker": 4}, 1),
        (64, 0, {"num_samples": 3}, 3),  # never more than the samples
        (16, 2, {"use_gpu": True}, 2),  # GPUs bound it
        (16, 8, {"use_gpu": True, "num_workers": 4}, 2),
    ],
)
def test_max_concurrent_trials_fits_workers_and_input_pipeline(cpus, gpus, kwargs, expected) -> None:
    assert max_concurrent_trials(cpus, gpus, search(**kwargs)) == expected


@pytest.mark.parametrize("cpus,gpus,kwargs", [(1, 0, {}), (8, 0, {"num_workers": 8}), (16, 0, {"use_gpu": True})])
def test_a_cluster_too_small_for_one_trial_is_a_clear_error(cpus, gpus, kwargs) -> None:
    with pytest.raises(ValueError, match="one trial needs"):
        max_concurrent_trials(cpus, gpus, search(**kwargs))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_samples": 0}, "num-samples"),
        ({"alpha_range": (0.5, 1.5)}, "alpha range"),
        ({"alpha_range": (0.0, 0.5)}, r"alpha range .* inside \(0, 1\)"),  # alpha 0 ignores the organ
        ({"learning_rate_range": (0.0, 1e-3)}, "learning_rate range"),
        ({"gamma_range": (2.0, 1.0)}, "gamma range"),
        ({"gamma_range": (0.0, 6.0)}, r"gamma range .* inside \[0, 5\]"),
        ({"search": "grid"}, "--search must be one of random, tpe"),
        ({"reduction_factor": 1}, "--reduction-factor"),
        ({"time_budget_s": 0}, "--time-budget-s"),
    ],
)
def test_bad_search_config_is_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        search(**kwargs)



def test_the_search_space_is_the_issue_s_and_its_default_point_is_training_s_defaults() -> None:
    from ray.tune.search.sample import Float, LogUniform, Uniform

    config = search()
    assert config.ranges() == {"alpha": (0.05, 0.95), "gamma": (0.0, 5.0), "learning_rate": (3e-4, 3e-3)}
    domains = search_domains(config)
    assert isinstance(domains["alpha"].get_sampler(), Uniform) and isinstance(domains["gamma"].get_sampler(), Uniform)
    assert isinstance(domains["learning_rate"].get_sampler(), LogUniform)
    assert all(isinstance(d, Float) for d in domains.values())
    assert (domains["alpha"].lower, domains["alpha"].upper) == (0.05, 0.95)
    train_defaults = {f.name: f.default for f in fields(TrainConfig)}
    assert DEFAULT_POINT == {"alpha": 0.5, "gamma": 2.0, "learning_rate": 1e-3}
    assert DEFAULT_POINT == {k: train_defaults[k] for k in SEARCH_SPACE}
    assert search_domains(search(gamma_range=(2.0, 2.0)))["gamma"] == 2.0  # a fixed value, not a search


def test_tune_flags_take_their_defaults_from_the_search_config() -> None:
    args = tune_parser().parse_args(["--data", "d", "--num-samples", "4", "--epochs", "2"])
    config = SearchConfig(**vars(args))
    defaults = {f.name: f.default for f in fields(SearchConfig)}
    for name in ("search", "alpha_range", "gamma_range", "learning_rate_range", "grace_period", "reduction_factor",
                 "max_concurrent_trials", "time_budget_s", "experiment", "seed", "num_workers", "cpus_per_worker"):
        assert getattr(config, name) == defaults[name], name
    custom = SearchConfig(**vars(tune_parser().parse_args(
        ["--data", "d", "--num-samples", "4", "--epochs", "2", "--search", "tpe", "--alpha-range", "0.2", "0.6",
         "--learning-rate-range", "1e-4", "1e-2", "--grace-period", "2", "--reduction-factor", "3"])))
    assert custom.search == "tpe" and custom.alpha_range == (0.2, 0.6) and custom.learning_rate_range == (1e-4, 1e-2)
    assert (custom.grace_period, custom.reduction_factor) == (2, 3)


@pytest.mark.parametrize("max_t,grace,factor", [(20, 1, 2), (20, 1, 4), (4, 1, 2), (30, 2, 3), (1, 1, 2), (16, 1, 2)])
def test_asha_rungs_are_ray_s_own_milestones(max_t, grace, factor) -> None:
    from ray.tune.schedulers.async_hyperband import _Bracket

    bracket = _Bracket(min_t=grace, max_t=max_t, reduction_factor=factor, s=0)
    assert asha_rungs(max_t, grace, factor) == sorted(m for m, _ in bracket._rungs if m < max_t)


@pytest.mark.parametrize(
    "samples,max_t,grace,factor,expected",
    [
        (32, 20, 1, 2, 100.0),  # 16 stop at 1, 8 at 2, 4 at 4, 2 at 8, 1 at 16, 1 runs 20: 16+16+16+16+16+20
        (16, 4, 1, 2, 32.0),  # 8 x 1 + 4 x 2 + 4 x 4
        (8, 1, 1, 2, 8.0),  # one epoch: nothing to stop
        (9, 9, 1, 3, 9 * (2 / 3 * 1 + 2 / 9 * 3 + 1 / 9 * 9)),
    ],
)
def test_asha_budget_of_ideal_successive_halving(samples, max_t, grace, factor, expected) -> None:
    assert asha_trial_epochs(samples, max_t, grace, factor) == pytest.approx(expected)


@pytest.mark.parametrize("samples,expected", [(2, 3), (8, 3), (16, 4), (32, 8), (100, 10)])
def test_tpe_startup_is_a_quarter_of_the_budget_within_3_to_10(samples, expected) -> None:
    assert tpe_startup_trials(samples) == expected


@pytest.mark.parametrize("kind", ["random", "tpe"])
@pytest.mark.parametrize("concurrent", [1, 3])
def test_the_search_algorithm_itself_holds_the_concurrency_limit(kind, concurrent) -> None:
    """The hang: TuneConfig(max_concurrent_trials) is ignored for a SearchGenerator, so the
    limit must live in the search algorithm Tune is given."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    algorithm = search_algorithm(search(search=kind), concurrent)
    if kind == "random":
        assert isinstance(algorithm, BasicVariantGenerator) and algorithm.max_concurrent == concurrent
        assert algorithm._points_to_evaluate == [DEFAULT_POINT]
    else:
        from ray.tune.search.optuna import OptunaSearch

        assert isinstance(algorithm, ConcurrencyLimiter) and algorithm.max_concurrent == concurrent
        assert isinstance(algorithm.searcher, OptunaSearch) and algorithm.searcher._points_to_evaluate == [DEFAULT_POINT]
        assert algorithm.searcher._sampler._n_startup_trials == tpe_startup_trials(8)


def test_one_sample_is_not_spent_on_the_default() -> None:
    assert search_algorithm(search(num_samples=1), 1)._points_to_evaluate == []


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """5 synthetic CT cases ingested at 64 px (4 train, 1 val... as the split gives)."""
    import ray

    from anunet_core.synthetic import make_archive
    from anunet_platform.ingest import IngestConfig, run_ingest

    root = tmp_path_factory.mktemp("tune-data")
    make_archive(root / "archive", cases=5, modality="CT", fmt="nifti", seed=8, shape=(64, 64, 12))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        run_ingest(IngestConfig(source=root / "archive", out=root / "ds", organ="liver", modality="CT", size=64))
    finally:
        ray.shutdown()
    return root / "ds"


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
def test_more_trials_than_fit_finish_one_at_a_time_on_two_cpus(tmp_path: Path, tiny_dataset: Path, monkeypatch) -> None:
    """Today's hang, reproduced: 5 trials on a 2-CPU cluster where one trial (1 worker CPU +
    1 for its input pipeline) fills it. Before the fix every trial started at once and no
    epoch ever finished; the time budget turns a hang into a failure here."""
    import ray
    from mlflow.tracking import MlflowClient

    from anunet_platform.tune import run_tuning

    records = _Records()
    for name in ("ray.tune", "ray", ""):
        logging.getLogger(name).addHandler(records)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    ray.init(num_cpus=2, include_dashboard=True, logging_level="ERROR")  # Train's PlacementGroupCleaner asks it
    try:
        config = SearchConfig(data=tiny_dataset, num_samples=5, epochs=1, batch_size=8, name="five-on-two",
                              storage_path=tmp_path / "ray_results", time_budget_s=1200)
        outcome = run_tuning(config)
    finally:
        ray.shutdown()
        for name in ("ray.tune", "ray", ""):
            logging.getLogger(name).removeHandler(records)

    ignored = [m for m in records.messages if "max_concurrent_trials" in m]
    assert not ignored, f"Ray ignored the concurrency limit: {ignored}"
    report = outcome.report
    assert outcome.trials == 5 and report.max_concurrent_trials == 1
    assert [r.status for r in report.rows] == ["completed"] * 5, [(r.trial_id, r.status, r.error) for r in report.rows]
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
    folder = tmp_path / "ray_results" / "five-on-two"
    lines = _read_csv(folder / "trials.csv")
    assert sorted(line["trial_id"] for line in lines) == sorted(r.trial_id for r in report.rows)
    for line in lines:
        r = next(r for r in report.rows if r.trial_id == line["trial_id"])
        assert math.isclose(float(line["best_val_dice_L4"]), r.best_dice[4]) and float(line["alpha"]) == r.alpha
        assert all(float(line[f"best_val_dice_L{d}"]) == r.best_dice[d] for d in DEPTHS)
    table = (folder / "trials.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 6  # the header and a row per trial
    assert "(default)" in table and f"{report.best.trial_id}*" in table
    assert (folder / "dice_alpha_gamma.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(outcome.mlflow_parent_run_id)
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"trials.csv", "trials.md", "dice_alpha_gamma.png"}
    assert parent.data.metrics["best_val_dice"] == pytest.approx(report.best.score)
    assert parent.data.metrics["gain_over_default"] == pytest.approx(report.comparison.gain)
    assert parent.data.metrics["observed_concurrent_trials"] == 1
    assert float(parent.data.tags["best_alpha"]) == report.best.alpha
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 5 and {c.info.status for c in children} == {"FINISHED"}


@pytest.fixture()
def mlflow_server(tmp_path: Path):
    with running_mlflow_server(tmp_path) as uri:
        yield uri


@pytest.mark.slow
def test_tpe_with_asha_against_a_tracking_server_and_restored(tmp_path: Path, tiny_dataset: Path, mlflow_server: str, monkeypatch) -> None:
    """TPE through a ConcurrencyLimiter: 2 trials at a time on 4 CPUs, ASHA over 2 epochs,
    every trial a child run on a real MLflow server; the same name restores the experiment.
    The trials decode their data once (--cache-data), the path the streaming test leaves out."""
    import ray
    from mlflow.tracking import MlflowClient

    from anunet_platform.tune import run_tuning

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    ray.init(num_cpus=4, include_dashboard=True, logging_level="ERROR")
    try:
        config = SearchConfig(data=tiny_dataset, num_samples=3, epochs=2, batch_size=8, search="tpe", name="tpe-three",
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

        # the driver comes back: the same name restores the finished experiment, no new trials
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
