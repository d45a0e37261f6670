"""How many trials run at once, and what ASHA will spend: pure functions, tested without Ray."""

from __future__ import annotations

import math

import numpy as np

from anunet_platform.train import cpus_per_run
from anunet_platform.tune.space import SearchConfig

__all__ = ["TRIAL_RESOURCES", "asha_rungs", "asha_trial_epochs", "max_concurrent_trials", "tpe_startup_trials"]

# What a trial's own actor holds: no CPU, only memory. It just drives its TorchTrainer, whose
# workers and Ray Data input pipeline ask for their CPUs themselves. Even a token CPU share
# would deadlock a cluster that is exactly full: 2 CPUs, 1 for the worker, 0.99 left, and every
# Ray Data task needs a whole CPU. (Tune refuses a request of no resources at all.)
TRIAL_RESOURCES = {"CPU": 0, "memory": 512 * 1024**2}


def max_concurrent_trials(cluster_cpus: float, cluster_gpus: float, config: SearchConfig) -> int:
    """How many trials fit at once so none waits forever for workers.

    A trial needs ``num_workers * cpus_per_worker`` CPUs (and ``num_workers`` GPUs with
    ``use_gpu``) for its workers plus, unless it caches its data (``cache_data``: decoded
    before its workers start), one CPU for its Ray Data input pipeline; the trial function
    itself holds no CPU (``TRIAL_RESOURCES``). Raises ``ValueError`` when not even one trial fits.
    """
    cpus_per_trial = cpus_per_run(config.num_workers, config.cpus_per_worker, streams_data=not config.cache_data)
    fits = math.floor(cluster_cpus / cpus_per_trial)
    if config.use_gpu:
        fits = min(fits, math.floor(cluster_gpus / config.num_workers))
    if fits < 1:
        need = f"{cpus_per_trial} CPUs" + (f" and {config.num_workers} GPUs" if config.use_gpu else "")
        raise ValueError(f"one trial needs {need}; the cluster has {cluster_cpus:g} CPUs and {cluster_gpus:g} GPUs")
    return min(fits, config.num_samples)


def asha_rungs(max_t: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The epochs at which ASHA may stop a trial: ``grace_period * reduction_factor**k`` below
    ``max_t`` (Ray's ``_Bracket`` with one bracket; a rung at ``max_t`` itself saves nothing:
    the trials it stops have run every epoch)."""
    count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1) if max_t >= grace_period else 0
    return [m for m in (grace_period * reduction_factor**k for k in range(count)) if m < max_t]


def asha_trial_epochs(num_samples: int, max_t: int, grace_period: int, reduction_factor: int) -> float:
    """Trial-epochs the experiment costs under ideal successive halving: at each rung the top
    ``1/reduction_factor`` continue. Asynchronous ASHA spends somewhat more (the first trials
    to reach a rung have nothing to be compared with and continue)."""
    total, alive = 0.0, 1.0
    for rung in asha_rungs(max_t, grace_period, reduction_factor):
        survivors = alive / reduction_factor
        total += (alive - survivors) * rung
        alive = survivors
    return num_samples * (total + alive * max_t)


def tpe_startup_trials(num_samples: int) -> int:
    """Random trials before TPE models the space: a quarter of the budget, 3 to 10 (Optuna's
    default, 10, would leave a 16-trial search nearly random)."""
    return max(3, min(10, num_samples // 4))
