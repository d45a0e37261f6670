"""Quality control of one segmented case: five cheap features -> ``qc_score``, ``needs_review``, reasons.

Every nightly row (case and organ) gets a QC verdict computed from what the segmentation already
produced (no extra inference in adaptive mode). This module is the policy as pure functions (no
Ray, no MLflow, no I/O, no logging): the caller measures the features, reads the thresholds from
the registered version's tags, and writes the verdict into its manifest.

Features (:class:`QcFeatures`), each with one threshold (:class:`QcThresholds`):

- **head agreement**: volume Dice between the final masks and the next-shallower heads' masks
  (0..1). Flags when ``head_agreement < min_head_agreement``.
- **uncertain fraction**: share of the case's pixels with a probability in (0.1, 0.9). Flags
  when ``> max_uncertain_fraction``.
- **volume z**: the organ volume's z-score against the training cases (:func:`volume_z`; None
  when the registry has no volume statistics: skipped). Flags when ``|z| > max_abs_volume_z``.
- **touches border**: the organ reaches the scan's edge, so its volume is incomplete. Flags
  when ``border_flags`` (calibration switches it off where most validation cases touch).
- **deep-slice fraction**: share of the slices that needed the deepest head (None at a fixed
  depth: skipped). Flags when ``> max_deep_slice_fraction``.

Score (:func:`assess`). Each feature gets a badness ``r_f >= 0`` that is exactly 1 at its
threshold and grows with trouble:

- head agreement ``(1 - a) / (1 - min_head_agreement)``; uncertain fraction
  ``u / max_uncertain_fraction``; volume ``|z| / max_abs_volume_z``; deep slices
  ``f / max_deep_slice_fraction``; border :data:`BORDER_BADNESS` (2) when it touches and
  touching flags, else 0.

With ``m = max_f r_f`` and ``s = mean_f r_f / (1 + r_f)`` (a tie-break in [0, 1) from every
feature), ``R = m + TIE_BREAK * s * |1 - m|`` and ``qc_score = 0.5 ** R``. So the score is 1 with
no sign of trouble, continuous and non-increasing in every feature's badness (it ranks cases for
an AUROC, and two cases flagged for the same worst feature are ordered by the others), exactly
0.5 when the worst feature sits at its threshold, and ``needs_review == (qc_score < 0.5)``
exactly when at least one feature is strictly beyond its threshold (``m > 1``); ``reasons`` then
names each such feature, the worst first.

Calibration (:func:`calibrate_qc`) on the validation cases' own features: each threshold sits at
the worst validation value plus a margin, never stricter than a floor. The worst of ``n``
cases understates what new cases reach, the more so the fewer they are, so the shares may go
``k(n) = 1.5 + 3 / n`` times past the worst (4.5x for one validation case, 2.1x for five, 1.65x
for twenty); the floors keep two to four validation cases from flagging half the archive:

- ``min_head_agreement = min(0.95, 1 - k(n) * (1 - worst))`` (and >= 0): a disagreement
  ``1 - agreement`` up to ``k(n)`` times the worst one, and at least 5%;
- ``max_uncertain_fraction = max(0.002, k(n) * worst)`` (and <= 1);
- ``max_abs_volume_z = max(3, worst |z| + 1)`` (cases without a z are skipped);
- ``max_deep_slice_fraction = max(0.5, k(n) * worst)`` (and <= 1; cases without one skipped): how
  many slices reach L4 follows how many hold the organ, which varies from scan to scan;
- ``border_flags`` unless at least half of the validation cases touch the border (then touching
  is normal for this data, e.g. scans cropped to the organ).

A feature no validation case measured keeps its default (:data:`DEFAULT_THRESHOLDS`); with no
validation case at all the thresholds are the defaults. :meth:`QcThresholds.from_tags` also reads
a missing ``qc_*`` tag as its default, so versions registered before QC still get QC.

Bad input is a :class:`ValueError` with one line.

Example::

    >>> thresholds = QcThresholds(min_head_agreement=0.86, max_uncertain_fraction=0.012)
    >>> ok = QcFeatures(head_agreement=0.97, uncertain_fraction=0.004, volume_z=0.3,
    ...                 touches_border=False, deep_slice_fraction=0.1)
    >>> assess(ok, thresholds).needs_review
    False
    >>> bad = QcFeatures(head_agreement=0.71, uncertain_fraction=0.031, volume_z=-4.2,
    ...                  touches_border=False, deep_slice_fraction=None)
    >>> for reason in assess(bad, thresholds).reasons:  # the worst first
    ...     print(reason)
    uncertain pixels 3.1% > 1.2%
    heads disagree (agreement 0.71 < 0.86)
    organ volume unusual (z = -4.2, |z| > 3.0)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from anunet_core.vocabulary import MAX_DEPTH
from anunet_platform.selection import as_number

__all__ = [
    "BORDER_BADNESS",
    "DEFAULT_THRESHOLDS",
    "EMPTY_VOLUME_FLOOR",
    "STD_FLOOR",
    "TAG_PREFIX",
    "TIE_BREAK",
    "QcAssessment",
    "QcFeatures",
    "QcThresholds",
    "assess",
    "auroc",
    "calibrate_qc",
    "detection",
    "QcDetection",
    "volume_z",
]

TAG_PREFIX = "qc_"
"""Every QC threshold's registry tag starts with this."""
STD_FLOOR = 0.10
""":func:`volume_z` floors the training volumes' std at this share of their mean (no inf for a
std of 0 or a cohort of one)."""
EMPTY_VOLUME_FLOOR = 1e-4
""":func:`volume_z` reads a volume below this share of the mean (an empty mask: 0 mL) as that
share: a large negative z (about -31 at a 30% spread, -11 at 100%), never NaN or inf."""
BORDER_BADNESS = 2.0
"""The badness of an organ that touches the scan's border (when touching flags): twice past a threshold."""
TIE_BREAK = 0.5
"""Weight of the other features' badness in the score (see the module docstring); below 1, so
it never moves a case across 0.5."""

