"""One Tune trial: a TorchTrainer run whose epochs Tune sees as results.

A trial Tune starts again (a failure within ``FailureConfig.max_failures``, or a restored
experiment whose driver was killed) reruns ``tune_trial`` from the top: the same trial id names
the same TorchTrainer run in the same storage, so Ray Train resumes it from its latest
checkpoint, and the same MLflow child run is reopened. Tune itself holds no checkpoint of the
trial and counts its ``training_iteration`` from 1 again; the epochs are counted by
``space.EPOCHS_DONE`` instead (``callbacks.EpochReport``), ASHA's time attribute.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from anunet_platform import registry
from anunet_platform.train import TrainConfig, build_trainer
from anunet_platform.tune.space import SEARCH_SPACE

__all__ = ["tune_trial"]


def tune_trial(params: dict[str, Any]) -> None:
    """The Tune function trainable: one TorchTrainer run whose epochs Tune sees as results.
    Its MLflow child run opens (or reopens) when the trial starts; it ends it when training returns."""
    from ray import tune

    from anunet_platform.logs import configure_job_logging
    from anunet_platform.tune.callbacks import EpochReport

    configure_job_logging(worker=True)  # a Tune trial's process: its INFO lines reach the driver through stdout
    base = TrainConfig(**params["train_config"])
    trial_id = tune.get_context().get_trial_id()
    run_name = f"{params['name']}-{trial_id}"  # one TorchTrainer run per trial: a rerun resumes it
    child = registry.tracking.start_trial_run(
        params["mlflow_experiment_id"], params["mlflow_parent_run_id"], trial_id, run_name,
        {key: params[key] for key in SEARCH_SPACE}, uri=base.tracking_uri,
    )
    config = replace(base, **{key: params[key] for key in SEARCH_SPACE}, run_name=run_name, mlflow_run_id=child)
    # fit() raises on a training error; a trial Tune stops (ASHA) is killed inside it. Either way
    # the driver ends this run afterwards, from Tune's own verdict (close_trial_runs).
    build_trainer(config, callbacks=[EpochReport()]).fit()
    registry.tracking.finish_run(child, uri=base.tracking_uri)
