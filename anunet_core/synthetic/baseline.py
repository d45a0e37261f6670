"""What a predictor that learns nothing scores on the phantoms (:func:`trivial_predictor_dice`).

Scores (12 training and 6 test phantoms, five cohorts): liver Dice 0.50-0.65 for the fixed
mask, 0.59-0.63 for the best CT HU window, 0.37-0.58 for the best T2SPIR and 0.40-0.66 for the
best T1 intensity window; spleen and kidneys at most 0.48. So a trained model's liver Dice of
0.9 or more comes from learning shape and context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anunet_core.synthetic.phantom import Phantom
from anunet_core.vocabulary import ORGAN_LABEL_VALUES, validate_organ

__all__ = ["trivial_predictor_dice"]


def trivial_predictor_dice(
    train: Sequence[Phantom], test: Sequence[Phantom], organ: str
) -> dict[str, float]:
    """Mean volume Dice on ``test`` of three predictors that learn nothing about shape.

    - ``all_background``: predicts no organ anywhere (0.0 on every case with the organ).
    - ``fixed_blob``: the organ's mean mask over ``train`` thresholded at 0.5, a predictor that
      ignores the image (same voxel grid ``(I, J, K)`` required); ``fixed_blob_tuned``: the
      same with the threshold (``blob_level``) that scores best on ``train``.
    - ``intensity_window``: the intensity window ``[lo, hi)`` (HU for CT) with the best pooled
      Dice on ``train`` (searched over the organ's intensity quantiles; MR scaled per volume
      by its 99th percentile), applied to every voxel of each test case.

    Returns:
        ``{"all_background", "fixed_blob", "fixed_blob_tuned", "intensity_window": mean
        Dice, "blob_level", "window_lo", "window_hi": the chosen parameters}``.
    """
    values = ORGAN_LABEL_VALUES[validate_organ(organ)]
    if not train or not test:
        raise ValueError("train and test must both hold at least one phantom")
    shapes = {p.shape for p in (*train, *test)}
    if len(shapes) != 1:
        raise ValueError(f"all phantoms must share one voxel grid, got shapes {sorted(shapes)}")
    truth = [np.isin(p.labels, values) for p in test]
    background = float(np.mean([_dice(np.zeros_like(t), t) for t in truth]))

    mean_mask = np.mean([np.isin(p.labels, values) for p in train], axis=0)
    fixed = float(np.mean([_dice(mean_mask >= 0.5, t) for t in truth]))
    best = _best_level(mean_mask)
    fixed_tuned = float(np.mean([_dice(mean_mask >= best, t) for t in truth]))

    lo, hi = _best_window(train, values)
    window = float(np.mean([
        _dice((img >= lo) & (img < hi), t)
        for img, t in zip((_threshold_intensity(p) for p in test), truth)
    ]))
    return {
        "all_background": background,
        "fixed_blob": fixed,
        "fixed_blob_tuned": fixed_tuned,
        "blob_level": best,
        "intensity_window": window,
        "window_lo": lo,
        "window_hi": hi,
    }


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Volume Dice 2TP / (2TP + FP + FN) (Eq. 9) of two bool ``(I, J, K)``; 1.0 when both are
    empty."""
    tp = int(np.count_nonzero(pred & truth))
    den = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    return 1.0 if den == 0 else 2.0 * tp / den


def _threshold_intensity(p: Phantom) -> np.ndarray:
    """CT: HU as is; MR: divided by the volume's 99th percentile (arbitrary units)."""
    if p.modality == "CT":
        return p.image
    return p.image / max(float(np.percentile(p.image, 99)), 1.0)


def _best_level(mean_mask: np.ndarray) -> float:
    """The threshold on the train cases' mean mask with the best pooled Dice on those cases.

    Over n train cases, "mean_mask >= level" has TP = n * (sum of mean_mask where it is
    >= level), |pred| = n * (voxels where it is >= level), |truth| = n * (sum of mean_mask).
    """
    flat = np.sort(mean_mask[mean_mask > 0])
    if not flat.size:
        return 0.5
    levels = np.unique(flat)
    first = np.searchsorted(flat, levels, side="left")
    tail_sum = np.concatenate([np.cumsum(flat[::-1])[::-1], [0.0]])[first]
    dice = 2 * tail_sum / ((flat.size - first) + flat.sum())
    return float(levels[int(np.argmax(dice))])


def _best_window(train: Sequence[Phantom], values: tuple[int, ...]) -> tuple[float, float]:
    """The window ``[lo, hi)`` with the best pooled Dice on ``train``, both ends searched over
    81 quantiles of the organ's intensities (via cumulative histograms: every pair at once)."""
    organ_vals = np.concatenate(
        [_threshold_intensity(p)[np.isin(p.labels, values)] for p in train])
    edges = np.unique(np.quantile(organ_vals, np.linspace(0.0, 1.0, 81)))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    h_org = np.zeros(len(edges) - 1)
    h_all = np.zeros(len(edges) - 1)
    for p in train:
        img = _threshold_intensity(p)
        h_all += np.histogram(img, bins=edges)[0]
        h_org += np.histogram(img[np.isin(p.labels, values)], bins=edges)[0]
    c_org = np.concatenate([[0.0], np.cumsum(h_org)])
    c_all = np.concatenate([[0.0], np.cumsum(h_all)])
    tp = c_org[None, :] - c_org[:, None]  # [a, b]: window [edges[a], edges[b])
    pred = c_all[None, :] - c_all[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(pred > 0, 2 * tp / (pred + organ_vals.size), 0.0)
    dice[np.tril_indices_from(dice)] = -1.0
    a, b = np.unravel_index(int(np.argmax(dice)), dice.shape)
    return float(edges[a]), float(edges[b])
