"""How the model actor pool is laid out on a Ray cluster: a pure function of its shape."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from anunet_platform.segment.config import SegmentError

__all__ = ["ActorPlan", "plan_actors"]


@dataclass(frozen=True)
class ActorPlan:
    """How the model actor pool is laid out: ``num_actors`` actors, each reserving ``cpus``
    logical CPUs and ``gpus`` GPUs and running torch with ``threads`` threads."""

    num_actors: int
    cpus: float
    gpus: float
    threads: int


def plan_actors(
    node_cpus: float,
    cluster_cpus: float,
    cluster_gpus: float,
    use_gpu: bool,
    num_actors: int | None = None,
    cpus_per_actor: float | None = None,
    cases: int | None = None,
) -> ActorPlan:
    """The actor pool for a cluster whose largest node has ``node_cpus`` CPUs.

    GPU: one GPU and one CPU per actor, one actor per GPU by default; reading and writing run
    as tasks beside them, on the node's other CPUs. CPU: each actor reads, segments and writes its cases itself
    (:class:`~anunet_platform.segment.stages.CaseSegmenter`), so by default every CPU runs one
    single-threaded actor and none is held back. Measured on 2 cores
    (``benchmarks/bench_segment.py``): a forward on two threads gains little over one (a
    reading task or any other process that preempts one thread stalls the other at the next
    barrier), and separate reading and writing tasks cost each case its transfer through the
    object store and each worker process its own start-up. ``cpus_per_actor`` > 1 gives fewer,
    multi-threaded actors (less memory: one model copy each). Explicit
    ``num_actors``/``cpus_per_actor`` win. A default pool never has more actors than ``cases``
    (the scans to segment: each is one row, and an idle actor only costs its start-up).
    :class:`SegmentError` when the request cannot fit.
    """
    if use_gpu:
        plan = _plan_gpu_actors(cluster_gpus, num_actors, cpus_per_actor)
    else:
        plan = _plan_cpu_actors(node_cpus, cluster_cpus, num_actors, cpus_per_actor)
    if num_actors is None and cases is not None and 0 < cases < plan.num_actors:
        plan = replace(plan, num_actors=cases)
    return plan


def _plan_gpu_actors(cluster_gpus: float, num_actors: int | None, cpus_per_actor: float | None) -> ActorPlan:
    if cluster_gpus < 1:
        raise SegmentError("--use-gpu: the Ray cluster has no GPU (ray.cluster_resources() shows none)")
    actors = num_actors or int(cluster_gpus)
    if actors > cluster_gpus:
        raise SegmentError(f"--num-actors {actors} needs {actors} GPUs; the cluster has {cluster_gpus:g}")
    cpus = float(cpus_per_actor or 1.0)
    return ActorPlan(actors, cpus, 1.0, max(1, math.ceil(cpus)))


def _plan_cpu_actors(
    node_cpus: float, cluster_cpus: float, num_actors: int | None, cpus_per_actor: float | None
) -> ActorPlan:
    if node_cpus <= 0 or cluster_cpus <= 0:
        raise SegmentError("the Ray cluster has no CPU")
    available = cluster_cpus  # the actors do their own reading and writing: no CPU kept for tasks
    if cpus_per_actor is None:
        actors = num_actors or max(1, int(available + 0.5))  # one per CPU; 1.5 CPUs -> 2 actors
        cpus = min(1.0, available / actors)
    else:
        cpus = float(cpus_per_actor)
        if cpus > node_cpus:
            raise SegmentError(f"--cpus-per-actor {cpus:g} exceeds the largest node's {node_cpus:g} CPUs")
        actors = num_actors or max(1, int(available // cpus))
    if actors * cpus > cluster_cpus:
        raise SegmentError(
            f"{actors} actors x {cpus:g} CPUs exceed the cluster's {cluster_cpus:g} CPUs; lower --num-actors or --cpus-per-actor"
        )
    return ActorPlan(actors, cpus, 0.0, max(1, math.ceil(cpus)))
