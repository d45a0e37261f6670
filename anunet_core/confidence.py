"""How sure a Dice drop is: the paired bootstrap over validation cases.

Both choices made at registration from a handful of validation cases rest on it: the pruning
depth (``anunet_platform.selection``, ``--depth auto``) and the exit rule of per-slice adaptive
depth (:func:`anunet_core.exit_rule.calibrate_exit_rule`). A choice is accepted when the upper
``confidence`` percentile of its mean volume-Dice drop against the reference, resampled over the
cases, is within the allowed drop; with fewer than :data:`MIN_BOOTSTRAP_CASES` cases no choice
is confident.

Why per case and paired: on a handful of cases the pooled Dice of two depths (or two exit rules)
differ by less than their noise, and the cheaper one they pick does not hold on unseen cases
(issue 16 measured it for both choices). Pure NumPy, deterministic (a fixed seed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "DEFAULT_CONFIDENCE",
    "MIN_BOOTSTRAP_CASES",
    "bootstrap_dice_drop",
    "percent_text",
    "percentile_name",
]

DEFAULT_CONFIDENCE = 0.95
"""The bootstrap's one-sided confidence: the upper percentile of the mean drop that must be within it."""
BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the validation cases: the 95th percentile of 2000 moves by ~0.1 of its own spread."""
BOOTSTRAP_SEED = 16
"""The bootstrap's fixed seed: the same metrics always give the same choice (and reason)."""
MIN_BOOTSTRAP_CASES = 5
"""Fewer validation cases give no confident choice. With n cases the bootstrap has only
C(2n-1, n) distinct resamples (10 for 3 cases, 35 for 4, 126 for 5): its upper percentile is then
little more than the largest case difference, and a percentile interval on so few cases covers
the true mean drop far less often than it claims. 5 is a floor, not a target: the interval is
only usefully narrow from a few tens of cases."""


def bootstrap_dice_drop(
    case_dice: np.ndarray | Sequence[Sequence[float]],
    reference: int,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Paired bootstrap of each row's mean volume-Dice drop against one reference row.

    Args:
        case_dice: ``(D, N)`` volume Dice (0..1) of N validation cases (the same cases, in the
            same order) under D alternatives: depths, or exit rules.
        reference: the row of the reference (the best depth, or every slice at max depth), 0..D-1.
        confidence: the upper percentile to return, in (0, 1). Default 0.95.
        resamples: B, resamples of the N cases with replacement. Default 2000.
        seed: seed of ``numpy.random.default_rng``; the same resamples serve every row (so the
            rows stay paired) and do not depend on D. Default :data:`BOOTSTRAP_SEED`.

    Returns:
        ``(mean_drop, upper)``, both ``(D,)``: the observed mean of ``case_dice[reference] -
        case_dice[d]`` over the cases, and the ``confidence`` percentile (numpy's linear
        interpolation) of that mean over the B resamples. The reference row is 0, 0.
    """
    dice = np.asarray(case_dice, dtype=np.float64)
    if dice.ndim != 2 or dice.shape[1] == 0:
        raise ValueError(f"case_dice must be (rows, cases) with at least one case, got shape {dice.shape}")
    if not 0 <= reference < dice.shape[0]:
        raise ValueError(f"reference must be a row of case_dice (0..{dice.shape[0] - 1}), got {reference!r}")
    difference = dice[reference] - dice  # (D, N)
    cases = difference.shape[1]
    picks = np.random.default_rng(seed).integers(0, cases, size=(resamples, cases))  # (B, N)
    # mean over each resample's picks = (counts of each case) @ difference / N: one (B, N) x (N, D) product
    flat = (np.arange(resamples)[:, None] * cases + picks).ravel()
    counts = np.bincount(flat, minlength=resamples * cases).reshape(resamples, cases).astype(np.float64)  # (B, N)
    means = np.einsum("bn,dn->bd", counts, difference) / cases  # (B, D); no BLAS threads for so small a product
    upper = np.percentile(means, 100.0 * confidence, axis=0)
    return difference.mean(axis=1), upper


def percent_text(confidence: float) -> str:
    """A confidence as a percent, without float noise: ``0.95 -> "95"``, ``0.975 -> "97.5"``."""
    return f"{round(100.0 * confidence, 6):g}"


def percentile_name(confidence: float) -> str:
    """The upper percentile's name: ``0.95 -> "95th"``, ``0.9 -> "90th"``, ``0.975 -> "97.5th"``."""
    text = percent_text(confidence)
    if not text.isdigit():
        return f"{text}th"
    n = int(text)
    return text + ("th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th"))
