"""Per-slice adaptive depth: the exit rule, its signals, and its calibration (pure functions).

An ANU-Net of depth 4 has a segmentation head after every anti-diagonal of nodes (L1..L4); the
heads of one forward agree more and more as the depth grows. Adaptive segmentation runs every
slice to its first head and sends a slice one depth deeper only while its heads disagree:

1. **Confidently empty.** A slice whose largest probability is below ``empty_max_prob`` stops at
   once, also at its first head (the organ-absent early exit; ``0`` disables it).
2. **Settled.** From depth 2 on, a slice stops when the masks (``p > 0.5``) of heads ``d`` and
   ``d - 1`` have a Dice of at least ``tau`` (``tau > 1``: never by agreement) *and* at most
   ``uncertain_max`` of its pixels are uncertain (``p`` in :data:`UNCERTAIN_BAND`).
3. **Deep enough.** Every slice stops at ``max_depth``.

No slice stops below ``min_depth``. The per-slice numbers the rule reads are
:class:`SliceSignals` (:func:`slice_signals`); the decision is :func:`exits`.

Calibration (:func:`calibrate_exit_rule`) replays every rule of a small grid on validation
cases whose heads were all computed once (:class:`CaseHeads`, :func:`simulate`) and keeps the
rule with the lowest expected cost (GFLOP per slice) whose volume-Dice drop against max depth is
within ``max_dice_drop`` with confidence (a paired bootstrap over the cases,
:mod:`anunet_core.confidence`). With fewer cases than that needs, only confidently empty slices
may exit early, and only if no case loses more than the drop. A case's signals and its
per-slice confusion counts at every depth are computed once, so one rule costs a few vectorised numpy operations over
``(D, slices)`` arrays: the default grid (756 rules) on 4 cases of 48 slices of 128 x 128 with
4 heads calibrates in about 0.6 s on a busy 2-core CPU (0.13 s to prepare, 0.5 ms a rule).

Conventions:

- Probabilities are sigmoids in ``[0, 1]``; a pixel is foreground when ``p > 0.5``.
- Dice of two masks = ``2 |A ∩ B| / (|A| + |B|)``, ``1.0`` when both are empty (as in
  :mod:`anunet_core.metrics`). The volume Dice of a case pools the counts of all its slices.
- Cost: ``gflops[d]`` is the cumulative GFLOP of one slice run up to head ``d`` (depths
  ``1..max_depth``); a slice that exits at ``d`` costs ``gflops[d]``.

Example::

    >>> rule = ExitRule(tau=0.95, uncertain_max=0.002, empty_max_prob=0.1)
    >>> signals = slice_signals(prob_l2, prev_prob=prob_l1)       # (K, H, W) each
    >>> stop = exits(signals, rule, depth=2)                      # (K,) bool, True = stop
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from anunet_core.confidence import (
    DEFAULT_CONFIDENCE,
    MIN_BOOTSTRAP_CASES,
    bootstrap_dice_drop,
    percent_text,
    percentile_name,
)
from anunet_core.vocabulary import MAX_DEPTH

__all__ = [
    "DEFAULT_GRID",
    "MAX_DEPTH",
    "TAU_NEVER",
    "THRESHOLD",
    "UNCERTAIN_BAND",
    "Calibration",
    "CaseHeads",
    "ExitGrid",
    "ExitRule",
    "Simulation",
    "SliceSignals",
    "calibrate_exit_rule",
    "exits",
    "simulate",
    "slice_signals",
]

UNCERTAIN_BAND: tuple[float, float] = (0.1, 0.9)
"""A pixel is uncertain when ``UNCERTAIN_BAND[0] < p < UNCERTAIN_BAND[1]`` (open interval)."""

THRESHOLD = 0.5
"""A pixel is foreground when ``p > THRESHOLD``."""

TAU_NEVER = 1.01
"""A ``tau`` above 1: no slice ever exits by agreement."""

_TAG_KEYS = ("exit_tau", "exit_uncertain_max", "exit_empty_max_prob", "exit_max_depth")
_MIN_DEPTH_TAG = "exit_min_depth"  # written by to_tags; optional in from_tags (default 1)


@dataclass(frozen=True)
class ExitRule:
    """When a slice stops deepening (see the module docstring).

    Args:
        tau: a slice exits at depth ``d >= 2`` only when the Dice of the masks of heads ``d`` and
            ``d - 1`` is ``>= tau``; in ``[0, 1.01]``, above 1 = never by agreement.
        uncertain_max: ... and at most this fraction (0..1) of its pixels has ``p`` in
            :data:`UNCERTAIN_BAND`; ``1.0`` = no condition.
        empty_max_prob: a slice whose every pixel has ``p < empty_max_prob`` exits at once
            (0..1); ``0.0`` disables the empty exit.
        min_depth: no slice stops before this head; default 1.
        max_depth: every slice stops at this head; default 4.
    """

    tau: float
    uncertain_max: float
    empty_max_prob: float
    min_depth: int = 1
    max_depth: int = MAX_DEPTH

    NEVER: ClassVar[ExitRule]

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau <= TAU_NEVER:
            raise ValueError(f"ExitRule tau must be in [0, {TAU_NEVER}], got {self.tau!r}")
        if not 0.0 <= self.uncertain_max <= 1.0:
            raise ValueError(f"ExitRule uncertain_max must be in [0, 1], got {self.uncertain_max!r}")
        if not 0.0 <= self.empty_max_prob <= 1.0:
            raise ValueError(f"ExitRule empty_max_prob must be in [0, 1], got {self.empty_max_prob!r}")
        for name in ("min_depth", "max_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_DEPTH:
                raise ValueError(f"ExitRule {name} must be an integer in 1..{MAX_DEPTH}, got {value!r}")
        if self.min_depth > self.max_depth:
            raise ValueError(f"ExitRule min_depth {self.min_depth} is above max_depth {self.max_depth}")

    @classmethod
    def never(cls, max_depth: int = MAX_DEPTH) -> ExitRule:
        """The rule that runs every slice to ``max_depth`` (fixed depth; no early exit)."""
        return cls(tau=TAU_NEVER, uncertain_max=0.0, empty_max_prob=0.0, max_depth=max_depth)

    @property
    def exits_early(self) -> bool:
        """Whether any slice can stop before ``max_depth``."""
        return self.exits_by_agreement or (self.min_depth < self.max_depth and self.empty_max_prob > 0.0)

    @property
    def exits_by_agreement(self) -> bool:
        """Whether a slice can stop before ``max_depth`` because its heads agree (not only when
        empty): only then does the share of slices at ``max_depth`` say how hard a case was."""
        return self.tau <= 1.0 and self.max_depth >= 2 and self.min_depth < self.max_depth

    def to_tags(self) -> dict[str, str]:
        """Registry tags (string values; floats exactly, as ``repr``)."""
        return {
            "exit_tau": repr(float(self.tau)),
            "exit_uncertain_max": repr(float(self.uncertain_max)),
            "exit_empty_max_prob": repr(float(self.empty_max_prob)),
            "exit_max_depth": str(int(self.max_depth)),
            _MIN_DEPTH_TAG: str(int(self.min_depth)),
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ExitRule:
        """The rule stored by :meth:`to_tags` (other keys are ignored; ``exit_min_depth`` is
        optional, default 1). Raises a one-line ``ValueError`` when a tag is missing or bad."""
        missing = [key for key in _TAG_KEYS if key not in tags]
        if missing:
            raise ValueError(f"exit rule tags missing: {', '.join(missing)}")
        values: dict[str, float | int] = {}
        for key in _TAG_KEYS[:3]:
            try:
                values[key] = float(tags[key])
            except (TypeError, ValueError):
                raise ValueError(f"exit rule tag {key} is not a number: {tags[key]!r}") from None
        for key in (_TAG_KEYS[3], _MIN_DEPTH_TAG):
            raw = tags.get(key, "1")
            try:
                values[key] = int(str(raw).strip())
            except ValueError:
                raise ValueError(f"exit rule tag {key} is not an integer: {raw!r}") from None
        return cls(
            tau=values["exit_tau"],
            uncertain_max=values["exit_uncertain_max"],
            empty_max_prob=values["exit_empty_max_prob"],
            min_depth=int(values[_MIN_DEPTH_TAG]),
            max_depth=int(values["exit_max_depth"]),
        )

    def describe(self) -> str:
        """One line in words, e.g. for a log or the report."""
        if not self.exits_early:
            return f"no early exit: every slice runs to L{self.max_depth}"
        parts = []
        if self.empty_max_prob > 0.0:
            parts.append(f"slices with every p < {self.empty_max_prob:g} exit at L{self.min_depth}")
        if self.tau <= 1.0 and self.max_depth >= 2:
            first = max(2, self.min_depth)
            condition = f"heads d and d-1 agree (mask Dice >= {self.tau:g})"
            if self.uncertain_max < 1.0:
                low, high = UNCERTAIN_BAND
                condition += f" and <= {100 * self.uncertain_max:g}% of pixels have p in ({low:g}, {high:g})"
            parts.append(f"from L{first} a slice exits when {condition}")
        parts.append(f"all stop at L{self.max_depth}")
        return "; ".join(parts)


ExitRule.NEVER = ExitRule.never()


@dataclass(frozen=True)
class SliceSignals:
    """What the exit rule reads, per slice of a batch of ``K`` slices at one head.

    Attributes:
        max_prob: ``(K,)`` float64, the slice's largest probability.
        uncertain_fraction: ``(K,)`` float64, the fraction (0..1) of the slice's ``H * W``
            pixels with ``p`` in the uncertainty band.
        agreement: ``(K,)`` float64, the Dice (0..1) of this head's mask and the previous
            head's mask (1.0 when both are empty); NaN where there is no previous head.
    """

    max_prob: torch.Tensor
    uncertain_fraction: torch.Tensor
    agreement: torch.Tensor

    def __post_init__(self) -> None:
        shapes = {tuple(t.shape) for t in (self.max_prob, self.uncertain_fraction, self.agreement)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"SliceSignals needs three (K,) tensors of one length, got shapes {sorted(shapes)}")

    def __len__(self) -> int:
        return int(self.max_prob.shape[0])


def slice_signals(
    prob: torch.Tensor,
    prev_prob: torch.Tensor | None,
    threshold: float = THRESHOLD,
    band: tuple[float, float] = UNCERTAIN_BAND,
) -> SliceSignals:
    """The exit signals of ``K`` slices at one head.

    Args:
        prob: ``(K, H, W)`` probabilities (sigmoid of the head's logits) in ``[0, 1]``.
        prev_prob: ``(K, H, W)`` probabilities of the previous head of the same slices, or None
            (first head: agreement is NaN).
        threshold: foreground when ``p > threshold``; default 0.5.
        band: uncertain when ``band[0] < p < band[1]``; default :data:`UNCERTAIN_BAND`.

    Returns:
        :class:`SliceSignals` of ``(K,)`` float64 tensors on ``prob``'s device.
    """
    if prob.dim() != 3:
        raise ValueError(f"slice_signals expects prob of shape (K, H, W), got {tuple(prob.shape)}")
    if prev_prob is not None and prev_prob.shape != prob.shape:
        raise ValueError(f"prev_prob shape {tuple(prev_prob.shape)} differs from prob shape {tuple(prob.shape)}")
    if not band[0] < band[1]:
        raise ValueError(f"uncertainty band must be (low, high) with low < high, got {band!r}")
    k = prob.shape[0]
    flat = prob.reshape(k, -1)
    pixels = flat.shape[1]
    if pixels == 0:
        raise ValueError(f"slice_signals needs slices with pixels, got shape {tuple(prob.shape)}")
    max_prob = flat.amax(dim=1).to(torch.float64)
    uncertain = ((flat > band[0]) & (flat < band[1])).sum(dim=1, dtype=torch.int64)
    uncertain_fraction = uncertain.to(torch.float64) / pixels
    if prev_prob is None:
        agreement = torch.full((k,), math.nan, dtype=torch.float64, device=prob.device)
    else:
        mask = flat > threshold
        prev_mask = prev_prob.reshape(k, -1) > threshold
        agreement = _dice(
            (mask & prev_mask).sum(dim=1, dtype=torch.int64),
            mask.sum(dim=1, dtype=torch.int64) + prev_mask.sum(dim=1, dtype=torch.int64),
        )
    return SliceSignals(max_prob=max_prob, uncertain_fraction=uncertain_fraction, agreement=agreement)


def _dice(intersection: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``2 * intersection / total`` in float64, 1.0 where ``total == 0`` (both masks empty)."""
    total64 = total.to(torch.float64)
    ratio = 2.0 * intersection.to(torch.float64) / total64.clamp(min=1.0)
    return torch.where(total == 0, torch.ones_like(ratio), ratio)


def exits(signals: SliceSignals, rule: ExitRule, depth: int) -> torch.Tensor:
    """Which slices stop after head ``depth`` (1..4): ``(K,)`` bool, True = stop here.

    A slice stops when ``depth >= rule.max_depth``; else, from ``rule.min_depth`` on, when it is
    confidently empty (``max_prob < empty_max_prob``) or settled (``depth >= 2``,
    ``agreement >= tau`` and ``uncertain_fraction <= uncertain_max``; a NaN agreement never
    settles).
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"exits: depth must be an integer in 1..{MAX_DEPTH}, got {depth!r}")
    if depth >= rule.max_depth:
        return torch.ones(len(signals), dtype=torch.bool, device=signals.max_prob.device)
    if depth < rule.min_depth:
        return torch.zeros(len(signals), dtype=torch.bool, device=signals.max_prob.device)
    stop = signals.max_prob < rule.empty_max_prob
    if depth >= 2:
        settled = (signals.agreement >= rule.tau) & (signals.uncertain_fraction <= rule.uncertain_max)
        stop = stop | settled
    return stop


@dataclass
class CaseHeads:
    """Every head's output on one validation case, for :func:`simulate`.

    Attributes:
        probs: ``(D, K, H, W)`` float, the sigmoid of heads L1..LD on the case's ``K`` slices.
        truth: ``(K, H, W)`` bool, the reference mask.
        slice_weight: ``(K,)`` positive weights or None (all 1). A slice of weight ``w`` counts as
            ``w`` slices, for the cost and for its counts in the volume Dice (e.g. ingest keeps a
            share ``1 / w`` of the organ-free slices).
    """

    probs: np.ndarray
    truth: np.ndarray
    slice_weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.probs = np.asarray(self.probs)
        self.truth = np.asarray(self.truth, dtype=bool)
        if self.probs.ndim != 4 or not 1 <= self.probs.shape[0] <= MAX_DEPTH:
            raise ValueError(f"CaseHeads probs must be (D, K, H, W) with D in 1..{MAX_DEPTH}, got {self.probs.shape}")
        if not np.issubdtype(self.probs.dtype, np.floating):
            raise ValueError(f"CaseHeads probs must be floating point, got {self.probs.dtype}")
        if self.truth.shape != self.probs.shape[1:]:
            raise ValueError(f"CaseHeads truth shape {self.truth.shape} differs from the heads' {self.probs.shape[1:]}")
        if self.probs.shape[1] == 0 or self.probs.shape[2] * self.probs.shape[3] == 0:
            raise ValueError(f"CaseHeads needs at least one slice with pixels, got {self.probs.shape}")
        if self.slice_weight is not None:
            self.slice_weight = np.asarray(self.slice_weight, dtype=np.float64)
            if self.slice_weight.shape != (self.probs.shape[1],):
                expected = (self.probs.shape[1],)
                raise ValueError(f"CaseHeads slice_weight must be {expected}, got {self.slice_weight.shape}")
            if not np.all(np.isfinite(self.slice_weight) & (self.slice_weight > 0)):
                raise ValueError("CaseHeads slice_weight must be finite and positive")

    @property
    def depth(self) -> int:
        """``D``, the number of heads."""
        return int(self.probs.shape[0])


@dataclass
class Simulation:
    """One rule replayed on cases.

    Attributes:
        rule: the rule.
        exit_depths: per case, ``(K,)`` int, the head (1..D) each slice stopped at.
        dice: ``(C,)`` float64, each case's volume Dice (0..1) of the exit heads' masks.
        gflop_per_slice: ``(C,)`` float64, each case's mean GFLOP per (weighted) slice.
        mean_dice: the mean of ``dice`` over cases.
        mean_gflop: the expected GFLOP per slice over all (weighted) slices of all cases.
    """

    rule: ExitRule
    exit_depths: list[np.ndarray]
    dice: np.ndarray
    gflop_per_slice: np.ndarray
    mean_dice: float
    mean_gflop: float

    def depth_histogram(self, max_depth: int | None = None) -> list[int]:
        """Slices (unweighted, all cases) that stopped at L1..L``max_depth`` (default the rule's)."""
        top = self.rule.max_depth if max_depth is None else max_depth
        counts = np.zeros(top, dtype=np.int64)
        for depths in self.exit_depths:
            counts += np.bincount(depths - 1, minlength=top)[:top]
        return [int(c) for c in counts]


@dataclass(frozen=True)
class ExitGrid:
    """The candidate rules of a calibration: every combination of the three values.

    ``tau`` above 1 means "never by agreement", ``uncertain_max`` 1.0 "no uncertainty
    condition", ``empty_max_prob`` 0.0 "no empty exit".
    """

    taus: tuple[float, ...]
    uncertain_maxes: tuple[float, ...]
    empty_max_probs: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.taus) * len(self.uncertain_maxes) * len(self.empty_max_probs)

    def rules(self, max_depth: int = MAX_DEPTH) -> Iterator[ExitRule]:
        """Every rule of the grid, in a fixed order, stopping at ``max_depth``."""
        for tau, uncertain_max, empty_max_prob in itertools.product(
            self.taus, self.uncertain_maxes, self.empty_max_probs
        ):
            yield ExitRule(tau, uncertain_max, empty_max_prob, max_depth=max_depth)


DEFAULT_GRID = ExitGrid(
    taus=(0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, TAU_NEVER),
    uncertain_maxes=(0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 1.0),
    empty_max_probs=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5),
)
"""12 x 9 x 7 = 756 rules."""


