"""One Tune trial: a TorchTrainer run whose epochs Tune sees as iterations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from anunet_platform import registry
from anunet_platform.train import TrainConfig, build_trainer
from anunet_platform.tune.space import SEARCH_SPACE

__all__ = ["tune_trial"]


def tune_trial(params: dict[str, Any]) -> None:
    """The Tune function trainable: one TorchTrainer run whose epochs Tune sees as iterations.
    Its MLflow child run opens when the trial starts; it ends it when training returns."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from anunet_platform.logs import configure_job_logging

    configure_job_logging(worker=True)  # a Tune trial's process: its INFO lines reach the driver through stdout
    base = TrainConfig(**params["train_config"])
    trial_id = tune.get_context().get_trial_id()
    run_name = f"{params['name']}-{trial_id}"
    child = registry.tracking.start_trial_run(
        params["mlflow_experiment_id"], params["mlflow_parent_run_id"], trial_id, run_name,
        {key: params[key] for key in SEARCH_SPACE}, uri=base.tracking_uri,
    )
    config = replace(base, **{key: params[key] for key in SEARCH_SPACE}, run_name=run_name, mlflow_run_id=child)
    # fit() raises on a training error; a trial Tune stops (ASHA) is killed inside it. Either way
    # the driver ends this run afterwards, from Tune's own verdict (close_trial_runs).
    build_trainer(config, callbacks=[TuneReportCallback()]).fit()
    registry.tracking.finish_run(child, uri=base.tracking_uri)