# Calibration: margins past the worst validation value, and the floors no calibration goes past.
_SHARE_FACTOR, _SMALL_SAMPLE = 1.5, 3.0  # shares: up to k(n) = 1.5 + 3 / n times the worst of n cases
_AGREEMENT_CEILING, _UNCERTAIN_FLOOR, _DEEP_FLOOR = 0.95, 0.002, 0.5
_Z_MARGIN, _Z_FLOOR = 1.0, 3.0
_BORDER_NORMAL_SHARE = 0.5


def _fraction(value: object, what: str) -> float:
    number = as_number(value, what)
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    return number


def _as_bool(value: object, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):  # NumPy bools and 0/1
        return bool(value)
    raise ValueError(f"{what} must be True or False, got {value!r}")


# ----------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QcFeatures:
    """What QC reads of one case (and organ); see the module docstring for each feature.

    Attributes:
        head_agreement: volume Dice between the final masks and the next-shallower heads' masks, 0..1.
        uncertain_fraction: share of the case's pixels (model grid) with p in (0.1, 0.9), 0..1.
        volume_z: organ volume z-score against the training cases (:func:`volume_z`); None when
            the registry has no volume statistics.
        touches_border: the organ reaches the scan's edge (its volume is incomplete).
        deep_slice_fraction: share of the slices that needed the deepest head, 0..1; None at a
            fixed depth.
    """

    head_agreement: float
    uncertain_fraction: float
    volume_z: float | None
    touches_border: bool
    deep_slice_fraction: float | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "head_agreement", _fraction(self.head_agreement, "head_agreement"))
        object.__setattr__(self, "uncertain_fraction", _fraction(self.uncertain_fraction, "uncertain_fraction"))
        if self.volume_z is not None:
            z = as_number(self.volume_z, "volume_z")
            if not math.isfinite(z):
                raise ValueError(f"volume_z must be a finite number or None, got {self.volume_z!r}")
            object.__setattr__(self, "volume_z", z)
        object.__setattr__(self, "touches_border", _as_bool(self.touches_border, "touches_border"))
        if self.deep_slice_fraction is not None:
            object.__setattr__(
                self, "deep_slice_fraction", _fraction(self.deep_slice_fraction, "deep_slice_fraction")
            )