@dataclass
class _Replay:
    """Per (head, slice) signals and weighted confusion counts of all cases, concatenated.

    Arrays are ``(D, N)`` over the ``N`` slices of all cases (``case`` maps a slice to its case).
    """

    max_prob: np.ndarray
    uncertain_fraction: np.ndarray
    agreement: np.ndarray
    tp: np.ndarray
    pred: np.ndarray
    truth: np.ndarray  # (N,)
    weight: np.ndarray  # (N,)
    case: np.ndarray  # (N,) int
    slices: list[int]  # K per case

    @property
    def depth(self) -> int:
        return int(self.max_prob.shape[0])

    @classmethod
    def of(cls, cases: Sequence[CaseHeads]) -> _Replay:
        depths = {case.depth for case in cases}
        if len(depths) != 1:
            raise ValueError(f"all cases need the same number of heads, got {sorted(depths)}")
        columns: dict[str, list[np.ndarray]] = {k: [] for k in ("max_prob", "unc", "agree", "tp", "pred")}
        truth, weight, index = [], [], []
        low, high = UNCERTAIN_BAND
        for number, case in enumerate(cases):
            # numpy here (single-threaded, ~10x faster than torch's reductions of bool maps on a
            # busy CPU); the same comparisons as slice_signals, so the signals are identical.
            k = case.probs.shape[1]
            probs = case.probs.reshape(case.depth, k, -1)
            target = case.truth.reshape(k, -1)
            w = np.ones(k) if case.slice_weight is None else case.slice_weight
            masks = probs > THRESHOLD
            pred = np.count_nonzero(masks, axis=2)
            columns["max_prob"].append(probs.max(axis=2).astype(np.float64))
            columns["unc"].append(np.count_nonzero((probs > low) & (probs < high), axis=2) / probs.shape[2])
            columns["tp"].append(np.count_nonzero(masks & target, axis=2) * w)
            columns["pred"].append(pred * w)
            agreement = np.full((case.depth, k), np.nan)
            for d in range(1, case.depth):
                total = pred[d] + pred[d - 1]
                both = np.count_nonzero(masks[d] & masks[d - 1], axis=1)
                agreement[d] = np.where(total > 0, 2.0 * both / np.maximum(total, 1), 1.0)
            columns["agree"].append(agreement)
            truth.append(np.count_nonzero(target, axis=1) * w)
            weight.append(w)
            index.append(np.full(k, number))
        return cls(
            max_prob=np.concatenate(columns["max_prob"], axis=1),
            uncertain_fraction=np.concatenate(columns["unc"], axis=1),
            agreement=np.concatenate(columns["agree"], axis=1),
            tp=np.concatenate(columns["tp"], axis=1),
            pred=np.concatenate(columns["pred"], axis=1),
            truth=np.concatenate(truth),
            weight=np.concatenate(weight),
            case=np.concatenate(index),
            slices=[case.probs.shape[1] for case in cases],
        )

    def run(self, rule: ExitRule, cost: np.ndarray) -> Simulation:
        """Replay ``rule``; ``cost[d - 1]`` = GFLOP per slice of a slice that exits at head d."""
        if rule.max_depth > self.depth:
            raise ValueError(f"rule stops at L{rule.max_depth} but the cases have {self.depth} heads")
        heads = np.arange(1, self.depth + 1)[:, None]
        with np.errstate(invalid="ignore"):
            settled = (heads >= 2) & (self.agreement >= rule.tau) & (self.uncertain_fraction <= rule.uncertain_max)
        stop = ((self.max_prob < rule.empty_max_prob) | settled) & (heads >= rule.min_depth)
        stop |= heads >= rule.max_depth
        exit_index = stop.argmax(axis=0)  # the first head that stops; row max_depth - 1 always does
        columns = np.arange(exit_index.shape[0])
        cases = len(self.slices)
        tp = np.bincount(self.case, self.tp[exit_index, columns], minlength=cases)
        total = np.bincount(self.case, self.pred[exit_index, columns] + self.truth, minlength=cases)
        dice = np.where(total > 0, 2.0 * tp / np.maximum(total, 1e-300), 1.0)
        spent = cost[exit_index] * self.weight
        gflop = np.bincount(self.case, spent, minlength=cases) / np.bincount(self.case, self.weight, minlength=cases)
        bounds = np.cumsum([0, *self.slices])
        return Simulation(
            rule=rule,
            exit_depths=[exit_index[a:b] + 1 for a, b in itertools.pairwise(bounds)],
            dice=dice,
            gflop_per_slice=gflop,
            mean_dice=float(dice.mean()),
            mean_gflop=float(spent.sum() / self.weight.sum()),
        )


