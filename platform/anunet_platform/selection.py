"""Choosing the pruning depth: per-depth validation metrics + a policy -> one depth.

Section 3.5 of the ANU-Net paper: "Selecting the extent of model pruning is weighed by
evaluating the performance and inference time of the four sub-networks during validation."
This module is that judgement as a pure function (no Ray, no MLflow, no I/O, no logging: the
caller logs the choice and records it in its manifest).

Policies (:class:`DepthPolicy`), one rule each:

- **override** (``depth=1..4``, ``--depth N``): that depth, whatever the metrics say (they are
  not even read, so a depth with a missing ``val_dice`` tag can still be forced). An explicit
  depth wins over a latency budget given at the same time; the reason says the budget was
  ignored. The depth must be among the candidates (registered).
- **adaptive** (``adaptive=True``, ``--depth adaptive``): no single depth; each slice stops
  between L1 and the deepest registered depth by the exit rule calibrated at registration. The
  choice is the deepest registered depth (the network whose heads the slices exit from) with
  :attr:`DepthChoice.adaptive` set; the metrics are not read, and a latency budget is ignored
  (the reason says so). Adaptive with an explicit depth is a :class:`ValueError`.
- **latency budget** (``latency_budget_ms``, ``--latency-budget-ms``): among the depths whose
  ``latency_ms_per_slice <= budget``, the one with the best ``val_dice``; equal Dice -> the
  smaller depth. No depth within the budget -> :class:`ValueError` naming the fastest depth's
  latency. ``max_dice_drop`` plays no part here.
- **default** (``rule="bootstrap"``, ``--depth auto``, ``--max-dice-drop``, default 0.01): the
  smallest depth within ``max_dice_drop`` of the best **with confidence**, judged on the volume
  Dice of each validation case (:attr:`DepthCandidate.case_dice`, the same cases in the same
  order at every depth):

  1. the best depth has the highest mean case Dice (equal means -> the smaller depth);
  2. for every depth, the per-case difference ``best - depth`` is resampled over the cases with
     replacement (a *paired* bootstrap: :data:`~anunet_core.confidence.BOOTSTRAP_RESAMPLES` resamples, the same ones for
     every depth, from a fixed seed, so the choice is deterministic);
  3. a depth is within the drop with confidence when the ``confidence`` (0.95) upper percentile
     of its resampled mean difference is ``<= max_dice_drop`` (a 1e-9 slack absorbs float
     rounding). The best depth always is (its differences are 0); the smallest such depth wins.

  The reason records the interval: the chosen depth's mean drop and its upper percentile.
  Fewer than :data:`~anunet_core.confidence.MIN_BOOTSTRAP_CASES` cases, a depth without ``case_dice`` (a version
  registered without the ``val_case_dice`` tag), or depths scored on different numbers of cases
  give no confident choice: the answer is the deepest registered depth, and the reason says why.
  Why not the pooled Dice: on a handful of validation cases the depths' pooled Dice differ by
  less than their noise, and the depth they pick does not hold on unseen cases.
- **pooled** (``rule="pooled"``, the rule before the bootstrap; kept so that a benchmark can
  report both, not a flag): the smallest depth whose pooled ``val_dice >= best_val_dice -
  max_dice_drop``. Exactly at the threshold counts as within (a 1e-9 slack absorbs float
  rounding, e.g. ``0.9061 - 0.01 = 0.8961000000000001``). ``max_dice_drop=0`` picks the best
  depth (the smallest among equal bests).

Post-processing (:func:`decide_postprocessing`, :func:`postprocess_choice`), as nnU-Net decides
it: at registration, keeping each organ's largest component(s) is switched on for a model only
where it raises the mean volume Dice of its validation cases; ``segment --postprocess auto``
then follows that decision (``on``/``off`` override it).

Bad input is a :class:`ValueError` with one line: no candidates, two candidates of one depth,
a depth outside 1..4, a NaN/out-of-range ``val_dice`` (policies that read it: pooled, latency),
a case Dice outside [0, 1] (the bootstrap), a NaN or negative latency (the latency policy).

Example::

    >>> cands = [DepthCandidate(4, 0.9061, 9.1), DepthCandidate(2, 0.9010, 4.0),
    ...          DepthCandidate(1, 0.8200, 2.5), DepthCandidate(3, 0.9050, 6.0)]
    >>> choose_depth(cands, DepthPolicy(rule="pooled")).depth
    2
    >>> choose_depth(cands, DepthPolicy()).reason  # no per-case Dice: no confident choice
    'L4: the deepest depth, because no per-case validation Dice is registered (val_case_dice tag)'
    >>> choose_depth(cands, DepthPolicy(latency_budget_ms=3.0)).depth
    1
    >>> l4 = (0.91, 0.93, 0.88, 0.95, 0.90, 0.92)
    >>> cands = [DepthCandidate(4, 0.915, 9.1, case_dice=l4),
    ...          DepthCandidate(2, 0.912, 4.0, case_dice=[d - 0.003 for d in l4])]
    >>> choose_depth(cands).reason
    "L2: smallest depth within 0.010 of L4's volume Dice with 95% confidence over 6 validation cases (mean drop 0.003, 95th percentile 0.003)"
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from anunet_core.confidence import (
    BOOTSTRAP_RESAMPLES,
    DEFAULT_CONFIDENCE,
    MIN_BOOTSTRAP_CASES,
    bootstrap_dice_drop,
    percent_text,
    percentile_name,
)
from anunet_core.vocabulary import MAX_DEPTH, validate_depth

__all__ = [
    "DEFAULT_LATENCY_BUDGET_MS",
    "DEFAULT_MAX_DICE_DROP",
    "DEPTH_RULES",
    "POSTPROCESS_MODES",
    "DepthCandidate",
    "DepthChoice",
    "DepthPolicy",
    "as_number",
    "PostprocessChoice",
    "candidates_from_registry",
    "choose_depth",
    "decide_postprocessing",
    "postprocess_choice",
]

DEFAULT_MAX_DICE_DROP = 0.01
"""The default policy's allowed validation-Dice loss (``--max-dice-drop``): the one place it is written."""
DEFAULT_LATENCY_BUDGET_MS: float | None = None
"""No latency budget by default (``--latency-budget-ms``): the Dice-drop rule applies."""
DEPTH_RULES: tuple[str, ...] = ("bootstrap", "pooled")
"""The Dice-drop rules: ``bootstrap`` (the default, per-case with confidence) and ``pooled`` (the old one)."""
_THRESHOLD_SLACK = 1e-9  # float rounding at the Dice threshold: "exactly within" stays within


