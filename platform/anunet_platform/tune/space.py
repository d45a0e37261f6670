"""The search space (every bound and scale, in one place) and a tuning experiment's settings."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from anunet_platform.train import TrainConfig

__all__ = [
    "DEFAULT_POINT", "EPOCHS_DONE", "METRIC", "SEARCHERS", "SEARCH_SPACE", "Dimension", "SearchConfig",
    "search_domains",
]

METRIC = "val_dice"  # what trials are ranked by: the deepest head's validation Dice
EPOCHS_DONE = "epochs_done"  # epochs a trial has trained, its resumed attempts included: ASHA's time
SEARCHERS = ("random", "tpe")


@dataclass(frozen=True)
class Dimension:
    """One searched ``TrainConfig`` field: its default search range, its scale, and the
    interval any range for it must lie in (``open_limits``: the limits themselves excluded)."""

    name: str
    default_range: tuple[float, float]
    log: bool
    limits: tuple[float, float]
    open_limits: bool

    def check(self, low: float, high: float) -> None:
        lo, hi = self.limits
        inside = (lo < low and high < hi) if self.open_limits else (lo <= low and high <= hi)
        if not (low <= high and inside) or (self.log and low <= 0):
            interval = f"({lo:g}, {hi:g})" if self.open_limits else f"[{lo:g}, {hi:g}]"
            raise ValueError(f"{self.name} range must be LOW HIGH with LOW <= HIGH inside {interval}, got ({low:g}, {high:g})")

    def domain(self, low: float, high: float):
        """The Ray Tune sampling domain of ``[low, high]`` (a point when they are equal)."""
        from ray import tune

        if low == high:
            return low
        return tune.loguniform(low, high) if self.log else tune.uniform(low, high)


SEARCH_SPACE: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension("alpha", (0.05, 0.95), log=False, limits=(0.0, 1.0), open_limits=True),  # class balance
        Dimension("gamma", (0.0, 5.0), log=False, limits=(0.0, 5.0), open_limits=False),  # focusing exponent
        Dimension("learning_rate", (3e-4, 3e-3), log=True, limits=(0.0, 1.0), open_limits=False),  # Adam, log-uniform
    )
}
# The untuned configuration every experiment is compared against: TrainConfig's defaults.
DEFAULT_POINT: dict[str, float] = {f.name: f.default for f in fields(TrainConfig) if f.name in SEARCH_SPACE}


@dataclass(frozen=True)
class SearchConfig:
    """A tuning experiment. ``jobs/tune.py`` flags map onto these fields.

    Attributes:
        data: dataset folder written by ``jobs/ingest.py``.
        num_samples: trials (configurations) to try; with 2 or more, the first is the default
            configuration (alpha 0.5, gamma 2, learning rate 1e-3), the baseline the best is
            compared against.
        epochs: maximum epochs per trial (ASHA's ``max_t``).
        search: ``random`` (seeded random search) or ``tpe`` (Optuna's Tree-structured Parzen
            Estimator: a model of which regions score well, from the trials so far).
        num_workers, cpus_per_worker, use_gpu, batch_size, cache_data: per trial, as in training.
        alpha_range, gamma_range: uniform search ranges of the loss parameters.
        learning_rate_range: log-uniform search range of Adam's learning rate.
        grace_period: ASHA: epochs every trial runs before it can be stopped.
        reduction_factor: ASHA: rungs at grace_period x reduction_factor^k epochs; at each
            rung a trial continues only if it is in the top 1/reduction_factor so far.
        max_concurrent_trials: trials at once; ``None`` computes it from the cluster.
        time_budget_s: end the experiment after this wall time (unfinished trials are
            reported as such); ``None``: no limit.
        max_failures: times a failed trial (its process died, or its training failed beyond
            its own worker restarts) is started again before it counts as failed; it resumes
            its training from its latest checkpoint. 0: never.
        name: the experiment name; the same name resumes it.
        storage_path: Tune/Train storage (shared storage on a cluster).
        experiment: MLflow experiment.
        seed: seeds the search and every trial's training (all trials share initial weights
            and data order, so they differ only by their configuration).
        register: retrain the best config and register one model per depth.
    """

    data: Path
    num_samples: int
    epochs: int
    search: str = "random"
    num_workers: int = TrainConfig.num_workers  # per trial, as in training: TrainConfig's defaults
    cpus_per_worker: int = TrainConfig.cpus_per_worker
    use_gpu: bool = TrainConfig.use_gpu
    batch_size: int = TrainConfig.batch_size
    cache_data: bool = TrainConfig.cache_data
    alpha_range: tuple[float, float] = SEARCH_SPACE["alpha"].default_range
    gamma_range: tuple[float, float] = SEARCH_SPACE["gamma"].default_range
    learning_rate_range: tuple[float, float] = SEARCH_SPACE["learning_rate"].default_range
    grace_period: int = 1
    reduction_factor: int = 2
    max_concurrent_trials: int | None = None
    time_budget_s: float | None = None
    max_failures: int = 2
    name: str | None = None
    storage_path: Path | None = TrainConfig.storage_path
    experiment: str = "anunet-tune"
    seed: int = TrainConfig.seed
    register: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        for name in SEARCH_SPACE:  # flags give lists
            object.__setattr__(self, f"{name}_range", tuple(float(v) for v in getattr(self, f"{name}_range")))
        if self.num_samples < 1 or self.epochs < 1:
            raise ValueError(f"--num-samples and --epochs must be >= 1, got {self.num_samples}, {self.epochs}")
        if self.search not in SEARCHERS:
            raise ValueError(f"--search must be one of {', '.join(SEARCHERS)}, got {self.search!r}")
        for name, (low, high) in self.ranges().items():
            SEARCH_SPACE[name].check(low, high)
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ValueError(f"--grace-period must be >= 1 and --reduction-factor >= 2, got {self.grace_period}, {self.reduction_factor}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError(f"--max-concurrent-trials must be >= 1, got {self.max_concurrent_trials}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"--time-budget-s must be > 0, got {self.time_budget_s}")
        if self.max_failures < 0:
            raise ValueError(f"--max-failures must be >= 0, got {self.max_failures}")

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: getattr(self, f"{name}_range") for name in SEARCH_SPACE}

    @property
    def with_default_trial(self) -> bool:
        """Whether the default configuration is one of the trials (a search of one sample is
        not a search: it stays a random sample)."""
        return self.num_samples >= 2


def search_domains(config: SearchConfig) -> dict[str, Any]:
    """``{"alpha": tune.uniform(..), "gamma": .., "learning_rate": tune.loguniform(..)}``."""
    return {name: SEARCH_SPACE[name].domain(low, high) for name, (low, high) in config.ranges().items()}
