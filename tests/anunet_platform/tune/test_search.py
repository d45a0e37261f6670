"""Tests of anunet_platform.tune.search: the search algorithm holds the concurrency limit."""

from __future__ import annotations


import pytest

from anunet_platform.tune import DEFAULT_POINT, search_algorithm, tpe_startup_trials


@pytest.mark.parametrize("kind", ["random", "tpe"])
@pytest.mark.parametrize("concurrent", [1, 3])
def test_the_search_algorithm_itself_holds_the_concurrency_limit(search, kind, concurrent) -> None:
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


def test_one_sample_is_not_spent_on_the_default(search) -> None:
    assert search_algorithm(search(num_samples=1), 1)._points_to_evaluate == []