def _costs(gflops: Mapping[int, float], depth: int) -> np.ndarray:
    """``(depth,)`` GFLOP per slice of exiting at heads 1..depth, checked."""
    missing = [d for d in range(1, depth + 1) if d not in gflops]
    if missing:
        raise ValueError(f"gflops has no cost for depth(s) {missing} (needs 1..{depth})")
    cost = np.array([float(gflops[d]) for d in range(1, depth + 1)])
    if not np.all(np.isfinite(cost) & (cost >= 0)):
        raise ValueError(f"gflops must be finite and non-negative, got {dict(gflops)}")
    return cost


def simulate(cases: Sequence[CaseHeads], rule: ExitRule, gflops: Mapping[int, float]) -> Simulation:
    """Replay ``rule`` on cases whose heads were all computed (what adaptive inference would do).

    Args:
        cases: at least one :class:`CaseHeads`, all with the same number of heads ``D >=
            rule.max_depth``.
        rule: the exit rule.
        gflops: cumulative GFLOP per slice of running up to head ``d``, for ``d = 1..max_depth``.

    Returns:
        :class:`Simulation`: per case the exit depths and the volume Dice, the mean Dice and the
        expected GFLOP per slice. Equal to running :func:`exits` head by head.
    """
    if not cases:
        raise ValueError("simulate needs at least one case")
    return _Replay.of(cases).run(rule, _costs(gflops, rule.max_depth))


