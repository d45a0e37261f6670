"""Tuning the hybrid loss's alpha and gamma (and the learning rate) with Ray Tune.

Stages:

    search space (alpha, gamma, learning rate; seeded random search)
    -> one Tune trial per sample: a function trainable that runs one TorchTrainer
       (``train.build_trainer``) and forwards its per-epoch metrics (``TuneReportCallback``)
    -> ASHA stops weak trials early on the deepest head's validation Dice
    -> best config printed; with ``register``, retrained on the training split and registered

The experiment resumes after the driver dies (same ``--name`` -> ``Tuner.restore``). In
MLflow every trial is a child run under one parent run of the experiment. Trials run at most
``max_concurrent_trials`` at a time, computed from the cluster's CPUs/GPUs so that a running
trial can always get its workers and its input pipeline: no deadlock on a small cluster.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from anunet_platform.ingest import read_summary
from anunet_platform.train import TrainConfig, TrainResult, build_trainer, default_storage_path, run_training, split_files

logger = logging.getLogger(__name__)

METRIC = "val_dice"  # the deepest head's validation Dice


@dataclass(frozen=True)
class SearchConfig:
    """A tuning experiment. ``jobs/tune.py`` flags map onto these fields.

    Attributes:
        data: dataset folder written by ``jobs/ingest.py``.
        num_samples: trials (configurations) to try.
        epochs: maximum epochs per trial (ASHA's ``max_t``).
        num_workers, cpus_per_worker, use_gpu, batch_size: per trial, as in training.
        alpha_range, gamma_range: uniform search ranges of the loss parameters.
        learning_rate_range: log-uniform search range of Adam's learning rate.
        grace_period, reduction_factor: ASHA: minimum epochs before stopping; halving rate.
        max_concurrent_trials: trials at once; ``None`` computes it from the cluster.
        name: the experiment name; the same name resumes it.
        storage_path: Tune/Train storage (shared storage on a cluster).
        experiment: MLflow experiment.
        seed: seeds the search and every trial's training.
        register: retrain the best config and register one model per depth.
    """

    data: Path
    num_samples: int
    epochs: int
    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False
    batch_size: int = 8
    alpha_range: tuple[float, float] = (0.2, 0.8)
    gamma_range: tuple[float, float] = (0.0, 3.0)
    learning_rate_range: tuple[float, float] = (3e-4, 3e-3)
    grace_period: int = 1
    reduction_factor: int = 2
    max_concurrent_trials: int | None = None
    name: str | None = None
    storage_path: Path | None = None
    experiment: str = "anunet-tune"
    seed: int = 0
    register: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        if self.num_samples < 1 or self.epochs < 1:
            raise ValueError(f"--num-samples and --epochs must be >= 1, got {self.num_samples}, {self.epochs}")
        for name, (low, high) in (("alpha", self.alpha_range), ("gamma", self.gamma_range), ("learning rate", self.learning_rate_range)):
            if not low <= high:
                raise ValueError(f"{name} range must be (low, high) with low <= high, got ({low}, {high})")
        if not (0.0 <= self.alpha_range[0] and self.alpha_range[1] <= 1.0):
            raise ValueError(f"alpha range must lie in [0, 1], got {self.alpha_range}")
        if self.learning_rate_range[0] <= 0:
            raise ValueError(f"learning rate range must be positive, got {self.learning_rate_range}")


def max_concurrent_trials(cluster_cpus: float, cluster_gpus: float, config: SearchConfig) -> int:
    """How many trials fit at once so none waits forever for workers.

    A trial needs ``num_workers * cpus_per_worker`` CPUs (and ``num_workers`` GPUs with
    ``use_gpu``) for its workers plus one CPU for its Ray Data input pipeline; the trial
    function itself reserves a token 0.01 CPU (it only drives its trainer). Raises ``ValueError`` when
    not even one trial fits.
    """
    cpus_per_trial = config.num_workers * config.cpus_per_worker + 1
    fits = math.floor(cluster_cpus / cpus_per_trial)
    if config.use_gpu:
        fits = min(fits, math.floor(cluster_gpus / config.num_workers))
    if fits < 1:
        need = f"{cpus_per_trial} CPUs" + (f" and {config.num_workers} GPUs" if config.use_gpu else "")
        raise ValueError(f"one trial needs {need}; the cluster has {cluster_cpus:g} CPUs and {cluster_gpus:g} GPUs")
    return min(fits, config.num_samples)


def experiment_name(config: SearchConfig, dataset_checksum: str) -> str:
    return config.name or f"tune-{dataset_checksum[:8]}-n{config.num_samples}-e{config.epochs}-s{config.seed}"


def _mlflow_run(client, experiment_id: str, tag: str, value: str, run_name: str, tags: dict[str, str]) -> str:
    """The id of the run tagged ``tag=value``, created (with ``tags``) if there is none yet."""
    found = client.search_runs([experiment_id], filter_string=f"tags.{tag} = '{value}'", max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(experiment_id, run_name=run_name, tags={tag: value, **tags}).info.run_id


def tune_trial(params: dict[str, Any]) -> None:
    """The Tune function trainable: one TorchTrainer run whose epochs Tune sees as iterations."""
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    base = TrainConfig(**params["train_config"])
    trial_id = tune.get_context().get_trial_id()
    client = MlflowClient(tracking_uri=base.tracking_uri)
    child = _mlflow_run(
        client, params["mlflow_experiment_id"], "tune_trial_id", trial_id, f"trial-{trial_id}",
        {"mlflow.parentRunId": params["mlflow_parent_run_id"], "ray_run_name": f"{params['name']}-{trial_id}"},
    )
    config = replace(
        base, alpha=params["alpha"], gamma=params["gamma"], learning_rate=params["learning_rate"],
        run_name=f"{params['name']}-{trial_id}", mlflow_run_id=child,
    )
    for key in ("alpha", "gamma", "learning_rate"):
        client.log_param(child, key, str(params[key]))
    build_trainer(config, callbacks=[TuneReportCallback()]).fit()


@dataclass
class TuneOutcome:
    name: str
    best_config: dict[str, float]
    best_val_dice: float
    trials: int
    mlflow_parent_run_id: str
    registered: TrainResult | None = None


def run_tuning(config: SearchConfig) -> TuneOutcome:
    """Run (or resume) the experiment; print the best config; optionally register it."""
    import mlflow
    import ray
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from anunet_platform import registry
    from anunet_platform.cluster import init_ray

    summary = read_summary(config.data)
    for split in ("train", "val"):
        split_files(config.data, split)
    tracking = registry.tracking_uri()
    registry.check_tracking_server(tracking)
    mlflow.set_tracking_uri(tracking)
    init_ray()
    name = experiment_name(config, summary.checksum)
    storage = Path(config.storage_path) if config.storage_path else default_storage_path()
    storage.mkdir(parents=True, exist_ok=True)

    client = MlflowClient(tracking_uri=tracking)
    experiment_id = registry.ensure_experiment(config.experiment, uri=tracking)
    parent = _mlflow_run(client, experiment_id, "tune_experiment", name, name, {"dataset": summary.checksum})

    resources = ray.cluster_resources()
    concurrent = config.max_concurrent_trials or max_concurrent_trials(resources.get("CPU", 0), resources.get("GPU", 0), config)
    train_config = TrainConfig(
        data=config.data, epochs=config.epochs, num_workers=config.num_workers, use_gpu=config.use_gpu,
        cpus_per_worker=config.cpus_per_worker, batch_size=config.batch_size, seed=config.seed,
        storage_path=storage / name / "train", experiment=config.experiment, tracking_uri=tracking, max_failures=1,
    )
    param_space = {
        "alpha": tune.uniform(*config.alpha_range),
        "gamma": tune.uniform(*config.gamma_range),
        "learning_rate": tune.loguniform(*config.learning_rate_range),
        "train_config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(train_config).items()},
        "mlflow_experiment_id": experiment_id,
        "mlflow_parent_run_id": parent,
        "name": name,
    }
    # The trial function only drives its TorchTrainer: a token CPU share, so its workers and
    # input pipeline get the real CPUs (max_concurrent_trials keeps enough of those free).
    trainable = tune.with_resources(tune_trial, {"CPU": 0.01})
    path = storage / name
    if tune.Tuner.can_restore(str(path)):
        logger.info("resuming tuning experiment %s from %s", name, path)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, param_space=param_space, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="max", num_samples=config.num_samples, max_concurrent_trials=concurrent,
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=config.epochs,
                                        grace_period=config.grace_period, reduction_factor=config.reduction_factor),
                search_alg=BasicVariantGenerator(random_state=config.seed),
            ),
            run_config=tune.RunConfig(name=name, storage_path=str(storage)),
        )
    results = tuner.fit()
    best = results.get_best_result(metric=METRIC, mode="max")
    if best.metrics is None or METRIC not in best.metrics:
        errors = [str(r.error) for r in results if r.error]
        raise RuntimeError(f"no trial reported {METRIC}; first error: {errors[0] if errors else 'none'}")
    best_config = {k: float(best.config[k]) for k in ("alpha", "gamma", "learning_rate")}
    outcome = TuneOutcome(name, best_config, float(best.metrics[METRIC]), len(results), parent)
    for key, value in best_config.items():
        client.log_param(parent, f"best_{key}", str(value))
    client.log_metric(parent, f"best_{METRIC}", outcome.best_val_dice)
    print(f"tuning {name}: {len(results)} trials, best {METRIC} {outcome.best_val_dice:.4f} with "
          + ", ".join(f"{k}={v:.4g}" for k, v in best_config.items()))
    if config.register:
        outcome.registered = run_training(
            replace(train_config, **best_config, run_name=f"{name}-best", storage_path=storage / name / "best",
                    experiment=config.experiment, register=True, max_failures=2)
        )
    return outcome


__all__ = ["SearchConfig", "TuneOutcome", "max_concurrent_trials", "run_tuning"]

