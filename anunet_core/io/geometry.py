"""The record that maps model slices back onto a scan's voxel grid: :class:`SliceGeometry`.

:func:`anunet_core.preprocessing.preprocess_volume` makes it, :func:`~anunet_core.preprocessing.restore_mask`
and :func:`anunet_core.io.nifti.write_mask` use it, and the segment job stores it as JSON between
its stages. It lives below both so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from nibabel.orientations import inv_ornt_aff

__all__ = ["SliceGeometry"]


@dataclass(frozen=True)
class SliceGeometry:
    """Everything needed to map model slices back onto the source voxel grid.

    Attributes:
        original_shape: source ``volume.array`` shape ``(I, J, K0)``.
        original_affine: source affine (voxel -> RAS+ mm), 4 rows of 4 floats.
        ornt: the orientation transform applied (nibabel ``ornt``, one ``(ras_axis, flip)``
            pair per source axis; ``flip`` is 1 or -1): source array -> canonical RAS.
        inplane_shape: ``(rows, cols)`` of each slice before resizing (radiological view).
        size: the slices' side after resizing (model input is ``(K, size, size)``).
        modality: ``"CT"`` or ``"MR"``.
        intensity_window: the input intensities mapped to the ends of ``output_range``: the
            HU window for CT, the measured percentile values for MR.
        percentiles: MR percentiles used (e.g. ``(0.5, 99.5)``); ``None`` for CT.
        output_range: the normalised intensity range, ``(0.0, 1.0)``
            (:data:`anunet_core.preprocessing.OUTPUT_RANGE`).
        version: :data:`anunet_core.preprocessing.PREPROCESSING_VERSION` of the code that made it.

    ``to_dict()`` gives JSON-ready plain lists/numbers; ``from_dict`` rebuilds an equal record.
    """

    original_shape: tuple[int, int, int]
    original_affine: tuple[tuple[float, float, float, float], ...]
    ornt: tuple[tuple[int, int], ...]
    inplane_shape: tuple[int, int]
    size: int
    modality: str
    intensity_window: tuple[float, float]
    percentiles: tuple[float, float] | None
    output_range: tuple[float, float]
    version: str

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "original_shape", tuple(int(v) for v in self.original_shape))
        set_(
            self,
            "original_affine",
            tuple(tuple(float(v) for v in row) for row in np.asarray(self.original_affine)),
        )
        set_(self, "ornt", tuple((int(a), int(f)) for a, f in np.asarray(self.ornt)))
        set_(self, "inplane_shape", tuple(int(v) for v in self.inplane_shape))
        set_(self, "size", int(self.size))
        set_(self, "modality", str(self.modality).upper())
        set_(self, "intensity_window", tuple(float(v) for v in self.intensity_window))
        if self.percentiles is not None:
            set_(self, "percentiles", tuple(float(v) for v in self.percentiles))
        set_(self, "output_range", tuple(float(v) for v in self.output_range))
        if len(self.original_shape) != 3 or len(self.ornt) != 3:
            raise ValueError("SliceGeometry: original_shape and ornt must have 3 entries")
        if np.asarray(self.original_affine).shape != (4, 4):
            raise ValueError("SliceGeometry: original_affine must be 4x4")
        if sorted(a for a, _ in self.ornt) != [0, 1, 2] or any(
            f not in (-1, 1) for _, f in self.ornt
        ):
            raise ValueError(f"SliceGeometry: invalid orientation transform {self.ornt}")
        if len(self.inplane_shape) != 2 or self.size < 1:
            raise ValueError("SliceGeometry: inplane_shape must be (rows, cols), size >= 1")

    @property
    def num_slices(self) -> int:
        """K: the number of axial slices (the source axis that became S)."""
        src_axis = [a for a, (ras, _) in enumerate(self.ornt) if ras == 2][0]
        return self.original_shape[src_axis]

    @property
    def affine(self) -> np.ndarray:
        """The source affine as a (4, 4) float64 array."""
        return np.array(self.original_affine, dtype=np.float64)

    @property
    def canonical_affine(self) -> np.ndarray:
        """Affine of the reoriented (RAS) array: voxel -> RAS+ mm."""
        return self.affine @ inv_ornt_aff(np.array(self.ornt, float), self.original_shape)

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """Pixel size in mm of the resized slices, (row, col) = (A-P, R-L) axes."""
        sp = np.linalg.norm(self.canonical_affine[:3, :3], axis=0)  # (R, A, S) axes
        rows, cols = self.inplane_shape
        return (float(sp[1] * rows / self.size), float(sp[0] * cols / self.size))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (lists and numbers); inverse of :meth:`from_dict`."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = _to_lists(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SliceGeometry:
        """Rebuild from :meth:`to_dict` output (keeps the recorded ``version``)."""
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise ValueError(f"SliceGeometry.from_dict: missing keys {sorted(missing)}")
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"SliceGeometry.from_dict: unknown keys {sorted(unknown)}")
        return cls(**data)


def _to_lists(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_to_lists(v) for v in value]
    return value
