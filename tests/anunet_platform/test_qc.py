"""Quality control: features -> score, review flag and reasons; thresholds, calibration, AUROC."""

from __future__ import annotations

import dataclasses
import doctest
import math
from pathlib import Path

import pytest

from anunet_platform import qc
from anunet_platform.qc import (
    DEFAULT_THRESHOLDS,
    QcFeatures,
    QcThresholds,
    assess,
    auroc,
    calibrate_qc,
    volume_z,
)

T = QcThresholds(
    min_head_agreement=0.86,
    max_uncertain_fraction=0.012,
    max_abs_volume_z=3.0,
    border_flags=True,
    max_deep_slice_fraction=0.4,
)


def feats(**changes: object) -> QcFeatures:
    """A clean case (well within every threshold of ``T``), with ``changes``."""
    base = QcFeatures(
        head_agreement=0.97, uncertain_fraction=0.004, volume_z=0.5, touches_border=False, deep_slice_fraction=0.1
    )
    return dataclasses.replace(base, **changes)


def test_module_is_pure() -> None:
    source = Path(qc.__file__).read_text()
    for word in ("import ray", "import mlflow", "import logging", "open("):
        assert word not in source


def test_doctests() -> None:
    assert doctest.testmod(qc).failed == 0


# ---------------------------------------------------------------------------------------------- volume_z


def test_volume_z_known_values() -> None:
    mean, std = 1500.0, 450.0  # 30% spread
    sigma = math.sqrt(math.log(1.0 + 0.3**2))
    median = mean / math.sqrt(1.0 + 0.3**2)
    assert volume_z(median, mean, std) == pytest.approx(0.0, abs=1e-12)
    assert volume_z(median * math.exp(2 * sigma), mean, std) == pytest.approx(2.0)
    assert volume_z(median * math.exp(-3 * sigma), mean, std) == pytest.approx(-3.0)
    assert volume_z(mean, mean, std) == pytest.approx(sigma / 2)  # the mean sits above the median
    # log space: halving and doubling the median are equally unusual
    assert volume_z(median / 2, mean, std) == pytest.approx(-volume_z(median * 2, mean, std))


@pytest.mark.parametrize(
    "mean, std", [(None, 10.0), (100.0, None), (None, None), (float("nan"), 10.0), (100.0, float("nan"))]
)
def test_volume_z_without_statistics_is_none(mean: float | None, std: float | None) -> None:
    assert volume_z(120.0, mean, std) is None


@pytest.mark.parametrize("std", [0.0, 1e-9, 5.0])
def test_volume_z_floors_the_std_at_a_tenth_of_the_mean(std: float) -> None:
    z = volume_z(200.0, 100.0, std)  # a cohort of one (std 0) or a tight one: same as std = 10
    assert math.isfinite(z)
    assert z == pytest.approx(volume_z(200.0, 100.0, 10.0))
    assert z == pytest.approx((math.log(2.0) + math.log(1.01) / 2) / math.sqrt(math.log(1.01)))


@pytest.mark.parametrize("std", [0.0, 450.0, 1500.0])
def test_volume_z_of_an_empty_mask_is_large_and_finite(std: float) -> None:
    z = volume_z(0.0, 1500.0, std)
    assert math.isfinite(z) and z < -10.0
    assert z == volume_z(1500.0 * qc.EMPTY_VOLUME_FLOOR, 1500.0, std)
    assert z < volume_z(1.0, 1500.0, std)  # still ordered below any real, tiny volume


