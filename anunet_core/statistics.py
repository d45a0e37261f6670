"""Per-organ statistics of one case, as TotalSegmentator's ``--statistics`` reports them.

:func:`organ_statistics` measures one organ's 0/1 mask on its scan's voxel grid and returns an
:class:`OrganStatistics`:

- size: voxel count and volume in mL (voxels x :func:`anunet_core.io.voxel_volume_ml`);
- intensity under the mask: mean and population standard deviation (ddof 0, float64), in HU
  for CT and arbitrary units for MR (:data:`INTENSITY_UNITS`);
- position in RAS+ mm (the affine's world space: +x right, +y anterior, +z superior): the
  centroid (mean of the voxel centres) and an axis-aligned bounding box. The box is that of
  the 8 corners of the mask's index box ``[i0, i1] x [j0, j1] x [k0, k1]`` mapped through the
  affine: exactly the box of the voxel centres for a grid whose axes are world axes (flipped
  or permuted too), and a box that holds them all for an oblique grid;
- completeness: ``touches_border`` when the mask reaches a face of the scan's grid (the organ
  runs out of the field of view, so its volume is a lower bound), with the touched faces named
  by RAS letters (:func:`nibabel.aff2axcodes`: the face at the last index of an axis coded
  ``"S"`` is the superior one, the face at index 0 the inferior one).

An empty mask has 0 voxels, 0.0 mL, None for the intensities and positions, and does not touch
the border. :meth:`OrganStatistics.to_dict` is the JSON form (rounded, see there).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import nibabel as nib
import numpy as np

from anunet_core.io.volume import fmt_shape, voxel_volume_ml
from anunet_core.postprocessing import foreground
from anunet_core.vocabulary import validate_modality, validate_organ

__all__ = ["INTENSITY_UNITS", "OPPOSITE_SIDE", "OrganStatistics", "organ_statistics"]

INTENSITY_UNITS: Mapping[str, str] = MappingProxyType({"CT": "HU", "MR": "a.u."})
"""Modality -> the unit of its intensities (CT Hounsfield units, MR arbitrary units)."""

OPPOSITE_SIDE: Mapping[str, str] = MappingProxyType({"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"})
"""RAS letter -> the opposite one (the face at index 0 of an axis coded ``"S"`` is ``"I"``)."""

_MM_DIGITS = 2  # positions: 0.01 mm, far below any voxel
_ML_DIGITS = 3  # volumes: 0.001 mL = 1 mm^3, a millionth of a liver
_INTENSITY_DIGITS = 2  # HU / a.u.: 0.01


Point = tuple[float, float, float]


@dataclass(frozen=True)
class OrganStatistics:
    """Statistics of one organ's mask in one scan.

    Attributes:
        organ: one of :data:`~anunet_core.vocabulary.ORGANS`.
        voxels: foreground voxels.
        volume_ml: ``voxels`` x the voxel volume, mL.
        mean_intensity: mean of the scan under the mask (HU or a.u.); None when empty.
        std_intensity: population standard deviation (ddof 0) of the same; None when empty.
        intensity_unit: ``"HU"`` (CT) or ``"a.u."`` (MR).
        bbox_min_mm, bbox_max_mm: RAS+ mm corners of the axis-aligned box (see the module
            docstring); None when empty.
        centroid_mm: RAS+ mm, the mean of the voxel centres; None when empty.
        touches_border: the mask reaches a face of the scan's grid (the organ is cut by the
            field of view: its volume is incomplete).
        border_sides: the touched faces as RAS letters, sorted (e.g. ``("I", "S")``); ``()``
            when none.
    """

    organ: str
    voxels: int
    volume_ml: float
    mean_intensity: float | None
    std_intensity: float | None
    intensity_unit: str
    bbox_min_mm: Point | None
    bbox_max_mm: Point | None
    centroid_mm: Point | None
    touches_border: bool
    border_sides: tuple[str, ...]

    def to_dict(self) -> dict:
        """JSON-ready: plain ints, floats, strings, lists and None. Rounded for reading and
        stable diffs: mm to 0.01, mL to 0.001, intensities to 0.01 (the attributes keep full
        precision)."""

        def point(p: Point | None) -> list[float] | None:
            return None if p is None else [_round(v, _MM_DIGITS) for v in p]

        return {
            "organ": self.organ,
            "voxels": int(self.voxels),
            "volume_ml": _round(self.volume_ml, _ML_DIGITS),
            "mean_intensity": _round(self.mean_intensity, _INTENSITY_DIGITS),
            "std_intensity": _round(self.std_intensity, _INTENSITY_DIGITS),
            "intensity_unit": self.intensity_unit,
            "bbox_min_mm": point(self.bbox_min_mm),
            "bbox_max_mm": point(self.bbox_max_mm),
            "centroid_mm": point(self.centroid_mm),
            "touches_border": bool(self.touches_border),
            "border_sides": list(self.border_sides),
        }


def _round(value: float | None, digits: int) -> float | None:
    """``value`` rounded to ``digits`` decimals as a Python float, never ``-0.0``; None stays."""
    return None if value is None else round(float(value), digits) + 0.0


def _point(values: np.ndarray) -> Point:
    return (float(values[0]), float(values[1]), float(values[2]))


def organ_statistics(
    mask: np.ndarray, intensities: np.ndarray, affine: np.ndarray, organ: str, modality: str
) -> OrganStatistics:
    """The :class:`OrganStatistics` of ``organ``'s ``mask`` in one scan.

    Args:
        mask: ``(I, J, K)`` bool or integer 0/1 on the scan's voxel grid.
        intensities: ``(I, J, K)`` the scan: HU for CT (rescale applied), a.u. for MR.
        affine: ``(4, 4)`` voxel index -> RAS+ mm (nibabel's convention).
        organ: one of :data:`~anunet_core.vocabulary.ORGANS`.
        modality: ``"CT"`` or ``"MR"``.

    One pass over the mask (its flat foreground indices, found once). ``ValueError`` for a
    mask that is not 0/1, shapes that differ, an affine that is not a finite, invertible 4x4,
    or intensities under the mask that are not finite.
    """
    organ = validate_organ(organ)
    unit = INTENSITY_UNITS[validate_modality(modality)]
    inside = foreground(mask)
    image = np.asarray(intensities)
    if image.shape != inside.shape:
        raise ValueError(f"mask shape {fmt_shape(inside.shape)} differs from intensities shape {fmt_shape(image.shape)}")
    affine = _checked_affine(affine)
    flat = np.flatnonzero(inside)
    if flat.size == 0:
        return OrganStatistics(organ, 0, 0.0, None, None, unit, None, None, None, False, ())

    index = np.unravel_index(flat, inside.shape)  # (i, j, k) of each voxel, C order
    values = (image.reshape(-1)[flat] if image.flags.c_contiguous else image[index]).astype(np.float64)
    mean = float(values.mean())
    if not np.isfinite(mean):  # a NaN or an infinity under the mask
        raise ValueError(f"intensities under the {organ} mask are not all finite (mean {mean})")
    std = float(values.std())

    low = np.array([int(a.min()) for a in index])
    high = np.array([int(a.max()) for a in index])
    matrix, offset = affine[:3, :3], affine[:3, 3]
    centroid = matrix @ np.array([a.mean() for a in index]) + offset
    corners = np.array(list(itertools.product(*zip(low, high))), dtype=np.float64)  # (8, 3)
    world = corners @ matrix.T + offset
    sides = _border_sides(low, high, inside.shape, affine)
    return OrganStatistics(
        organ=organ,
        voxels=int(flat.size),
        volume_ml=flat.size * voxel_volume_ml(affine),
        mean_intensity=mean,
        std_intensity=std,
        intensity_unit=unit,
        bbox_min_mm=_point(world.min(axis=0)),
        bbox_max_mm=_point(world.max(axis=0)),
        centroid_mm=_point(centroid),
        touches_border=bool(sides),
        border_sides=sides,
    )


def _checked_affine(affine: np.ndarray) -> np.ndarray:
    """``affine`` as float64 ``(4, 4)``: finite, invertible; ``ValueError`` otherwise."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    if not np.all(np.isfinite(affine)):
        raise ValueError("affine has non-finite values")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("affine is singular (a zero voxel size?)")
    return affine


def _border_sides(low: np.ndarray, high: np.ndarray, shape: tuple[int, ...], affine: np.ndarray) -> tuple[str, ...]:
    """The RAS letters of the grid faces the index box ``[low, high]`` reaches, sorted."""
    codes = nib.aff2axcodes(affine)  # the direction each index axis runs toward
    sides = set()
    for axis, code in enumerate(codes):
        if low[axis] == 0:
            sides.add(OPPOSITE_SIDE[code])
        if high[axis] == shape[axis] - 1:
            sides.add(code)
    return tuple(sorted(sides))
