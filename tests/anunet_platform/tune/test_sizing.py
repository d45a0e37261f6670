"""Tests of anunet_platform.tune.sizing: trials at once and ASHA's budget (pure)."""

from __future__ import annotations


import pytest

from anunet_platform.tune import asha_rungs, asha_trial_epochs, max_concurrent_trials, tpe_startup_trials


@pytest.mark.parametrize(
    "cpus,gpus,kwargs,expected",
    [
        (2, 0, {}, 1),  # 1 worker + 1 input CPU per trial
        (4, 0, {}, 2),
        (16, 0, {"num_workers": 2}, 5),
        (16, 0, {"num_workers": 2, "cpus_per_worker": 4}, 1),
        (64, 0, {"num_samples": 3}, 3),  # never more than the samples
        (16, 2, {"use_gpu": True}, 2),  # GPUs bound it
        (16, 8, {"use_gpu": True, "num_workers": 4}, 2),
        (2, 0, {"cache_data": True}, 2),  # decoded before the workers start: no input CPU beside them
        (2, 0, {"cache_data": True, "cpus_per_worker": 2}, 1),
    ],
)
def test_max_concurrent_trials_fits_workers_and_input_pipeline(search, cpus, gpus, kwargs, expected) -> None:
    assert max_concurrent_trials(cpus, gpus, search(**kwargs)) == expected


@pytest.mark.parametrize("cpus,gpus,kwargs", [(1, 0, {}), (8, 0, {"num_workers": 8}), (16, 0, {"use_gpu": True}),
                                              (1, 0, {"cache_data": True, "cpus_per_worker": 2})])
def test_a_cluster_too_small_for_one_trial_is_a_clear_error(search, cpus, gpus, kwargs) -> None:
    with pytest.raises(ValueError, match="one trial needs"):
        max_concurrent_trials(cpus, gpus, search(**kwargs))


@pytest.mark.parametrize("max_t,grace,factor", [(20, 1, 2), (20, 1, 4), (4, 1, 2), (30, 2, 3), (1, 1, 2), (16, 1, 2)])
def test_asha_rungs_are_ray_s_own_milestones(max_t, grace, factor) -> None:
    from ray.tune.schedulers.async_hyperband import _Bracket

    bracket = _Bracket(min_t=grace, max_t=max_t, reduction_factor=factor, s=0)
    assert asha_rungs(max_t, grace, factor) == sorted(m for m, _ in bracket._rungs if m < max_t)


@pytest.mark.parametrize(
    "samples,max_t,grace,factor,expected",
    [
        (32, 20, 1, 2, 100.0),  # 16 stop at 1, 8 at 2, 4 at 4, 2 at 8, 1 at 16, 1 runs 20: 16+16+16+16+16+20
        (16, 4, 1, 2, 32.0),  # 8 x 1 + 4 x 2 + 4 x 4
        (8, 1, 1, 2, 8.0),  # one epoch: nothing to stop
        (9, 9, 1, 3, 9 * (2 / 3 * 1 + 2 / 9 * 3 + 1 / 9 * 9)),
    ],
)
def test_asha_budget_of_ideal_successive_halving(samples, max_t, grace, factor, expected) -> None:
    assert asha_trial_epochs(samples, max_t, grace, factor) == pytest.approx(expected)


@pytest.mark.parametrize("samples,expected", [(2, 3), (8, 3), (16, 4), (32, 8), (100, 10)])
def test_tpe_startup_is_a_quarter_of_the_budget_within_3_to_10(samples, expected) -> None:
    assert tpe_startup_trials(samples) == expected
