"""Tuning: the concurrency policy (pure), and 2 trials end to end against a real MLflow server."""

from __future__ import annotations

from pathlib import Path

import pytest

from anunet_platform.tune import SearchConfig, max_concurrent_trials
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
    [({"num_samples": 0}, "num-samples"), ({"alpha_range": (0.5, 1.5)}, "alpha"), ({"learning_rate_range": (0.0, 1e-3)}, "learning rate"), ({"gamma_range": (2.0, 1.0)}, "gamma")],
)
def test_bad_search_config_is_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        search(**kwargs)


@pytest.fixture()
def mlflow_server(tmp_path: Path):
    with running_mlflow_server(tmp_path) as uri:
        yield uri


@pytest.mark.slow
def test_two_trials_end_to_end_with_a_tracking_server(tmp_path: Path, mlflow_server: str, monkeypatch) -> None:
    import ray
    from mlflow.tracking import MlflowClient

    from anunet_core.synthetic import make_archive
    from anunet_platform.ingest import IngestConfig, run_ingest
    from anunet_platform.tune import run_tuning

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    try:
        make_archive(tmp_path / "archive", cases=5, modality="CT", fmt="nifti", seed=8, shape=(48, 48, 12))
        run_ingest(IngestConfig(source=tmp_path / "archive", out=tmp_path / "ds", organ="liver", modality="CT", size=32))
        config = SearchConfig(data=tmp_path / "ds", num_samples=2, epochs=2, batch_size=4, name="two-trials", storage_path=tmp_path / "ray_results")
        outcome = run_tuning(config)
        assert outcome.trials == 2 and 0.0 <= outcome.best_val_dice <= 1.0
        assert set(outcome.best_config) == {"alpha", "gamma", "learning_rate"}
        client = MlflowClient(mlflow_server)
        children = client.search_runs(
            [client.get_experiment_by_name("anunet-tune").experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{outcome.mlflow_parent_run_id}'",
        )
        assert len(children) == 2  # concurrent trials logged through the server: no "database is locked"
        assert all(client.get_metric_history(c.info.run_id, "val_dice_L4") for c in children)

        # the driver comes back: the same name restores the finished experiment, no new trials
        again = run_tuning(config)
        assert again.trials == 2 and again.mlflow_parent_run_id == outcome.mlflow_parent_run_id
        assert again.best_config == outcome.best_config
    finally:
        ray.shutdown()