def _check_depth(depth: object, what: str) -> int:
    """:func:`~anunet_core.vocabulary.validate_depth`, with NumPy integers taken as ints."""
    if isinstance(depth, numbers.Integral) and not isinstance(depth, bool):
        depth = int(depth)
    return validate_depth(depth, what)


def as_number(value: object, what: str) -> float:
    """``float(value)``, or a one-line :class:`ValueError` naming ``what`` (a bool is no number)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None


def _drop(value: float) -> str:
    """A Dice difference to 3 decimals, without ``-0.000`` from float rounding."""
    return f"{0.0 if abs(value) < 5e-4 else value:.3f}"


@dataclass(frozen=True)
class DepthPolicy:
    """How to choose the depth (see the module docstring for the rules).

    Attributes:
        depth: explicit depth 1..4 (overrides everything else), or None to choose.
        max_dice_drop: Dice-drop rules: how much Dice (0..1, absolute) the chosen depth may lose
            against the best depth. Default 0.01.
        latency_budget_ms: per-slice latency budget in ms; when set (and no ``depth``), the best
            depth within it is chosen instead of the Dice-drop rule.
        rule: the Dice-drop rule, ``"bootstrap"`` (per-case, with confidence) or ``"pooled"``
            (pooled ``val_dice``, the old rule). Default ``"bootstrap"``.
        confidence: the bootstrap's one-sided confidence in (0, 1): its upper percentile of the
            mean drop must be within ``max_dice_drop``. Default 0.95.
        resamples: the bootstrap's number of resamples of the validation cases. Default 2000.
        adaptive: per-slice adaptive depth (``--depth adaptive``); excludes ``depth``. Default False.
    """

    depth: int | None = None
    max_dice_drop: float = DEFAULT_MAX_DICE_DROP
    latency_budget_ms: float | None = DEFAULT_LATENCY_BUDGET_MS
    rule: str = "bootstrap"
    confidence: float = DEFAULT_CONFIDENCE
    resamples: int = BOOTSTRAP_RESAMPLES
    adaptive: bool = False

    def __post_init__(self) -> None:
        if self.depth is not None:
            object.__setattr__(self, "depth", _check_depth(self.depth, "depth"))
        drop = as_number(self.max_dice_drop, "max_dice_drop")
        if not (math.isfinite(drop) and 0.0 <= drop <= 1.0):
            raise ValueError(f"max_dice_drop must be within [0, 1] (a Dice difference), got {self.max_dice_drop!r}")
        object.__setattr__(self, "max_dice_drop", drop)
        if self.latency_budget_ms is not None:
            budget = as_number(self.latency_budget_ms, "latency_budget_ms")
            if not (math.isfinite(budget) and budget > 0.0):
                raise ValueError(f"latency_budget_ms must be a positive number of ms per slice, got {self.latency_budget_ms!r}")
            object.__setattr__(self, "latency_budget_ms", budget)
        rule = self.rule.strip().lower() if isinstance(self.rule, str) else self.rule
        if rule not in DEPTH_RULES:
            raise ValueError(f"rule must be one of {', '.join(DEPTH_RULES)}, got {self.rule!r}")
        object.__setattr__(self, "rule", rule)
        confidence = as_number(self.confidence, "confidence")
        if not (math.isfinite(confidence) and 0.0 < confidence < 1.0):
            raise ValueError(f"confidence must be within (0, 1), e.g. 0.95, got {self.confidence!r}")
        object.__setattr__(self, "confidence", confidence)
        if not (isinstance(self.resamples, numbers.Integral) and not isinstance(self.resamples, bool)
                and self.resamples >= 1):
            raise ValueError(f"resamples must be a positive int, got {self.resamples!r}")
        object.__setattr__(self, "resamples", int(self.resamples))
        if not isinstance(self.adaptive, (bool, np.bool_)):
            raise ValueError(f"adaptive must be True or False, got {self.adaptive!r}")
        object.__setattr__(self, "adaptive", bool(self.adaptive))
        if self.adaptive and self.depth is not None:
            raise ValueError(f"an adaptive depth and a fixed depth (L{self.depth}) exclude each other: give one")

    @classmethod
    def from_flags(
        cls,
        depth: str | int | None = "auto",
        max_dice_drop: float = DEFAULT_MAX_DICE_DROP,
        latency_budget_ms: float | None = DEFAULT_LATENCY_BUDGET_MS,
    ) -> DepthPolicy:
        """The policy of the segment job's flags: ``--depth auto|adaptive|1..4`` (``"auto"``/None:
        choose; ``"adaptive"``: per slice; any case), ``--max-dice-drop``, ``--latency-budget-ms``."""
        word = depth.strip().lower() if isinstance(depth, str) else None
        if word == "adaptive":
            return cls(adaptive=True, max_dice_drop=max_dice_drop, latency_budget_ms=latency_budget_ms)
        if depth is None or word == "auto":
            chosen = None
        elif isinstance(depth, str):
            try:
                chosen = int(depth.strip())
            except ValueError:
                raise ValueError(f"depth must be 'auto', 'adaptive' or one of 1..{MAX_DEPTH}, got {depth!r}") from None
        else:
            chosen = depth
        return cls(depth=chosen, max_dice_drop=max_dice_drop, latency_budget_ms=latency_budget_ms)

    def describe(self) -> str:
        """One line: the rule this policy applies."""
        if self.adaptive:
            return "adaptive depth: each slice stops by the calibrated exit rule"
        if self.depth is not None:
            return f"fixed depth L{self.depth}"
        if self.latency_budget_ms is not None:
            return f"best validation Dice within {self.latency_budget_ms:g} ms/slice"
        if self.rule == "pooled":
            return f"smallest depth within {self.max_dice_drop:.3f} of the best validation Dice"
        return (
            f"smallest depth within {self.max_dice_drop:.3f} of the best volume Dice with "
            f"{percent_text(self.confidence)}% confidence (paired bootstrap over validation cases)"
        )


@dataclass(frozen=True)
class DepthCandidate:
    """One registered depth and what the registry knows of it (NaN when a tag is missing).

    Attributes:
        depth: 1..4.
        val_dice: pooled validation Dice (0..1) of the depth.
        latency_ms_per_slice: measured CPU latency, ms per slice.
        params: parameter count of the pruned network.
        case_dice: the volume Dice (0..1) of each validation case at this depth, the same cases
            in the same order for every depth; ``()`` when not registered.
    """

    depth: int
    val_dice: float
    latency_ms_per_slice: float
    params: int = 0
    case_dice: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth", _check_depth(self.depth, "DepthCandidate.depth"))
        object.__setattr__(self, "val_dice", as_number(self.val_dice, f"val_dice of L{self.depth}"))
        object.__setattr__(
            self, "latency_ms_per_slice", as_number(self.latency_ms_per_slice, f"latency_ms_per_slice of L{self.depth}")
        )
        what = f"case_dice of L{self.depth}"
        if isinstance(self.case_dice, (str, bytes)) or not isinstance(self.case_dice, Iterable):
            raise ValueError(f"{what} must be a sequence of numbers, got {self.case_dice!r}")
        object.__setattr__(self, "case_dice", tuple(as_number(v, what) for v in self.case_dice))


@dataclass(frozen=True)
class DepthChoice:
    """The chosen depth and why (one line, for the log and the manifest).

    ``adaptive``: each slice picks its own depth up to ``depth`` (``--depth adaptive``).
    """

    depth: int
    reason: str
    adaptive: bool = False


def _check_candidates(candidates: Iterable[DepthCandidate]) -> list[DepthCandidate]:
    cands = list(candidates)
    if not cands:
        raise ValueError("no depth candidates to choose from (is any depth of the model registered?)")
    seen: dict[int, int] = {}
    for c in cands:
        if not isinstance(c, DepthCandidate):
            raise TypeError(f"candidates must be DepthCandidate, got {type(c).__name__}")
        seen[c.depth] = seen.get(c.depth, 0) + 1
    duplicates = sorted(d for d, n in seen.items() if n > 1)
    if duplicates:
        raise ValueError(f"several candidates for depth {', '.join(f'L{d}' for d in duplicates)}: one per depth expected")
    return sorted(cands, key=lambda c: c.depth)


def _check_dice(cands: Sequence[DepthCandidate]) -> None:
    bad = [c for c in cands if not (math.isfinite(c.val_dice) and 0.0 <= c.val_dice <= 1.0)]
    if bad:
        listing = ", ".join(f"L{c.depth} {c.val_dice!r}" for c in bad)
        raise ValueError(f"validation Dice must be a number in [0, 1] for every depth (missing val_dice tag?): {listing}")


def _check_case_dice(cands: Sequence[DepthCandidate]) -> None:
    for c in cands:
        for i, value in enumerate(c.case_dice):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"the volume Dice of each validation case must be in [0, 1]: L{c.depth} case {i} {value!r}")


def _check_latency(cands: Sequence[DepthCandidate]) -> None:
    bad = [c for c in cands if not (math.isfinite(c.latency_ms_per_slice) and c.latency_ms_per_slice >= 0.0)]
    if bad:
        listing = ", ".join(f"L{c.depth} {c.latency_ms_per_slice!r}" for c in bad)
        raise ValueError(
            f"latency_ms_per_slice must be a non-negative number for every depth (missing tag?): {listing}"
        )


def _budget_ignored(policy: DepthPolicy) -> str:
    if policy.latency_budget_ms is None:
        return ""
    return f"; the latency budget of {policy.latency_budget_ms:g} ms/slice is ignored"


def _deepest(cands: Sequence[DepthCandidate], why: str) -> DepthChoice:
    deepest = cands[-1].depth
    return DepthChoice(deepest, f"L{deepest}: the deepest depth, because {why}")


def _bootstrap_choice(cands: Sequence[DepthCandidate], policy: DepthPolicy) -> DepthChoice:
    """The default rule (module docstring); ``cands`` checked and sorted by depth."""
    _check_case_dice(cands)
    missing = [c for c in cands if not c.case_dice]
    if missing:
        if len(missing) == len(cands):
            return _deepest(cands, "no per-case validation Dice is registered (val_case_dice tag)")
        names = ", ".join(f"L{c.depth}" for c in missing)
        verb = "has" if len(missing) == 1 else "have"
        return _deepest(cands, f"{names} {verb} no per-case validation Dice (val_case_dice tag)")
    counts = [len(c.case_dice) for c in cands]
    if len(set(counts)) > 1:
        listing = ", ".join(f"L{c.depth} {n}" for c, n in zip(cands, counts, strict=True))
        return _deepest(cands, f"the depths were scored on different numbers of validation cases ({listing})")
    n = counts[0]
    if n < MIN_BOOTSTRAP_CASES:
        scored = "1 validation case was" if n == 1 else f"{n} validation cases were"
        return _deepest(cands, f"only {scored} scored ({MIN_BOOTSTRAP_CASES} needed for a confident choice)")

    dice = np.array([c.case_dice for c in cands])  # (D, N), depths ascending
    mean_dice = dice.mean(axis=1)
    best = int(np.argmax(mean_dice))  # the first maximum: the smaller depth on equal means
    mean_drop, upper = bootstrap_dice_drop(dice, best, policy.confidence, policy.resamples)
    within = upper <= policy.max_dice_drop + _THRESHOLD_SLACK  # the best row (0) always is
    chosen = int(np.argmax(within))  # the first (smallest) depth within
    drop, pct, nth = f"{policy.max_dice_drop:.3f}", percent_text(policy.confidence), percentile_name(policy.confidence)
    b, c = cands[best].depth, cands[chosen].depth
    if chosen != best:
        return DepthChoice(
            c,
            f"L{c}: smallest depth within {drop} of L{b}'s volume Dice with {pct}% confidence over {n} validation "
            f"cases (mean drop {_drop(mean_drop[chosen])}, {nth} percentile {_drop(upper[chosen])})",
        )
    if best == 0:
        return DepthChoice(
            b, f"L{b}: the smallest depth, with the best mean volume Dice ({mean_dice[best]:.4f}) over {n} validation cases"
        )
    closest = int(np.argmin(upper[:best]))  # the smaller depth nearest to qualifying
    return DepthChoice(
        b,
        f"L{b}: the best mean volume Dice ({mean_dice[best]:.4f}) over {n} validation cases; no smaller depth is within "
        f"{drop} of it with {pct}% confidence (closest: L{cands[closest].depth}, mean drop {_drop(mean_drop[closest])}, "
        f"{nth} percentile {_drop(upper[closest])})",
    )


def _pooled_choice(cands: Sequence[DepthCandidate], policy: DepthPolicy) -> DepthChoice:
    """The pooled rule (module docstring); ``cands`` checked and sorted by depth."""
    _check_dice(cands)
    best = max(cands, key=lambda c: (c.val_dice, -c.depth))
    threshold = best.val_dice - policy.max_dice_drop
    chosen = next(c for c in cands if c.val_dice >= threshold - _THRESHOLD_SLACK)  # sorted: smallest first
    values = f"L{best.depth} {best.val_dice:.4f}"
    if chosen.depth != best.depth:
        values += f"; L{chosen.depth} {chosen.val_dice:.4f}"
    return DepthChoice(
        chosen.depth,
        f"L{chosen.depth}: smallest depth within {policy.max_dice_drop:.3f} of the best validation Dice ({values})",
    )


def choose_depth(candidates: Sequence[DepthCandidate], policy: DepthPolicy | None = None) -> DepthChoice:
    """The depth ``policy`` picks among ``candidates`` (any order), with a one-line reason.

    See the module docstring for the rules; bad candidates or an impossible budget raise
    :class:`ValueError` (one line).
    """
    policy = DepthPolicy() if policy is None else policy
    if not isinstance(policy, DepthPolicy):
        raise TypeError(f"policy must be a DepthPolicy, got {type(policy).__name__}")
    cands = _check_candidates(candidates)
    available = ", ".join(f"L{c.depth}" for c in cands)

    if policy.adaptive:
        deepest = cands[-1].depth
        return DepthChoice(
            deepest,
            f"adaptive: each slice stops between L1 and L{deepest} by the calibrated exit rule{_budget_ignored(policy)}",
            adaptive=True,
        )

    if policy.depth is not None:
        by_depth = {c.depth: c for c in cands}
        if policy.depth not in by_depth:
            raise ValueError(f"depth L{policy.depth} was asked for but is not registered (available: {available})")
        chosen = by_depth[policy.depth]
        dice = f"validation Dice {chosen.val_dice:.4f}" if math.isfinite(chosen.val_dice) else "validation Dice unknown"
        return DepthChoice(policy.depth, f"L{policy.depth}: fixed by the depth override ({dice}){_budget_ignored(policy)}")

    if policy.latency_budget_ms is not None:
        _check_dice(cands)
        _check_latency(cands)
        budget = policy.latency_budget_ms
        fits = [c for c in cands if c.latency_ms_per_slice <= budget]
        if not fits:
            fastest = min(cands, key=lambda c: (c.latency_ms_per_slice, c.depth))
            raise ValueError(
                f"no depth fits the latency budget of {budget:g} ms/slice: the fastest, L{fastest.depth}, "
                f"takes {fastest.latency_ms_per_slice:.3f} ms/slice"
            )
        chosen = max(fits, key=lambda c: (c.val_dice, -c.depth))
        within = ", ".join(f"L{c.depth}" for c in fits)
        return DepthChoice(
            chosen.depth,
            f"L{chosen.depth}: best validation Dice ({chosen.val_dice:.4f}) among the depths within the latency "
            f"budget of {budget:g} ms/slice ({within}; L{chosen.depth} {chosen.latency_ms_per_slice:.3f} ms/slice)",
        )

    if policy.rule == "pooled":
        return _pooled_choice(cands, policy)
    return _bootstrap_choice(cands, policy)


def candidates_from_registry(depths: Mapping[int, object]) -> list[DepthCandidate]:
    """``registry.production_depths(...)`` -> candidates, sorted by depth.

    Duck-typed on ``.depth``, ``.val_dice``, ``.latency_ms_per_slice``, ``.params`` and
    (optionally) ``.val_case_dice`` (the :class:`~anunet_platform.registry.RegisteredDepth`
    properties; a missing tag reads as NaN, or ``()`` for the per-case Dice, and is refused or
    answered by the deepest depth later by :func:`choose_depth` when the policy needs it). A key
    that differs from its entry's depth, or a bad tag, is a :class:`ValueError`.
    """
    out = []
    for key, entry in sorted(depths.items()):
        try:
            depth, val_dice = entry.depth, entry.val_dice
            latency, params = entry.latency_ms_per_slice, entry.params
            case_dice = getattr(entry, "val_case_dice", ())
        except AttributeError as exc:
            raise ValueError(f"registry entry for depth {key!r} lacks {exc.name or 'a field'}") from None
        except (TypeError, ValueError) as exc:  # a tag that is not a number
            raise ValueError(f"registry entry for depth {key!r} has a bad tag: {' '.join(str(exc).split())}") from None
        if depth != key:
            raise ValueError(f"registry entry under depth {key!r} is for depth {depth!r}")
        out.append(DepthCandidate(depth=depth, val_dice=val_dice, latency_ms_per_slice=latency, params=int(params),
                                  case_dice=case_dice))
    return out


# ----------------------------------------------------------------------------------------------
# Post-processing: decided per registered model on its validation cases
# ----------------------------------------------------------------------------------------------

POSTPROCESS_MODES: tuple[str, ...] = ("auto", "on", "off")
"""``segment --postprocess``: ``auto`` follows the registered decision; ``on``/``off`` force it."""


@dataclass(frozen=True)
class PostprocessChoice:
    """Whether a model's masks are post-processed, and why (one line, for the manifest)."""

    apply: bool
    reason: str