@pytest.mark.parametrize(
    "organ, mean, std, match",
    [
        (-1.0, 100.0, 10.0, "organ_ml"),
        (float("nan"), 100.0, 10.0, "organ_ml"),
        (float("inf"), 100.0, 10.0, "organ_ml"),
        ("big", 100.0, 10.0, "organ_ml"),
        (10.0, 0.0, 10.0, "mean_ml"),
        (10.0, -5.0, 10.0, "mean_ml"),
        (10.0, 100.0, -1.0, "std_ml"),
        (10.0, 100.0, float("inf"), "std_ml"),
    ],
)
def test_volume_z_bad_input(organ: object, mean: float, std: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        volume_z(organ, mean, std)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- features/thresholds


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"head_agreement": 1.2}, "head_agreement"),
        ({"head_agreement": float("nan")}, "head_agreement"),
        ({"uncertain_fraction": -0.1}, "uncertain_fraction"),
        ({"volume_z": float("inf")}, "volume_z"),
        ({"touches_border": "yes"}, "touches_border"),
        ({"deep_slice_fraction": 2.0}, "deep_slice_fraction"),
    ],
)
def test_features_bad_values(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        feats(**changes)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"min_head_agreement": 1.0}, "min_head_agreement"),
        ({"min_head_agreement": -0.1}, "min_head_agreement"),
        ({"max_uncertain_fraction": 0.0}, "max_uncertain_fraction"),
        ({"max_abs_volume_z": 0.0}, "max_abs_volume_z"),
        ({"max_abs_volume_z": float("nan")}, "max_abs_volume_z"),
        ({"max_deep_slice_fraction": 1.5}, "max_deep_slice_fraction"),
        ({"n_validation": -1}, "n_validation"),
    ],
)
def test_thresholds_bad_values(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        QcThresholds(**changes)


def test_tags_round_trip() -> None:
    t = QcThresholds(0.8731, 0.0123456789, 4.25, False, 0.55, n_validation=3)
    tags = t.to_tags()
    assert all(key.startswith("qc_") for key in tags)
    assert tags["qc_min_head_agreement"] == "0.8731"
    assert tags["qc_border_flags"] == "false"
    assert QcThresholds.from_tags(tags | {"val_dice": "0.9", "organ": "liver"}) == t


def test_missing_tags_are_the_defaults() -> None:
    assert QcThresholds.from_tags({}) == DEFAULT_THRESHOLDS
    assert QcThresholds.from_tags({"val_dice": "0.91"}) == DEFAULT_THRESHOLDS
    partial = QcThresholds.from_tags({"qc_max_abs_volume_z": "4"})
    assert partial == dataclasses.replace(DEFAULT_THRESHOLDS, max_abs_volume_z=4.0)


@pytest.mark.parametrize(
    "key, value",
    [
        ("qc_min_head_agreement", "high"),
        ("qc_min_head_agreement", "1.5"),
        ("qc_max_uncertain_fraction", ""),
        ("qc_max_abs_volume_z", "-3"),
        ("qc_border_flags", "maybe"),
        ("qc_max_deep_slice_fraction", "nan"),
        ("qc_n_validation", "2.5"),
    ],
)
def test_bad_tag_is_one_line(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key.removeprefix("qc_")) as err:
        QcThresholds.from_tags({key: value})
    assert "\n" not in str(err.value)


def test_describe() -> None:
    assert "defaults" in DEFAULT_THRESHOLDS.describe()
    assert "calibrated on 3 validation cases" in calibrate_qc([feats()] * 3).describe()


# ---------------------------------------------------------------------------------------------- calibration


def test_calibration_without_cases_is_the_defaults() -> None:
    assert calibrate_qc([]) == DEFAULT_THRESHOLDS


def test_calibration_floors_with_two_clean_cases() -> None:
    # two near-perfect validation cases must not give thresholds that flag everything
    cases = [
        QcFeatures(0.995, 0.0001, 0.2, False, 0.0),
        QcFeatures(0.99, 0.0002, -0.4, False, 0.05),
    ]
    t = calibrate_qc(cases)
    assert t.min_head_agreement == 0.95  # never above the ceiling
    assert t.max_uncertain_fraction == 0.002  # never below the floor
    assert t.max_abs_volume_z == 3.0  # never below 3
    assert t.max_deep_slice_fraction == 0.5  # never below the floor
    assert t.border_flags is True
    assert t.n_validation == 2
    assert not any(assess(c, t).needs_review for c in cases)


def test_calibration_worst_value_plus_margin() -> None:
    cases = [
        QcFeatures(0.80, 0.03, -3.5, False, 0.5),
        QcFeatures(0.92, 0.01, 1.0, False, 0.2),
        QcFeatures(0.90, 0.02, None, False, None),
    ]
    t = calibrate_qc(cases)  # three cases: shares up to k(3) = 1.5 + 3 / 3 = 2.5 times the worst
    assert t.min_head_agreement == pytest.approx(0.50)  # disagreement 0.2 * 2.5
    assert t.max_uncertain_fraction == pytest.approx(0.075)
    assert t.max_abs_volume_z == pytest.approx(4.5)
    assert t.max_deep_slice_fraction == pytest.approx(1.0)  # 0.5 * 2.5, at most 1
    assert not any(assess(c, t).needs_review for c in cases)  # no validation case flags itself


@pytest.mark.parametrize("n, factor", [(1, 4.5), (2, 3.0), (5, 2.1), (20, 1.65)])
def test_the_margin_narrows_as_validation_cases_grow(n: int, factor: float) -> None:
    t = calibrate_qc([feats(head_agreement=0.9, uncertain_fraction=0.01)] * n)
    assert t.min_head_agreement == pytest.approx(1 - factor * 0.1)
    assert t.max_uncertain_fraction == pytest.approx(factor * 0.01)


def test_calibration_keeps_defaults_for_unmeasured_features() -> None:
    t = calibrate_qc([QcFeatures(0.9, 0.01, None, False, None)])
    assert t.max_abs_volume_z == DEFAULT_THRESHOLDS.max_abs_volume_z
    assert t.max_deep_slice_fraction == DEFAULT_THRESHOLDS.max_deep_slice_fraction


@pytest.mark.parametrize("touching, flags", [(0, True), (1, True), (2, False), (3, False)])
def test_calibration_border_flags_unless_half_the_cases_touch(touching: int, flags: bool) -> None:
    cases = [feats(touches_border=i < touching) for i in range(4)]
    assert calibrate_qc(cases).border_flags is flags


def test_calibration_bounds_extreme_cases() -> None:
    t = calibrate_qc([QcFeatures(0.01, 0.9, 0.0, False, 1.0)])
    assert t.min_head_agreement == 0.0 and t.max_uncertain_fraction == 1.0 and t.max_deep_slice_fraction == 1.0


# ---------------------------------------------------------------------------------------------- assess


def test_clean_case() -> None:
    a = assess(feats(), T)
    assert 0.5 < a.qc_score < 1.0 and not a.needs_review and a.reasons == () and a.reasons_text is None
    perfect = assess(QcFeatures(1.0, 0.0, 0.0, False, 0.0), T)
    assert perfect.qc_score == 1.0 and not perfect.needs_review


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"head_agreement": 0.71}, "heads disagree (agreement 0.71 < 0.86)"),
        ({"uncertain_fraction": 0.031}, "uncertain pixels 3.1% > 1.2%"),
        ({"volume_z": -4.2}, "organ volume unusual (z = -4.2, |z| > 3.0)"),
        ({"volume_z": 5.0}, "organ volume unusual (z = 5.0, |z| > 3.0)"),
        ({"touches_border": True}, "organ touches the scan's border (volume incomplete)"),
        ({"deep_slice_fraction": 0.62}, "many slices needed depth 4 (62% > 40%)"),
    ],
)
def test_each_reason(changes: dict, reason: str) -> None:
    a = assess(feats(**changes), T)
    assert a.reasons == (reason,)
    assert a.needs_review and a.qc_score < 0.5 and a.reasons_text == reason


