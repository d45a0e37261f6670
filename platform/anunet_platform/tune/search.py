"""The search algorithm: seeded random search or Optuna's TPE, holding the concurrency limit itself.

``TuneConfig(max_concurrent_trials=...)`` is silently ignored for a ``SearchGenerator`` such as
``BasicVariantGenerator``: that was the hang of issue 15. So the limit lives here:
``BasicVariantGenerator(max_concurrent=...)`` or a ``ConcurrencyLimiter`` around ``OptunaSearch``.
"""

from __future__ import annotations

import warnings

from anunet_platform.tune.sizing import tpe_startup_trials
from anunet_platform.tune.space import DEFAULT_POINT, METRIC, SearchConfig

__all__ = ["search_algorithm"]


def search_algorithm(config: SearchConfig, concurrent: int):
    """The search algorithm, holding the concurrency limit itself (see the module doc)."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    points = [dict(DEFAULT_POINT)] if config.with_default_trial else []
    if config.search == "random":
        return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=concurrent, random_state=config.seed)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    with warnings.catch_warnings():  # multivariate and constant_liar are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=config.seed, n_startup_trials=tpe_startup_trials(config.num_samples),
            multivariate=True,  # alpha and gamma interact: model them jointly
            constant_liar=True,  # running trials count as pending: concurrent trials spread out
        )
    return ConcurrencyLimiter(
        OptunaSearch(metric=METRIC, mode="max", points_to_evaluate=points, sampler=sampler), max_concurrent=concurrent
    )
