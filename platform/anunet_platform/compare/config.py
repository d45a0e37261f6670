"""What one comparison runs: :class:`CompareConfig`, the flags of ``jobs/compare.py``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anunet_core.vocabulary import ARCHS, validate_arch

__all__ = ["PAPER_ORDER", "CompareConfig", "parse_archs"]

PAPER_ORDER: tuple[str, ...] = ("unet", "r2unet", "unetpp", "attunet", "attr2unet", "anunet")
"""The rows of the paper's Tables 2-5, top to bottom: the five baselines, then ANU-Net."""


def parse_archs(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``all`` or a comma-separated list of :data:`~anunet_core.vocabulary.ARCHS` -> the
    architectures in the paper's row order (:data:`PAPER_ORDER`), each once; ``ValueError``
    (one line) for an unknown name or an empty list."""
    items = [text] if isinstance(text, str) else list(text)
    names = [n.strip().lower() for item in items for n in str(item).split(",") if n.strip()]
    if names == ["all"]:
        return PAPER_ORDER
    if not names:
        raise ValueError(f"--archs must be 'all' or a comma-separated list of {', '.join(ARCHS)}")
    try:
        chosen = {validate_arch(n) for n in names}
    except ValueError as exc:
        raise ValueError(f"--archs: {exc}") from None
    return tuple(a for a in PAPER_ORDER if a in chosen)


@dataclass(frozen=True)
class CompareConfig:
    """One comparison: every architecture in ``archs`` trained ``seeds`` times on one dataset,
    as one Ray Tune grid, then evaluated on its test split.

    Attributes:
        data: dataset folder written by ``jobs/ingest.py`` (train, val and test splits).
        archs: ``all`` or a list of architectures; held as a tuple in the paper's row order
            (:func:`parse_archs`).
        epochs: passes over the training split, the same for every network.
        seeds: training runs per architecture (seeds 0..seeds-1: initial weights, shuffling,
            augmentation); the tables give mean ± std over seeds and test cases.
        register: register every trained network (``{arch}-{organ}-{modality}[-L{d}]``, alias
            candidate), as ``jobs/train.py --register`` does.
        name: the experiment (Tune folder and MLflow parent run); the same name resumes.
        num_workers, cpus_per_worker, use_gpu, batch_size, cache_data, learning_rate, alpha,
            gamma: each training's settings (as ``jobs/train.py``).
        max_concurrent_trials: trainings at once (default: what the cluster fits now).
        timed_slices: slices timed per depth for Table 6 (its column is extrapolated to
            :attr:`table6_slices`, the paper's 2,000).
        storage_path: Tune and Ray Train storage (shared storage on a cluster).
        experiment: MLflow experiment.
        out: where the tables, chart and per-case files go (default: the experiment's folder).
    """

    data: Path
    epochs: int
    archs: tuple[str, ...] | str = "all"
    seeds: int = 1
    register: bool = False
    name: str | None = None
    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False
    batch_size: int = 8
    cache_data: bool = False
    learning_rate: float = 1e-3
    alpha: float = 0.5
    gamma: float = 2.0
    max_concurrent_trials: int | None = None
    timed_slices: int = 256
    table6_slices: int = 2000
    storage_path: Path | None = None
    experiment: str = "anunet-compare"
    out: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "archs", parse_archs(self.archs))
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))
        if self.epochs < 1 or self.seeds < 1:
            raise ValueError(f"--epochs and --seeds must be >= 1, got {self.epochs} and {self.seeds}")
        if self.timed_slices < 1 or self.table6_slices < 1:
            raise ValueError(f"--timed-slices must be >= 1, got {self.timed_slices}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError(f"--max-concurrent-trials must be >= 1, got {self.max_concurrent_trials}")

    @property
    def num_samples(self) -> int:
        """Trainings in the grid, ``len(archs) * seeds`` (what the tuning sizing calls samples)."""
        return len(self.archs) * self.seeds

    def grid(self) -> list[tuple[str, int]]:
        """Every ``(arch, seed)`` the grid trains, in table order."""
        return [(arch, seed) for arch in self.archs for seed in range(self.seeds)]