def volume_z(organ_ml: float, mean_ml: float | None, std_ml: float | None) -> float | None:
    """The organ volume's z-score against the training cases' volumes, in log-volume space.

    Organ volumes are right-skewed (halving and doubling are equally unusual), so the training
    cases' mean and std (mL, linear) are matched to a log-normal distribution and the z-score is
    taken of ``log(organ_ml)``::

        s = max(std_ml, STD_FLOOR * mean_ml)           # no inf for a std of 0 / a tiny cohort
        sigma**2 = log(1 + (s / mean_ml)**2);  mu = log(mean_ml) - sigma**2 / 2
        z = (log(max(organ_ml, EMPTY_VOLUME_FLOOR * mean_ml)) - mu) / sigma

    A volume at the cohort's median ``mean_ml / sqrt(1 + (s / mean_ml)**2)`` gives 0; an empty
    mask (0 mL) gives a large negative z (see :data:`EMPTY_VOLUME_FLOOR`), never NaN or inf.

    Args:
        organ_ml: the case's organ volume in mL (>= 0).
        mean_ml: mean organ volume of the training cases in mL (> 0), or None/NaN when unknown.
        std_ml: their standard deviation in mL (>= 0), or None/NaN when unknown.

    Returns:
        The z-score, or None when the statistics are missing.
    """
    volume = as_number(organ_ml, "organ_ml")
    if not (math.isfinite(volume) and volume >= 0.0):
        raise ValueError(f"organ_ml must be a finite volume >= 0 mL, got {organ_ml!r}")
    if mean_ml is None or std_ml is None:
        return None
    mean, std = as_number(mean_ml, "mean_ml"), as_number(std_ml, "std_ml")
    if math.isnan(mean) or math.isnan(std):
        return None
    if not (math.isfinite(mean) and mean > 0.0):
        raise ValueError(f"mean_ml must be a finite volume > 0 mL, got {mean_ml!r}")
    if not (math.isfinite(std) and std >= 0.0):
        raise ValueError(f"std_ml must be a finite number >= 0 mL, got {std_ml!r}")
    spread = max(std, STD_FLOOR * mean) / mean
    sigma2 = math.log1p(spread * spread)
    mu = math.log(mean) - sigma2 / 2.0
    return (math.log(max(volume, EMPTY_VOLUME_FLOOR * mean)) - mu) / math.sqrt(sigma2)