def _mean_dice(values: Sequence[float], what: str) -> float:
    numbers = [as_number(v, what) for v in values]
    bad = [v for v in numbers if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
    if bad:
        raise ValueError(f"{what} must be Dice values in [0, 1], got {bad[0]!r}")
    return sum(numbers) / len(numbers)


def decide_postprocessing(dice_before: Sequence[float], dice_after: Sequence[float]) -> PostprocessChoice:
    """The registration-time decision: post-process only when it raises the mean volume Dice
    over the validation cases (``dice_before[i]``/``dice_after[i]``: case i without and with
    it). Equal means, or no case, leave it off: it must earn its place, as in nnU-Net."""
    if len(dice_before) != len(dice_after):
        raise ValueError(f"{len(dice_before)} Dice values before post-processing but {len(dice_after)} after")
    if not dice_before:
        return PostprocessChoice(False, "off: no validation case to decide on")
    before = _mean_dice(dice_before, "dice_before")
    after = _mean_dice(dice_after, "dice_after")
    verdict = "raises" if after > before else "does not raise"
    return PostprocessChoice(
        after > before,
        f"{'on' if after > before else 'off'}: on {len(dice_before)} validation cases it {verdict} the mean volume "
        f"Dice ({before:.4f} -> {after:.4f})",
    )


def postprocess_choice(mode: str, tags: Mapping[str, str]) -> PostprocessChoice:
    """What ``segment --postprocess mode`` does with a registered version of ``tags``: ``on`` and
    ``off`` are the user's; ``auto`` follows the version's ``postprocess`` tag (set at
    registration by :func:`decide_postprocessing`), and is off for a version without it."""
    mode = str(mode).strip().lower()
    if mode not in POSTPROCESS_MODES:
        raise ValueError(f"postprocess must be one of {', '.join(POSTPROCESS_MODES)}, got {mode!r}")
    if mode != "auto":
        return PostprocessChoice(mode == "on", f"{mode}: --postprocess {mode}")
    decided = str(tags.get("postprocess", "")).strip().lower()
    if decided not in ("on", "off"):
        return PostprocessChoice(False, "off: the version has no registered post-processing decision")
    before, after = tags.get("val_volume_dice"), tags.get("val_volume_dice_postprocessed")
    measured = f" (validation volume Dice {float(before):.4f} -> {float(after):.4f})" if before and after else ""
    return PostprocessChoice(decided == "on", f"{decided}: decided at registration{measured}")
