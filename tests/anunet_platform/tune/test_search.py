"""Tests of anunet_platform.tune.search: the search algorithm holds the concurrency limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from anunet_platform.tune import (
    DEFAULT_POINT,
    SearchConfig,
    search_algorithm,
    tpe_startup_trials,
)


def search(**kwargs) -> SearchConfig:
    return SearchConfig(**({"data": Path("d"), "num_samples": 8, "epochs": 2} | kwargs))


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
