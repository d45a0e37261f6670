"""One training of the comparison's grid: a Tune trial that runs one TorchTrainer and records its best epoch.

A trial Tune starts again (a failure, or a restored experiment whose driver was killed) reruns
:func:`compare_trial` from the top: the run name depends only on the experiment, architecture
and seed, so its TorchTrainer resumes from its latest checkpoint and the same MLflow child run
is reopened. When training ends the trial writes its record (:func:`record_path`): the best
validated epoch's checkpoint and metrics, which the driver evaluates.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from anunet_core.io import write_json_atomic
from anunet_platform import registry
from anunet_platform.train import TrainConfig, best_result, build_trainer

__all__ = ["RECORDS_DIR", "compare_trial", "record_path", "trial_run_name"]

RECORDS_DIR = "trained"


def trial_run_name(experiment: str, arch: str, seed: int) -> str:
    """The Ray Train run (and MLflow child run) of one grid point: ``{experiment}-{arch}-s{seed}``."""
    return f"{experiment}-{arch}-s{seed}"


def record_path(experiment_path: Path, arch: str, seed: int) -> Path:
    """Where the trial of ``(arch, seed)`` records its trained network (JSON)."""
    return Path(experiment_path) / RECORDS_DIR / f"{arch}-s{seed}.json"


def compare_trial(params: dict[str, Any]) -> None:
    """The Tune function trainable of one ``(arch, seed)``: train (or resume), then record the
    best epoch (:func:`~anunet_platform.train.best_result`) for the driver. Its MLflow child run
    opens (or reopens) when the trial starts and ends when training returns."""
    from anunet_platform.logs import configure_job_logging
    from anunet_platform.tune.callbacks import EpochReport

    configure_job_logging(worker=True)  # a trial's process: its INFO lines reach the driver through stdout
    base = TrainConfig(**params["train_config"])
    arch, seed = str(params["arch"]), int(params["seed"])
    run_name = trial_run_name(params["name"], arch, seed)
    child = registry.tracking.start_trial_run(
        params["mlflow_experiment_id"], params["mlflow_parent_run_id"], run_name, run_name, {"arch": arch, "seed": seed},
        uri=base.tracking_uri,
    )
    config = replace(base, arch=arch, seed=seed, run_name=run_name, mlflow_run_id=child)
    result = build_trainer(config, callbacks=[EpochReport()]).fit()
    if result.error:
        registry.tracking.finish_run(child, status="FAILED", uri=base.tracking_uri)
        raise result.error
    trained = best_result(result, config)
    registry.tracking.log_checkpoint(child, Path(trained.checkpoint_path), uri=base.tracking_uri)
    write_json_atomic(record_path(Path(params["experiment_path"]), arch, seed), asdict(trained) | {"arch": arch, "seed": seed})
    registry.tracking.finish_run(child, uri=base.tracking_uri)