def test_reasons_close_to_the_threshold_stay_readable() -> None:
    a = assess(feats(uncertain_fraction=0.0121), T)
    assert a.reasons == ("uncertain pixels 1.21% > 1.20%",)
    assert assess(feats(volume_z=-3.04), T).reasons == ("organ volume unusual (z = -3.04, |z| > 3.00)",)
    odd = dataclasses.replace(T, min_head_agreement=0.895)
    assert assess(feats(head_agreement=0.5), odd).reasons == ("heads disagree (agreement 0.500 < 0.895)",)


def test_calibrated_thresholds_read_well_in_tags() -> None:
    t = calibrate_qc([feats(head_agreement=0.98, uncertain_fraction=0.02, deep_slice_fraction=0.13)])
    assert t.to_tags()["qc_max_deep_slice_fraction"] == "0.585"  # 4.5 * 0.13, not 0.5850000000000001
    assert t.to_tags()["qc_min_head_agreement"] == "0.91"


def test_several_reasons_worst_first() -> None:
    a = assess(feats(head_agreement=0.80, volume_z=9.0, touches_border=True), T)
    # badness: z 3.0, border 2.0, agreement 0.2 / 0.14 = 1.43
    assert [r.split(" ")[0:2] for r in a.reasons] == [["organ", "volume"], ["organ", "touches"], ["heads", "disagree"]]
    assert a.reasons_text.count("; ") == 2


