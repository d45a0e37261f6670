"""The segment job's settings (one field per flag of ``jobs/segment.py``) and its error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anunet_core.io import DEFAULT_MAX_VOXELS
from anunet_platform import registry
from anunet_platform.selection import DEFAULT_LATENCY_BUDGET_MS, DEFAULT_MAX_DICE_DROP

__all__ = ["SegmentConfig", "SegmentError"]


class SegmentError(ValueError):
    """The job cannot run or produced nothing (bad archive, model, output folder)."""


@dataclass(frozen=True)
class SegmentConfig:
    """The segment job's settings; field names follow ``jobs/segment.py``'s flags.

    The depth policy's defaults (``max_dice_drop``, ``latency_budget_ms``) are
    :class:`~anunet_platform.selection.DepthPolicy`'s, written once in
    :mod:`anunet_platform.selection`. ``max_failed_fraction``: above it the job exits 1 once the
    manifest is written. ``allow_unpromoted``: run the newest versions of a family with no
    ``alias`` versions (refused otherwise).
    """

    archive: Path
    out: Path
    model: str
    depth: str | int = "auto"
    max_dice_drop: float = DEFAULT_MAX_DICE_DROP
    latency_budget_ms: float | None = DEFAULT_LATENCY_BUDGET_MS
    alias: str = registry.PRODUCTION
    layout: str = "auto"
    batch_size: int = 16
    use_gpu: bool = False
    num_actors: int | None = None
    cpus_per_actor: float | None = None
    previews: bool = True
    recompute: bool = False
    max_failed_fraction: float = 0.05
    max_voxels: int = DEFAULT_MAX_VOXELS
    allow_unpromoted: bool = False
    pseudonymize: bool = False
    id_map: Path | None = None
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "archive", Path(self.archive))
        object.__setattr__(self, "out", Path(self.out))
        if self.id_map is not None:
            object.__setattr__(self, "id_map", Path(self.id_map))
            if not self.pseudonymize:
                raise SegmentError("--id-map is the map of --pseudonymize: pass both")
        if self.batch_size < 1:
            raise SegmentError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_actors is not None and self.num_actors < 1:
            raise SegmentError(f"num_actors must be >= 1, got {self.num_actors}")
        if self.cpus_per_actor is not None and not self.cpus_per_actor > 0:
            raise SegmentError(f"cpus_per_actor must be > 0, got {self.cpus_per_actor}")
        if self.max_voxels < 1:
            raise SegmentError(f"max_voxels must be >= 1, got {self.max_voxels}")
        if not 0.0 <= self.max_failed_fraction <= 1.0:
            raise SegmentError(f"max_failed_fraction must be in [0, 1], got {self.max_failed_fraction}")