# ----------------------------------------------------------------------------------------------
# Thresholds
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QcThresholds:
    """One threshold per feature; a feature strictly beyond its threshold flags the case.

    Attributes:
        min_head_agreement: flags below this head agreement, in [0, 1). Default 0.85.
        max_uncertain_fraction: flags above this uncertain-pixel share, in (0, 1]. Default 0.05.
        max_abs_volume_z: flags above this |volume z|, > 0. Default 3.0.
        border_flags: whether an organ touching the scan's border flags. Default True.
        max_deep_slice_fraction: flags above this share of slices at the deepest head, in (0, 1].
            Default 0.5.
        n_validation: how many validation cases calibrated these (0: the defaults). Default 0.
    """

    min_head_agreement: float = 0.85
    max_uncertain_fraction: float = 0.05
    max_abs_volume_z: float = 3.0
    border_flags: bool = True
    max_deep_slice_fraction: float = 0.5
    n_validation: int = 0

    def __post_init__(self) -> None:
        agreement = as_number(self.min_head_agreement, "min_head_agreement")
        if not (math.isfinite(agreement) and 0.0 <= agreement < 1.0):
            raise ValueError(f"min_head_agreement must be in [0, 1), got {self.min_head_agreement!r}")
        object.__setattr__(self, "min_head_agreement", agreement)
        for name in ("max_uncertain_fraction", "max_deep_slice_fraction"):
            value = as_number(getattr(self, name), name)
            if not (math.isfinite(value) and 0.0 < value <= 1.0):
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        z = as_number(self.max_abs_volume_z, "max_abs_volume_z")
        if not (math.isfinite(z) and z > 0.0):
            raise ValueError(f"max_abs_volume_z must be a finite number > 0, got {self.max_abs_volume_z!r}")
        object.__setattr__(self, "max_abs_volume_z", z)
        object.__setattr__(self, "border_flags", _as_bool(self.border_flags, "border_flags"))
        n = self.n_validation
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n_validation must be an integer >= 0, got {n!r}")
        object.__setattr__(self, "n_validation", int(n))

    def to_tags(self) -> dict[str, str]:
        """The registry tags (``qc_<field>``: text that :meth:`from_tags` reads back exactly)."""
        return {
            f"{TAG_PREFIX}min_head_agreement": repr(self.min_head_agreement),
            f"{TAG_PREFIX}max_uncertain_fraction": repr(self.max_uncertain_fraction),
            f"{TAG_PREFIX}max_abs_volume_z": repr(self.max_abs_volume_z),
            f"{TAG_PREFIX}border_flags": "true" if self.border_flags else "false",
            f"{TAG_PREFIX}max_deep_slice_fraction": repr(self.max_deep_slice_fraction),
            f"{TAG_PREFIX}n_validation": str(self.n_validation),
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> QcThresholds:
        """The thresholds of a registered version's ``tags`` (other tags are ignored).

        A missing ``qc_*`` tag reads as its default (versions registered before QC get the
        defaults); a present but bad one is a one-line :class:`ValueError` naming the tag.
        """
        values: dict[str, object] = {}
        for name in ("min_head_agreement", "max_uncertain_fraction", "max_abs_volume_z", "max_deep_slice_fraction"):
            text = tags.get(TAG_PREFIX + name)
            if text is not None:
                try:
                    values[name] = float(str(text).strip())
                except ValueError:
                    raise ValueError(f"tag {TAG_PREFIX}{name} must be a number, got {text!r}") from None
        text = tags.get(f"{TAG_PREFIX}border_flags")
        if text is not None:
            word = str(text).strip().lower()
            if word not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"tag {TAG_PREFIX}border_flags must be true or false, got {text!r}")
            values["border_flags"] = word in ("true", "1", "yes")
        text = tags.get(f"{TAG_PREFIX}n_validation")
        if text is not None:
            try:
                values["n_validation"] = int(str(text).strip())
            except ValueError:
                raise ValueError(f"tag {TAG_PREFIX}n_validation must be an integer, got {text!r}") from None
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"bad {TAG_PREFIX}* tag: {exc}") from None

    def describe(self) -> str:
        """One line: the thresholds and where they come from."""
        source = f"calibrated on {self.n_validation} validation cases" if self.n_validation else "defaults"
        border = "flags" if self.border_flags else "does not flag"
        return (
            f"QC ({source}): head agreement >= {self.min_head_agreement:.3f}, uncertain pixels <= "
            f"{100 * self.max_uncertain_fraction:.2f}%, |volume z| <= {self.max_abs_volume_z:.2f}, deep slices <= "
            f"{100 * self.max_deep_slice_fraction:.0f}%, touching the border {border}"
        )


DEFAULT_THRESHOLDS = QcThresholds()
"""The thresholds without validation cases, and of every missing ``qc_*`` tag."""


def calibrate_qc(validation: Sequence[QcFeatures]) -> QcThresholds:
    """Thresholds from the validation cases' own features (rule in the module docstring):
    the worst validation value plus a margin, never stricter than the floors; a feature that no
    case measured keeps its default; no case at all gives :data:`DEFAULT_THRESHOLDS`."""
    cases = list(validation)
    for case in cases:
        if not isinstance(case, QcFeatures):
            raise TypeError(f"validation cases must be QcFeatures, got {type(case).__name__}")
    if not cases:
        return DEFAULT_THRESHOLDS
    d = DEFAULT_THRESHOLDS  # the thresholds are rounded to 4 decimals (readable tags; never past a case)
    worst_agreement = min(c.head_agreement for c in cases)
    worst_uncertain = max(c.uncertain_fraction for c in cases)
    zs = [abs(c.volume_z) for c in cases if c.volume_z is not None]
    deep = [c.deep_slice_fraction for c in cases if c.deep_slice_fraction is not None]
    touching = sum(c.touches_border for c in cases)
    factor = _SHARE_FACTOR + _SMALL_SAMPLE / len(cases)
    return QcThresholds(
        min_head_agreement=round(max(0.0, min(_AGREEMENT_CEILING, 1.0 - factor * (1.0 - worst_agreement))), 4),
        max_uncertain_fraction=round(min(1.0, max(_UNCERTAIN_FLOOR, factor * worst_uncertain)), 4),
        max_abs_volume_z=round(max(_Z_FLOOR, max(zs) + _Z_MARGIN), 4) if zs else d.max_abs_volume_z,
        border_flags=touching < _BORDER_NORMAL_SHARE * len(cases),
        max_deep_slice_fraction=(
            round(min(1.0, max(_DEEP_FLOOR, factor * max(deep))), 4) if deep else d.max_deep_slice_fraction
        ),
        n_validation=len(cases),
    )


