"""The MLflow runs of training and tuning: opened, logged into and ended here, so that no other
stage imports ``mlflow``.

A training run is one MLflow run, found again by its Ray run name (a resumed run keeps
logging into it); a tuning experiment is a parent run with one child run per trial. Every
function takes the store's ``uri`` (see :func:`~anunet_platform.registry.store.current_uri`);
they are safe to call from Ray workers (only the rank-0 training worker logs).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from anunet_platform.registry.store import client, ensure_experiment

PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under its parent
RAY_RUN_TAG = "ray_run_name"
TRIAL_TAG = "tune_trial_id"
EXPERIMENT_TAG = "tune_experiment"
CHECKPOINT_ARTIFACT = "checkpoint"
MAX_TRIAL_RUNS = 10_000


def find_or_create_run(
    experiment_id: str, tag: str, value: str, run_name: str, tags: Mapping[str, str] | None = None,
    uri: str | None = None,
) -> tuple[str, bool]:
    """``(run id, created)`` of the run tagged ``tag=value``, created (with ``tags``) if there is none yet."""
    _, mlflow_client = client(uri)
    found = mlflow_client.search_runs([experiment_id], filter_string=f"tags.{tag} = '{value}'", max_results=1)
    if found:
        return found[0].info.run_id, False
    run = mlflow_client.create_run(experiment_id, run_name=run_name, tags={tag: value, **(tags or {})})
    return run.info.run_id, True


def log_params(run_id: str, params: Mapping[str, object], uri: str | None = None) -> None:
    """Log every ``params`` item (as a string) to the run."""
    _, mlflow_client = client(uri)
    for key, value in params.items():
        mlflow_client.log_param(run_id, key, str(value))


def start_training_run(
    experiment: str, run_name: str, dataset_checksum: str, params: Mapping[str, object], uri: str | None = None
) -> str:
    """The MLflow run of Ray Train run ``run_name`` in ``experiment``: reopened when it exists (a
    resumed run), else created, tagged with the dataset, with the run's ``params``. Returns its id."""
    experiment_id = ensure_experiment(experiment, uri=uri)
    run_id, created = find_or_create_run(
        experiment_id, RAY_RUN_TAG, run_name, run_name, {"dataset": dataset_checksum}, uri=uri
    )
    if created:
        log_params(run_id, params, uri=uri)
    return run_id


def log_epoch_metrics(run_id: str, metrics: Mapping[str, float], epoch: int, uri: str | None = None) -> None:
    """One epoch's metrics in one call, at step ``epoch`` (the key ``epoch`` itself is the step)."""
    from mlflow.entities import Metric

    _, mlflow_client = client(uri)
    timestamp = int(time.time() * 1000)
    mlflow_client.log_batch(
        run_id, metrics=[Metric(k, float(v), timestamp, epoch) for k, v in metrics.items() if k != "epoch"]
    )


def log_checkpoint(run_id: str, directory: Path, uri: str | None = None) -> None:
    """The files of a checkpoint folder, under the run's ``checkpoint/`` artifacts."""
    _, mlflow_client = client(uri)
    mlflow_client.log_artifacts(run_id, str(directory), CHECKPOINT_ARTIFACT)


def log_json(run_id: str, name: str, data: object, uri: str | None = None) -> None:
    """Log ``data`` as the JSON artifact ``name`` of run ``run_id``."""
    _, mlflow_client = client(uri)
    mlflow_client.log_dict(run_id, data, name)


def finish_run(run_id: str, status: str = "FINISHED", end_time_s: float | None = None, uri: str | None = None) -> None:
    """End the run with ``status`` (``FINISHED`` or ``FAILED``), at ``end_time_s`` (epoch
    seconds) if given, else now."""
    _, mlflow_client = client(uri)
    end = int(end_time_s * 1000) if end_time_s else None
    mlflow_client.set_terminated(run_id, status, end_time=end)


def start_tuning_run(experiment: str, name: str, dataset_checksum: str, uri: str | None = None) -> tuple[str, str]:
    """``(experiment id, parent run id)`` of tuning experiment ``name``: the parent run is
    reopened (RUNNING again) when it exists (a restored experiment), else created. The job ends
    it with :func:`finish_run` once its report is logged."""
    experiment_id = ensure_experiment(experiment, uri=uri)
    parent, created = find_or_create_run(experiment_id, EXPERIMENT_TAG, name, name, {"dataset": dataset_checksum}, uri=uri)
    if not created:
        _, mlflow_client = client(uri)
        mlflow_client.update_run(parent, status="RUNNING")
    return experiment_id, parent


def start_trial_run(
    experiment_id: str, parent_run_id: str, trial_id: str, ray_run_name: str, params: Mapping[str, object],
    uri: str | None = None,
) -> str:
    """The child run of tuning trial ``trial_id`` under the parent run (reopened when a restored
    experiment reruns the trial), with the trial's ``params``. Returns its id."""
    run_id, _ = find_or_create_run(
        experiment_id, TRIAL_TAG, trial_id, f"trial-{trial_id}",
        {PARENT_RUN_TAG: parent_run_id, RAY_RUN_TAG: ray_run_name}, uri=uri,
    )
    log_params(run_id, params, uri=uri)
    return run_id


def close_trial_runs(
    experiment_id: str, parent_run_id: str, endings: Mapping[str, tuple[bool, float | None]], uri: str | None = None
) -> list[str]:
    """End the child runs still open of the trials in ``endings`` (``{trial_id: (failed,
    end time in epoch seconds or None)}``): FAILED or FINISHED at the trial's end time. A trial
    Tune stopped was killed inside its function, which therefore never ended its run. Returns
    the ids of the runs ended."""
    _, mlflow_client = client(uri)
    runs = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.{PARENT_RUN_TAG} = '{parent_run_id}'", max_results=MAX_TRIAL_RUNS
    )
    closed = []
    for run in runs:
        ending = endings.get(run.data.tags.get(TRIAL_TAG, ""))
        if ending is not None and run.info.status == "RUNNING":
            failed, end_time_s = ending
            finish_run(run.info.run_id, "FAILED" if failed else "FINISHED", end_time_s, uri=uri)
            closed.append(run.info.run_id)
    return closed


def log_run_summary(
    run_id: str, *, tags: Mapping[str, object] | None = None, metrics: Mapping[str, float] | None = None,
    files: Iterable[Path] = (), uri: str | None = None,
) -> None:
    """A run's outcome: ``tags`` (as strings), ``metrics`` (one value each) and ``files`` as artifacts."""
    _, mlflow_client = client(uri)
    for key, value in (tags or {}).items():
        mlflow_client.set_tag(run_id, key, str(value))
    for key, value in (metrics or {}).items():
        mlflow_client.log_metric(run_id, key, float(value))
    for path in files:
        mlflow_client.log_artifact(run_id, str(path))