@dataclass(frozen=True)
class Calibration:
    """The chosen rule and what it is expected to cost and lose on the validation cases.

    Attributes:
        rule: the chosen :class:`ExitRule`.
        dice: its mean volume Dice (0..1) over the cases (NaN without cases).
        reference_dice: the mean volume Dice at max depth (NaN without cases).
        gflop: its expected GFLOP per slice.
        reference_gflop: GFLOP per slice at max depth.
        speedup: ``reference_gflop / gflop`` (>= 1).
        reason: one line with the numbers, for logs and the registry.
    """

    rule: ExitRule
    dice: float
    reference_dice: float
    gflop: float
    reference_gflop: float
    speedup: float
    reason: str

    def to_tags(self) -> dict[str, str]:
        """The rule's tags plus the expected numbers (``exit_expected_*``) and the reason."""
        return {
            **self.rule.to_tags(),
            "exit_expected_dice": repr(float(self.dice)),
            "exit_expected_gflop": repr(float(self.gflop)),
            "exit_expected_speedup": repr(float(self.speedup)),
            "exit_reason": self.reason,
        }


def calibrate_exit_rule(
    cases: Sequence[CaseHeads],
    gflops: Mapping[int, float],
    max_dice_drop: float,
    grid: ExitGrid = DEFAULT_GRID,
    min_cases: int = MIN_BOOTSTRAP_CASES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Calibration:
    """The cheapest rule of ``grid`` that keeps the Dice within ``max_dice_drop`` of max depth.

    Every rule of the grid (stopping at ``D``, the cases' number of heads) is replayed with
    :func:`simulate` and compared case by case with the reference (every slice at head ``D``).
    Which rules are admissible depends on how many cases there are:

    - ``>= min_cases``: the ``confidence`` upper percentile of the rule's mean volume-Dice drop,
      by the paired bootstrap over the cases (:func:`~anunet_core.confidence.bootstrap_dice_drop`),
      is ``<= max_dice_drop``;
    - fewer: only rules that never exit by agreement (``tau > 1``: confidently empty slices
      alone stop early), and only when no case loses more than ``max_dice_drop``. Agreement
      exits calibrated on the demo's 2 validation cases expected a drop of at most 0.005 and
      lost 0.018 volume Dice on unseen cases (``benchmarks/bench_adaptive.py``).

    Of the admissible rules the lowest expected GFLOP per slice wins; ties go to the higher Dice,
    then to the stricter rule (higher ``tau``, lower ``uncertain_max``, lower
    ``empty_max_prob``). When no rule is cheaper than max depth the result is
    :meth:`ExitRule.never`. Deterministic.

    Args:
        cases: validation cases with every head computed (may be empty: then
            :data:`ExitRule.NEVER` and a reason saying so).
        gflops: cumulative GFLOP per slice of heads ``1..D``.
        max_dice_drop: the largest mean volume-Dice loss accepted (>= 0, Dice units).
        grid: the candidate rules; default :data:`DEFAULT_GRID`.
        min_cases: the fewest cases whose bootstrap is trusted; default
            :data:`~anunet_core.confidence.MIN_BOOTSTRAP_CASES` (5).
        confidence: the bootstrap's one-sided confidence, in (0, 1); default 0.95.
    """
    if isinstance(max_dice_drop, bool) or not isinstance(max_dice_drop, numbers.Real) or not 0 <= max_dice_drop <= 1:
        raise ValueError(f"max_dice_drop must be a number in [0, 1], got {max_dice_drop!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not cases:
        top = ExitRule.NEVER.max_depth
        cost = float(gflops.get(top, math.nan))
        return Calibration(
            rule=ExitRule.NEVER,
            dice=math.nan,
            reference_dice=math.nan,
            gflop=cost,
            reference_gflop=cost,
            speedup=1.0,
            reason=f"no validation case to calibrate on: no early exit, every slice runs to L{top}",
        )
    replay = _Replay.of(cases)
    depth = replay.depth
    cost = _costs(gflops, depth)
    reference = replay.run(ExitRule.never(depth), cost)
    confident = len(cases) >= min_cases
    results = [replay.run(rule, cost) for rule in grid.rules(depth) if confident or rule.tau > 1.0]
    if confident:
        dice = np.stack([reference.dice, *(r.dice for r in results)])  # (1 + rules, cases)
        mean_drop, upper = bootstrap_dice_drop(dice, reference=0, confidence=confidence)
        admissible = upper[1:] <= max_dice_drop + 1e-12
    else:
        admissible = np.array([bool(np.all(reference.dice - r.dice <= max_dice_drop + 1e-12)) for r in results])
    best: tuple[tuple[float, ...], int] | None = None
    for index, (result, ok) in enumerate(zip(results, admissible, strict=True)):
        if not ok:
            continue
        rule = result.rule
        key = (result.mean_gflop, -result.mean_dice, -rule.tau, rule.uncertain_max, rule.empty_max_prob)
        if best is None or key < best[0]:
            best = (key, index)
    cheaper = best is not None and results[best[1]].mean_gflop < reference.mean_gflop
    chosen = results[best[1]] if cheaper else reference
    slices = int(sum(replay.slices))
    where = f"{len(cases)} validation case{'s' if len(cases) != 1 else ''} ({slices} slices, {len(results)} rules)"
    if not confident:
        where += (f"; fewer than {min_cases}, so only confidently empty slices may exit early and no case may "
                  f"lose more than {max_dice_drop:g}")
    if chosen is reference:
        reason = (
            f"calibrated on {where}: no rule saves GFLOP within a volume-Dice drop of {max_dice_drop:g} "
            f"of L{depth} ({reference.mean_dice:.4f}): every slice runs to L{depth}"
        )
    else:
        interval = ""
        if confident:
            row = 1 + best[1]
            interval = (f" with {percent_text(confidence)}% confidence (mean drop {mean_drop[row]:.3f}, "
                        f"{percentile_name(confidence)} percentile {upper[row]:.3f})")
        reason = (
            f"calibrated on {where}: expected volume Dice {chosen.mean_dice:.4f} vs "
            f"{reference.mean_dice:.4f} at L{depth} (drop <= {max_dice_drop:g}{interval}), "
            f"{reference.mean_gflop / chosen.mean_gflop:.2f}x fewer GFLOP/slice "
            f"({chosen.mean_gflop:.3g} vs {reference.mean_gflop:.3g})"
        )
    return Calibration(
        rule=chosen.rule,
        dice=chosen.mean_dice,
        reference_dice=reference.mean_dice,
        gflop=chosen.mean_gflop,
        reference_gflop=reference.mean_gflop,
        speedup=reference.mean_gflop / chosen.mean_gflop if chosen.mean_gflop > 0 else math.inf,
        reason=reason,
    )