def test_border_does_not_flag_when_switched_off() -> None:
    a = assess(feats(touches_border=True), dataclasses.replace(T, border_flags=False))
    assert not a.needs_review and a.reasons == ()


def test_none_features_are_skipped() -> None:
    a = assess(feats(volume_z=None, deep_slice_fraction=None), T)
    assert not a.needs_review and a.reasons == ()
    assert assess(feats(volume_z=None, head_agreement=0.5), T).reasons[0].startswith("heads disagree")


# For each feature: its value exactly at the threshold, and values from clean to far beyond it.
SWEEPS = {
    "head_agreement": (0.86, [1.0, 0.97, 0.9, 0.87, 0.86, 0.85, 0.7, 0.3, 0.0]),
    "uncertain_fraction": (0.012, [0.0, 0.004, 0.01, 0.012, 0.013, 0.05, 0.5, 1.0]),
    "volume_z": (3.0, [0.0, 0.5, 2.9, 3.0, 3.1, 6.0, 40.0]),
    "volume_z_negative": (-3.0, [0.0, -0.5, -2.9, -3.0, -3.1, -6.0, -40.0]),
    "deep_slice_fraction": (0.4, [0.0, 0.1, 0.39, 0.4, 0.41, 0.8, 1.0]),
}


def _field(name: str) -> str:
    return name.removesuffix("_negative")


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_score_is_exactly_one_half_at_the_threshold(name: str) -> None:
    at, _ = SWEEPS[name]
    a = assess(feats(**{_field(name): at}), T)
    assert a.qc_score == 0.5 and not a.needs_review and a.reasons == ()


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_score_is_monotone_in_each_feature(name: str) -> None:
    _, values = SWEEPS[name]
    scores = [assess(feats(**{_field(name): v}), T).qc_score for v in values]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_needs_review_iff_score_below_one_half(name: str) -> None:
    at, values = SWEEPS[name]
    for v in values:
        a = assess(feats(**{_field(name): v}), T)
        beyond = abs(v) > abs(at) if name != "head_agreement" else v < at
        assert a.needs_review is beyond is (a.qc_score < 0.5) is bool(a.reasons), (v, a)


def test_needs_review_iff_score_below_one_half_on_a_grid() -> None:
    for agreement in (0.5, 0.86, 0.9, 1.0):
        for uncertain in (0.0, 0.012, 0.02):
            for z in (None, 0.0, -3.0, 3.5):
                for border in (False, True):
                    for deep in (None, 0.0, 0.4, 0.9):
                        a = assess(QcFeatures(agreement, uncertain, z, border, deep), T)
                        assert a.needs_review == (a.qc_score < 0.5) == bool(a.reasons)
                        assert 0.0 <= a.qc_score <= 1.0