# ----------------------------------------------------------------------------------------------
# Assessment
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QcAssessment:
    """The QC verdict of one case.

    Attributes:
        qc_score: in [0, 1]; 1 = no sign of trouble, 0.5 = the worst feature at its threshold.
        needs_review: exactly ``qc_score < 0.5``: some feature is beyond its threshold.
        reasons: one short phrase per feature beyond its threshold, the worst first; () when none.
    """

    qc_score: float
    needs_review: bool
    reasons: tuple[str, ...]

    @property
    def reasons_text(self) -> str | None:
        """The manifest's ``qc_reasons``: the reasons joined by ``"; "``, None when none."""
        return "; ".join(self.reasons) if self.reasons else None


def _pair(value: float, limit: float, decimals: int, scale: float = 1.0, suffix: str = "") -> tuple[str, str]:
    """``value`` and ``limit`` as text, with at least ``decimals`` decimals and more as needed
    for the limit to read exactly (0.895, not 0.90) and for the two to read differently."""
    shown_limit = scale * limit
    for d in range(decimals, decimals + 5):
        a, b = f"{scale * value:.{d}f}{suffix}", f"{shown_limit:.{d}f}{suffix}"
        if a != b and abs(round(shown_limit, d) - shown_limit) <= 1e-9 * max(1.0, abs(shown_limit)):
            break
    return a, b


