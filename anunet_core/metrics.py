"""Segmentation metrics: overlap (Dice, IoU, precision, recall) and surface distances in mm.

Based on: Li C, Tan Y, Chen W, et al. "ANU-Net: Attention-based nested U-Net to exploit full
resolution features for medical image segmentation." Computers & Graphics 90 (2020) 11-20
(section 4.2, Eq. 9-12). With TP, FP, FN the true positive, false positive and false
negative voxel counts:

- Dice      = 2 TP / (2 TP + FP + FN)   (Eq. 9)
- IoU       = TP / (TP + FP + FN)       (Eq. 10)
- Precision = TP / (TP + FP)            (Eq. 11)
- Recall    = TP / (TP + FN)            (Eq. 12)

Conventions (one rule each, used everywhere in this module):

- Foreground: a voxel is foreground when its value is ``> 0.5`` (bool True, integer >= 1, or a
  probability above 0.5, the threshold used at inference).
- Zero denominator: a metric whose denominator is 0 is 1.0 when the case is segmented
  perfectly (FP == 0 and FN == 0: nothing to find and nothing predicted), else 0.0. Both masks
  empty -> all four are 1.0; empty prediction on a non-empty truth -> all four are 0.0;
  non-empty prediction on an empty truth -> all four are 0.0. The metrics are never NaN.
- Slice vs volume: ``per="slice"`` gives one value per 2D slice; ``per="volume"`` pools the
  counts of every voxel first (the volume Dice is NOT the mean of the slice Dices). Counts
  add up, so a volume split into batches of slices is scored by summing its counts.
- Surface distances (HD95, ASSD) are in millimetres, from the voxel spacing (one value per
  array axis, in the array's axis order). A surface voxel is a foreground voxel with a
  background face neighbour (4-connected in 2D, 6-connected in 3D); voxels outside the array
  count as background. HD95 follows MONAI (``compute_hausdorff_distance(percentile=95)``):
  the larger of the two directed 95th percentiles (numpy linear interpolation). Both masks
  empty -> 0.0; exactly one empty -> ``inf`` (aggregate with that in mind, e.g. report the
  number of infinite cases, or use a median).

Example::

    >>> pred = torch.tensor([[[1, 1], [0, 0]]])          # (B, H, W) = (1, 2, 2)
    >>> truth = torch.tensor([[[1, 0], [1, 0]]])
    >>> dice(confusion_counts(pred, truth))              # TP=1, FP=1, FN=1
    tensor([0.5000], dtype=torch.float64)
    >>> average_surface_distance(pred[0], truth[0], spacing=(2.0, 0.5))  # (0+0.5+0+2)/4 mm
    0.625
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "ConfusionCounts",
    "average_surface_distance",
    "confusion_counts",
    "dice",
    "hausdorff_distance_95",
    "iou",
    "overlap_metrics",
    "precision",
    "recall",
    "surface_distances",
]


@dataclass(frozen=True)
class ConfusionCounts:
    """True positive, false positive and false negative counts (int64 tensors, equal shapes).

    Shape ``(B,)`` for per-slice counts, ``()`` for a whole volume. ``a + b`` adds element-wise
    (accumulate a volume over batches of slices); ``sum(list_of_counts)`` works too.
    ``.sum()`` sums over the leading axis (slices -> one volume).
    """

    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        if self.tp.shape != other.tp.shape:
            raise ValueError(
                f"cannot add ConfusionCounts of shapes {tuple(self.tp.shape)} and "
                f"{tuple(other.tp.shape)}; sum() per-slice counts to one volume first"
            )
        return ConfusionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def __radd__(self, other: object) -> ConfusionCounts:
        if isinstance(other, int) and other == 0:  # the start value of Python's sum()
            return self
        return NotImplemented

    def sum(self) -> ConfusionCounts:
        """Counts summed over the leading axis: ``(B,) -> ()``; scalar counts are returned as is."""
        if self.tp.ndim == 0:
            return self
        return ConfusionCounts(self.tp.sum(dim=0), self.fp.sum(dim=0), self.fn.sum(dim=0))


def _foreground(mask: torch.Tensor) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    return mask if mask.dtype == torch.bool else mask > 0.5


def confusion_counts(
    pred: torch.Tensor, target: torch.Tensor, per: str = "slice"
) -> ConfusionCounts:
    """Count TP, FP and FN of a binary prediction against the ground truth.

    Args:
        pred, target: masks of equal shape; foreground = value > 0.5 (bool, 0/1 integers, or
            probabilities). ``per="slice"``: ``(B, 1, H, W)`` or ``(B, H, W)``.
            ``per="volume"``: any shape, e.g. a volume ``(D, H, W)`` or its slices ``(D, 1, H, W)``.
        per: ``"slice"`` -> counts of shape ``(B,)``, one per slice; ``"volume"`` -> scalar
            counts over every voxel.
    """
    pred, target = _foreground(pred), _foreground(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    if per == "slice":
        if not (pred.ndim == 3 or (pred.ndim == 4 and pred.shape[1] == 1)):
            raise ValueError(
                f"per='slice' expects (B, 1, H, W) or (B, H, W) masks, got {tuple(pred.shape)}"
            )
        dims = tuple(range(1, pred.ndim))
    elif per == "volume":
        dims = tuple(range(pred.ndim))
    else:
        raise ValueError(f"per must be 'slice' or 'volume', got {per!r}")

    def count(m: torch.Tensor) -> torch.Tensor:
        return m.sum(dim=dims, dtype=torch.int64) if dims else m.to(torch.int64)

    return ConfusionCounts(
        tp=count(pred & target), fp=count(pred & ~target), fn=count(~pred & target)
    )


def _ratio(num: torch.Tensor, den: torch.Tensor, c: ConfusionCounts) -> torch.Tensor:
    """``num / den`` in float64; where ``den == 0``: 1.0 if FP == FN == 0, else 0.0."""
    num, den = num.to(torch.float64), den.to(torch.float64)
    perfect = ((c.fp == 0) & (c.fn == 0)).to(torch.float64)
    return torch.where(den > 0, num / den.clamp(min=1.0), perfect)


def dice(c: ConfusionCounts) -> torch.Tensor:
    """Dice = 2 TP / (2 TP + FP + FN) (Eq. 9), float64 of the counts' shape."""
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, c)