def test_other_features_break_ties() -> None:
    # same worst feature (the border), the case with a second near-threshold feature ranks worse
    border = assess(feats(touches_border=True), T)
    worse = assess(feats(touches_border=True, head_agreement=0.87), T)
    assert worse.qc_score < border.qc_score < 0.5
    # unflagged cases are ordered by all their features, not only by the worst
    one = assess(feats(uncertain_fraction=0.009), T)
    two = assess(feats(uncertain_fraction=0.009, deep_slice_fraction=0.29), T)
    assert 0.5 < two.qc_score < one.qc_score


def test_just_past_the_threshold_is_below_one_half() -> None:
    t = QcThresholds(max_abs_volume_z=1.0)
    a = assess(feats(volume_z=math.nextafter(1.0, 2.0), touches_border=False), t)
    assert a.needs_review and a.qc_score < 0.5


# ---------------------------------------------------------------------------------------------- auroc


def test_auroc_known_examples() -> None:
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5] * 5, [True, False, True, False, False]) == 0.5
    # positives 0.4, 0.7 (ties with a negative), 0.9; negatives 0.1, 0.5, 0.7:
    # pairs won: 0.4 -> 1; 0.7 -> 2 + 0.5 tie; 0.9 -> 3  => 6.5 / 9
    assert auroc([0.1, 0.4, 0.5, 0.7, 0.7, 0.9], [False, True, False, False, True, True]) == pytest.approx(6.5 / 9)


def test_auroc_matches_pairwise_count() -> None:
    scores = [0.3, 0.3, 0.1, 0.9, 0.5, 0.5, 0.2, 0.8, 0.3]
    labels = [1, 0, 0, 1, 0, 1, 1, 0, 1]
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert auroc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))


def test_auroc_of_qc_scores() -> None:
    # the use: a low qc_score signals a bad case, so pass 1 - qc_score
    cases = [
        (feats(), 0.93),
        (feats(head_agreement=0.6), 0.55),
        (feats(volume_z=-8.0), 0.4),
        (feats(volume_z=1.0), 0.9),
    ]
    scores = [1.0 - assess(f, T).qc_score for f, _ in cases]
    assert auroc(scores, [dice < 0.8 for _, dice in cases]) == 1.0


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([0.1, 0.2], [True, True], "positive and negative"),
        ([0.1, 0.2], [False, False], "positive and negative"),
        ([], [], "positive and negative"),
        ([0.1, 0.2], [True], "2 scores but 1 labels"),
        ([0.1, float("nan")], [True, False], "finite"),
        ([0.1, 0.2], [True, 2], "label"),
    ],
)
def test_auroc_errors(scores: list, labels: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        auroc(scores, labels)


def test_detection_scores_a_labelled_cohort() -> None:
    from anunet_platform.qc import detection

    found = detection([0.9, 0.8, 0.3, 0.2], [False, False, True, True], [0.95, 0.7, 0.5, 0.9])
    # bad (Dice < 0.8): cases 1 and 2; 1 - qc: 0.1, 0.2, 0.7, 0.8 -> pairs (bad > good): (0.2 vs 0.1: yes,
    # 0.2 vs 0.8: no), (0.7 vs 0.1: yes, 0.7 vs 0.8: no) -> 2 of 4
    assert found.auroc == pytest.approx(0.5)
    assert (found.cases, found.bad, found.flagged, found.flagged_bad) == (4, 2, 2, 1)
    assert found.flagged_dice == pytest.approx(0.7) and found.unflagged_dice == pytest.approx(0.825)
    assert detection([0.9, 0.1], [False, True], [0.9, 0.95]).auroc is None, "one class: no AUROC"
    assert "AUROC" in found.line()
    with pytest.raises(ValueError, match="one each per case"):
        detection([0.9], [False, True], [0.9])