def assess(features: QcFeatures, thresholds: QcThresholds = DEFAULT_THRESHOLDS) -> QcAssessment:
    """The QC verdict of one case: score, review flag and reasons (rules in the module docstring)."""
    if not isinstance(features, QcFeatures):
        raise TypeError(f"features must be QcFeatures, got {type(features).__name__}")
    if not isinstance(thresholds, QcThresholds):
        raise TypeError(f"thresholds must be QcThresholds, got {type(thresholds).__name__}")
    f, t = features, thresholds
    badness: list[tuple[float, str]] = []  # (r_f, the phrase when beyond), in feature order

    shown = _pair(f.head_agreement, t.min_head_agreement, 2)
    badness.append(
        ((1.0 - f.head_agreement) / (1.0 - t.min_head_agreement), f"heads disagree (agreement {shown[0]} < {shown[1]})")
    )
    shown = _pair(f.uncertain_fraction, t.max_uncertain_fraction, 1, 100.0, "%")
    badness.append((f.uncertain_fraction / t.max_uncertain_fraction, f"uncertain pixels {shown[0]} > {shown[1]}"))
    if f.volume_z is not None:
        shown = _pair(abs(f.volume_z), t.max_abs_volume_z, 1)
        z_text = shown[0] if f.volume_z >= 0 else f"-{shown[0]}"
        badness.append(
            (abs(f.volume_z) / t.max_abs_volume_z, f"organ volume unusual (z = {z_text}, |z| > {shown[1]})")
        )
    badness.append(
        (
            BORDER_BADNESS if (f.touches_border and t.border_flags) else 0.0,
            "organ touches the scan's border (volume incomplete)",
        )
    )
    if f.deep_slice_fraction is not None:
        shown = _pair(f.deep_slice_fraction, t.max_deep_slice_fraction, 0, 100.0, "%")
        badness.append(
            (
                f.deep_slice_fraction / t.max_deep_slice_fraction,
                f"many slices needed depth {MAX_DEPTH} ({shown[0]} > {shown[1]})",
            )
        )

    worst = max(r for r, _ in badness)
    spread = sum(r / (1.0 + r) for r, _ in badness) / len(badness)
    score = 0.5 ** (worst + TIE_BREAK * spread * abs(1.0 - worst))
    needs_review = worst > 1.0
    if needs_review:  # 0.5 ** (1 + tiny) can round to 0.5: keep needs_review == (score < 0.5) exact
        score = min(score, math.nextafter(0.5, 0.0))
    beyond = sorted((i for i, (r, _) in enumerate(badness) if r > 1.0), key=lambda i: (-badness[i][0], i))
    return QcAssessment(qc_score=score, needs_review=needs_review, reasons=tuple(badness[i][1] for i in beyond))


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Area under the ROC curve: the probability that a random positive case scores higher than
    a random negative one (Mann-Whitney U; ties count half).

    The issue's target is the AUROC of ``qc_score`` for detecting cases with volume Dice < 0.8;
    since a *low* ``qc_score`` signals trouble, pass ``scores = [1 - a.qc_score ...]`` and
    ``positives = [dice < 0.8 ...]``.

    Args:
        scores: one finite number per case (higher = more likely positive).
        positives: one bool per case, same length.

    Returns:
        The AUROC in [0, 1]: 1 ranks every positive above every negative, 0.5 is chance.
    """
    values = [as_number(s, "score") for s in scores]
    labels = [_as_bool(p, "positive label") for p in positives]
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} scores but {len(labels)} labels")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"scores must be finite numbers, got {bad[0]!r}")
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs positive and negative cases, got {n_pos} positive and {n_neg} negative")
    order = sorted(range(len(values)), key=values.__getitem__)
    rank_sum = 0.0  # sum of the positives' (1-based, tie-averaged) ranks
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        mid_rank = (start + end) / 2.0 + 1.0
        rank_sum += mid_rank * sum(labels[order[k]] for k in range(start, end + 1))
        start = end + 1
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


@dataclass(frozen=True)
class QcDetection:
    """How well quality control finds the failed segmentations of a labelled cohort.

    ``auroc``: of ``1 - qc_score`` for the cases with volume Dice below ``dice_threshold``
    (None when the cohort holds only one class); the mean Dice of the flagged and unflagged
    cases (None when there is none); counts."""

    auroc: float | None
    dice_threshold: float
    cases: int
    bad: int
    flagged: int
    flagged_bad: int
    flagged_dice: float | None
    unflagged_dice: float | None

    def line(self) -> str:
        auc = "n/a (one class)" if self.auroc is None else f"{self.auroc:.3f}"
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        return (f"AUROC {auc} for Dice < {self.dice_threshold:g} ({self.bad} of {self.cases} cases); flagged "
                f"{self.flagged} ({self.flagged_bad} of them bad): Dice flagged {fmt(self.flagged_dice)}, "
                f"unflagged {fmt(self.unflagged_dice)}")


def detection(qc_scores: Sequence[float], needs_review: Sequence[bool], dice: Sequence[float],
              dice_threshold: float = 0.8) -> QcDetection:
    """:class:`QcDetection` of a cohort: each case's ``qc_score``, ``needs_review`` and its volume
    Dice against its label (the same order)."""
    if not len(qc_scores) == len(needs_review) == len(dice):
        raise ValueError(f"{len(qc_scores)} QC scores, {len(needs_review)} flags and {len(dice)} Dice values: one each per case")
    bad = [float(d) < dice_threshold for d in dice]
    flagged = [bool(f) for f in needs_review]
    auc = auroc([1.0 - float(q) for q in qc_scores], bad) if 0 < sum(bad) < len(bad) else None

    def mean(values: list[float]) -> float | None:
        return float(sum(values) / len(values)) if values else None

    return QcDetection(
        auroc=auc, dice_threshold=float(dice_threshold), cases=len(dice), bad=sum(bad), flagged=sum(flagged),
        flagged_bad=sum(f and b for f, b in zip(flagged, bad)),
        flagged_dice=mean([float(d) for d, f in zip(dice, flagged) if f]),
        unflagged_dice=mean([float(d) for d, f in zip(dice, flagged) if not f]),
    )