def iou(c: ConfusionCounts) -> torch.Tensor:
    """IoU = TP / (TP + FP + FN) (Eq. 10), float64 of the counts' shape."""
    return _ratio(c.tp, c.tp + c.fp + c.fn, c)


def precision(c: ConfusionCounts) -> torch.Tensor:
    """Precision = TP / (TP + FP) (Eq. 11), float64 of the counts' shape."""
    return _ratio(c.tp, c.tp + c.fp, c)


def recall(c: ConfusionCounts) -> torch.Tensor:
    """Recall = TP / (TP + FN) (Eq. 12), float64 of the counts' shape."""
    return _ratio(c.tp, c.tp + c.fn, c)


def overlap_metrics(
    pred: torch.Tensor, target: torch.Tensor, per: str = "slice"
) -> dict[str, torch.Tensor]:
    """Dice, IoU, precision and recall (keys ``dice``, ``iou``, ``precision``, ``recall``).

    Float64 tensors of shape ``(B,)`` for ``per="slice"``, ``()`` for ``per="volume"``; inputs
    as in :func:`confusion_counts`.
    """
    c = confusion_counts(pred, target, per=per)
    return {"dice": dice(c), "iou": iou(c), "precision": precision(c), "recall": recall(c)}


def _as_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask > 0.5


def _surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a background face neighbour (outside the array = background)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: ``(pred -> target, target -> pred)``.

    Args:
        pred, target: masks of equal shape ``(H, W)`` or ``(D, H, W)`` (numpy or torch;
            foreground = value > 0.5). Pass the spatial array only, without batch/channel axes.
        spacing: voxel size in mm per array axis, same order as the array, e.g.
            ``(slice_thickness, row_spacing, col_spacing)`` for ``(D, H, W)``.

    Returns:
        Two float64 1D arrays: for each surface voxel of ``pred``, the distance to the nearest
        surface voxel of ``target``, and vice versa. When one mask is empty, the distances
        from the other (non-empty) surface are ``inf``; an empty mask gives an empty array.
    """
    pred, target = _as_mask(pred), _as_mask(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected 2D (H, W) or 3D (D, H, W) masks, got shape {pred.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim or not all(s > 0 for s in spacing):
        raise ValueError(
            f"spacing must be {pred.ndim} positive values (mm, one per axis), got {spacing}"
        )
    pred_surface, target_surface = _surface(pred), _surface(target)

    def directed(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        if not src.any():
            return np.zeros(0, dtype=np.float64)
        if not dst.any():
            return np.full(int(src.sum()), np.inf)
        return ndimage.distance_transform_edt(~dst, sampling=spacing)[src].astype(np.float64)

    return directed(pred_surface, target_surface), directed(target_surface, pred_surface)


def hausdorff_distance_95(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm (MONAI convention).

    ``max(percentile(d_pred_to_target, 95), percentile(d_target_to_pred, 95))``; 0.0 when
    both masks are empty, ``inf`` when exactly one is. Shapes and spacing as in
    :func:`surface_distances`.
    """
    d_pt, d_tp = surface_distances(pred, target, spacing)
    if d_pt.size == 0 and d_tp.size == 0:
        return 0.0
    if d_pt.size == 0 or d_tp.size == 0:
        return float("inf")
    return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))


def average_surface_distance(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
) -> float:
    """Average symmetric surface distance (ASSD) in mm.

    ``(sum(d_pred_to_target) + sum(d_target_to_pred)) / (n_pred_surface + n_target_surface)``;
    0.0 when both masks are empty, ``inf`` when exactly one is. Shapes and spacing as in
    :func:`surface_distances`.
    """
    d_pt, d_tp = surface_distances(pred, target, spacing)
    if d_pt.size == 0 and d_tp.size == 0:
        return 0.0
    if d_pt.size == 0 or d_tp.size == 0:
        return float("inf")
    return float((d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size))
