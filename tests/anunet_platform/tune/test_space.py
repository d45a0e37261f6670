"""Tests of anunet_platform.tune.space: the search space and SearchConfig."""

from __future__ import annotations

from dataclasses import fields

import pytest

from anunet_platform.cli import tune_parser
from anunet_platform.train import TrainConfig
from anunet_platform.tune import (
    DEFAULT_POINT,
    SEARCH_SPACE,
    SearchConfig,
    search_domains,
)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_samples": 0}, "num-samples"),
        ({"alpha_range": (0.5, 1.5)}, "alpha range"),
        ({"alpha_range": (0.0, 0.5)}, r"alpha range .* inside \(0, 1\)"),  # alpha 0 ignores the organ
        ({"learning_rate_range": (0.0, 1e-3)}, "learning_rate range"),
        ({"gamma_range": (2.0, 1.0)}, "gamma range"),
        ({"gamma_range": (0.0, 6.0)}, r"gamma range .* inside \[0, 5\]"),
        ({"search": "grid"}, "--search must be one of random, tpe"),
        ({"reduction_factor": 1}, "--reduction-factor"),
        ({"time_budget_s": 0}, "--time-budget-s"),
        ({"max_failures": -1}, "--max-failures"),
    ],
)
def test_bad_search_config_is_refused(search, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        search(**kwargs)


def test_the_search_space_is_the_issue_s_and_its_default_point_is_training_s_defaults(search) -> None:
    from ray.tune.search.sample import Float, LogUniform, Uniform

    config = search()
    assert config.ranges() == {"alpha": (0.05, 0.95), "gamma": (0.0, 5.0), "learning_rate": (3e-4, 3e-3)}
    domains = search_domains(config)
    assert isinstance(domains["alpha"].get_sampler(), Uniform) and isinstance(domains["gamma"].get_sampler(), Uniform)
    assert isinstance(domains["learning_rate"].get_sampler(), LogUniform)
    assert all(isinstance(d, Float) for d in domains.values())
    assert (domains["alpha"].lower, domains["alpha"].upper) == (0.05, 0.95)
    train_defaults = {f.name: f.default for f in fields(TrainConfig)}
    assert DEFAULT_POINT == {"alpha": 0.5, "gamma": 2.0, "learning_rate": 1e-3}
    assert DEFAULT_POINT == {k: train_defaults[k] for k in SEARCH_SPACE}
    assert search_domains(search(gamma_range=(2.0, 2.0)))["gamma"] == 2.0  # a fixed value, not a search


def test_tune_flags_take_their_defaults_from_the_search_config() -> None:
    args = tune_parser().parse_args(["--data", "d", "--num-samples", "4", "--epochs", "2"])
    config = SearchConfig(**vars(args))
    defaults = {f.name: f.default for f in fields(SearchConfig)}
    for name in ("search", "alpha_range", "gamma_range", "learning_rate_range", "grace_period", "reduction_factor",
                 "max_concurrent_trials", "time_budget_s", "max_failures", "experiment", "seed", "num_workers",
                 "cpus_per_worker"):
        assert getattr(config, name) == defaults[name], name
    custom = SearchConfig(**vars(tune_parser().parse_args(
        ["--data", "d", "--num-samples", "4", "--epochs", "2", "--search", "tpe", "--alpha-range", "0.2", "0.6",
         "--learning-rate-range", "1e-4", "1e-2", "--grace-period", "2", "--reduction-factor", "3"])))
    assert custom.search == "tpe" and custom.alpha_range == (0.2, 0.6) and custom.learning_rate_range == (1e-4, 1e-2)
    assert (custom.grace_period, custom.reduction_factor) == (2, 3)
