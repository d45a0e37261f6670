"""The segment job's settings (one field per flag of ``jobs/segment.py``) and its error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anunet_core.io import DEFAULT_MAX_VOXELS
from anunet_platform import registry
from anunet_platform.selection import DEFAULT_LATENCY_BUDGET_MS, DEFAULT_MAX_DICE_DROP, POSTPROCESS_MODES

__all__ = ["OUTPUT_FORMATS", "SegmentConfig", "SegmentError", "parse_output_formats"]

OUTPUT_FORMATS: tuple[str, ...] = ("nifti", "dicom-seg")
"""``--output-format``: NIfTI masks always (resume and evaluate read them); ``dicom-seg`` adds a
DICOM Segmentation object for each case read from a DICOM series."""


class SegmentError(ValueError):
    """The job cannot run or produced nothing (bad archive, model, output folder)."""


@dataclass(frozen=True)
class SegmentConfig:
    """The segment job's settings; field names follow ``jobs/segment.py``'s flags.

    The depth policy's defaults (``max_dice_drop``, ``latency_budget_ms``) are
    :class:`~anunet_platform.selection.DepthPolicy`'s, written once in
    :mod:`anunet_platform.selection`. ``max_failed_fraction``: above it the job exits 1 once the
    manifest is written. ``allow_unpromoted``: run the newest versions of a family with no
    ``alias`` versions (refused otherwise). ``model``: one family name, or several (one per
    organ, all of one modality): each scan is then read once and segmented by every model.
    ``output_format``: ``"nifti"`` or ``"nifti,dicom-seg"`` (or a sequence of those names).
    ``postprocess``: ``auto`` (each model's registered decision), ``on`` or ``off``.
    """

    archive: Path
    out: Path
    model: str | tuple[str, ...]
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
    output_format: str | tuple[str, ...] = "nifti"
    postprocess: str = "auto"
    recompute: bool = False
    max_failed_fraction: float = 0.05
    max_voxels: int = DEFAULT_MAX_VOXELS
    allow_unpromoted: bool = False
    pseudonymize: bool = False
    id_map: Path | None = None
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        models = (self.model,) if isinstance(self.model, str) else tuple(self.model)
        models = tuple(str(m).strip() for m in models)
        if not models or any(not m for m in models):
            raise SegmentError(f"--model names a registered model family, got {self.model!r}")
        if len(set(models)) != len(models):
            raise SegmentError(f"--model {' --model '.join(models)}: a family is named twice")
        object.__setattr__(self, "model", models)
        object.__setattr__(self, "output_format", parse_output_formats(self.output_format))
        if self.postprocess not in POSTPROCESS_MODES:
            raise SegmentError(f"--postprocess must be one of {', '.join(POSTPROCESS_MODES)}, got {self.postprocess!r}")
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


def parse_output_formats(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"nifti,dicom-seg"`` (or a sequence of names) -> ``("nifti", "dicom-seg")``, checked:
    known names, each once; NIfTI is always among them (the manifest, resume and evaluate read
    its masks)."""
    names = value.split(",") if isinstance(value, str) else list(value)
    formats = tuple(str(n).strip().lower() for n in names if str(n).strip())
    unknown = [f for f in formats if f not in OUTPUT_FORMATS]
    if unknown or not formats:
        raise SegmentError(f"--output-format takes {' and '.join(OUTPUT_FORMATS)} (comma-separated), got {value!r}")
    if len(set(formats)) != len(formats):
        raise SegmentError(f"--output-format names a format twice: {value!r}")
    if "nifti" not in formats:
        raise SegmentError(f"--output-format {value}: NIfTI masks are always written; pass nifti,{','.join(formats)}")
    return tuple(f for f in OUTPUT_FORMATS if f in formats)
