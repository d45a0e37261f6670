"""The actor pool's layout: a pure function of the cluster's shape and the flags."""

from __future__ import annotations

import pytest

from anunet_platform.segment import ActorPlan, SegmentError, plan_actors


@pytest.mark.parametrize(
    "node_cpus,cluster_cpus,gpus,use_gpu,num_actors,cpus_per_actor,expected",
    [
        (2, 2, 0, False, None, None, ActorPlan(2, 1.0, 0.0, 1)),  # laptop: the actors read and write themselves
        (16, 16, 0, False, None, None, ActorPlan(16, 1.0, 0.0, 1)),  # big node: one actor per CPU
        (16, 64, 0, False, None, None, ActorPlan(64, 1.0, 0.0, 1)),  # four such nodes
        (16, 16, 0, False, None, 4, ActorPlan(4, 4.0, 0.0, 4)),  # fewer, wider actors
        (8, 8, 0, False, 2, 2, ActorPlan(2, 2.0, 0.0, 2)),  # explicit flags win
        (8, 8, 0, False, 3, None, ActorPlan(3, 1.0, 0.0, 1)),
        (16, 16, 4, True, None, None, ActorPlan(4, 1.0, 1.0, 1)),  # one actor per GPU
        (16, 16, 4, True, 2, 3, ActorPlan(2, 3.0, 1.0, 3)),
        (1, 1, 0, False, None, None, ActorPlan(1, 1.0, 0.0, 1)),  # one core: one actor
    ],
)
def test_plan_actors(node_cpus, cluster_cpus, gpus, use_gpu, num_actors, cpus_per_actor, expected) -> None:
    assert plan_actors(node_cpus, cluster_cpus, gpus, use_gpu, num_actors, cpus_per_actor) == expected


def test_a_default_pool_has_no_more_actors_than_scans() -> None:
    assert plan_actors(16, 16, 0, False, cases=3) == ActorPlan(3, 1.0, 0.0, 1)
    assert plan_actors(16, 16, 0, False, cases=40) == ActorPlan(16, 1.0, 0.0, 1)
    assert plan_actors(16, 16, 0, False, num_actors=5, cases=3).num_actors == 5, "an explicit count is kept"
    assert plan_actors(16, 16, 4, True, cases=1).num_actors == 1


@pytest.mark.parametrize(
    "args,message",
    [
        ((16, 16, 0, True, None, None), "has no GPU"),
        ((16, 16, 2, True, 3, None), "needs 3 GPUs"),
        ((4, 4, 0, False, None, 8), "exceeds the largest node"),
        ((4, 4, 0, False, 3, 2), "exceed the cluster"),
        ((0, 0, 0, False, None, None), "no CPU"),
    ],
)
def test_plan_actors_refuses_what_cannot_fit(args, message: str) -> None:
    with pytest.raises(SegmentError, match=message):
        plan_actors(*args)
