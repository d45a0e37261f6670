"""Tuning the hybrid loss's alpha and gamma (and the learning rate) with Ray Tune.

Stages:

    the search space (``SEARCH_SPACE``: every bound and scale, in one place)
    -> a search algorithm that itself holds the concurrency limit: seeded random search
       (default) or Optuna's TPE, the first trial being the default configuration
    -> one Tune trial per configuration: a function trainable that runs one TorchTrainer
       (``train.build_trainer``) and forwards its per-epoch metrics (``callbacks.EpochReport``)
    -> ASHA stops weak trials early on the deepest head's validation Dice (its time: ``EPOCHS_DONE``)
    -> the trials table, the Dice map over alpha x gamma and the best configuration against
       the default on the same budget (``report``), printed and logged under the MLflow
       parent run; with ``register``, the best configuration retrained and registered

Concurrency: a trial's Tune actor holds no CPU (``TRIAL_RESOURCES``) and its TorchTrainer
asks for its workers only once it runs, so Ray alone would start every trial at once and each trainer
would wait forever for workers the others hold. ``max_concurrent_trials`` computes how many
trials fit (workers plus one CPU for each trial's input pipeline) and the search algorithm
enforces it: ``BasicVariantGenerator(max_concurrent=...)`` or a ``ConcurrencyLimiter``.
(``TuneConfig(max_concurrent_trials=...)`` is silently ignored for a ``SearchGenerator`` such
as ``BasicVariantGenerator``: that was the hang.)

Modules: ``space`` (the search space and :class:`SearchConfig`), ``sizing`` (trials at once,
ASHA's rungs and budget: pure), ``search`` (the search algorithm), ``trial`` (one trial),
``job`` (:func:`run_tuning`), ``report`` (the trials table, the Dice map, the gain over the
default), ``callbacks`` (every epoch to Tune; on the driver, when each trial ran and the results a
restored trial keeps).

Failures: a trial that fails (its process dies, or its training fails beyond its own worker
restarts) starts again up to ``max_failures`` times (Tune's ``FailureConfig``); the experiment
resumes after the driver dies (same ``--name`` -> ``Tuner.restore``, unfinished and errored
trials included). Either way a trial started again resumes its TorchTrainer run from its latest
checkpoint (``trial``). In MLflow every trial is a child run under one parent run of the
experiment (``registry.tracking``); a trial started again logs into the same child run.
"""

from anunet_platform.tune.job import Experiment, TuneOutcome, experiment_name, require_state_api, run_tuning
from anunet_platform.tune.search import search_algorithm
from anunet_platform.tune.sizing import (
    TRIAL_RESOURCES,
    asha_rungs,
    asha_trial_epochs,
    max_concurrent_trials,
    tpe_startup_trials,
)
from anunet_platform.tune.space import (
    DEFAULT_POINT,
    EPOCHS_DONE,
    METRIC,
    SEARCH_SPACE,
    SEARCHERS,
    Dimension,
    SearchConfig,
    search_domains,
)
from anunet_platform.tune.trial import tune_trial

__all__ = [
    "DEFAULT_POINT",
    "EPOCHS_DONE",
    "METRIC",
    "SEARCHERS",
    "SEARCH_SPACE",
    "TRIAL_RESOURCES",
    "Dimension",
    "Experiment",
    "SearchConfig",
    "TuneOutcome",
    "asha_rungs",
    "asha_trial_epochs",
    "experiment_name",
    "max_concurrent_trials",
    "require_state_api",
    "run_tuning",
    "search_algorithm",
    "search_domains",
    "tpe_startup_trials",
    "tune_trial",
]
