"""Depth selection: a pure function from per-depth metrics and a policy to a depth."""

from __future__ import annotations

import doctest
import math
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from anunet_core.confidence import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, MIN_BOOTSTRAP_CASES, bootstrap_dice_drop
from anunet_platform import selection
from anunet_platform.selection import (
    DepthCandidate,
    DepthChoice,
    DepthPolicy,
    candidates_from_registry,
    choose_depth,
)

# Paper-like numbers (Table 6 flavour): L4 best, L3 and L2 close, L1 far behind.
DICE = {1: 0.7300, 2: 0.9010, 3: 0.9050, 4: 0.9061}
LATENCY = {1: 2.5, 2: 4.0, 3: 6.0, 4: 9.1}
POOLED = DepthPolicy(rule="pooled")

# Per-case volume Dice of 12 validation cases with known answers (max_dice_drop 0.01):
# L3 is clearly within (0.002 below L4 on every case); L2 is within on average (mean drop 0.005)
# but its cases swing by +-0.045, so with 95% confidence it is not; L1 is far behind.
L4_CASES = tuple(0.90 + 0.004 * (k % 5) for k in range(12))
SWING = tuple(0.05 if k % 2 else -0.04 for k in range(12))  # mean 0.005
CASES = {
    1: tuple(d - 0.2 for d in L4_CASES),
    2: tuple(d - s for d, s in zip(L4_CASES, SWING, strict=True)),
    3: tuple(d - 0.002 for d in L4_CASES),
    4: L4_CASES,
}


def cands(
    dice: dict[int, float] = DICE, latency: dict[int, float] = LATENCY, case_dice: dict[int, tuple] | None = None
) -> list[DepthCandidate]:
    return [DepthCandidate(d, dice[d], latency[d], params=1000 * d, case_dice=(case_dice or {}).get(d, ())) for d in dice]


def case_cands(case_dice: dict[int, tuple] = CASES) -> list[DepthCandidate]:
    """Candidates whose pooled val_dice is the mean of their case Dice (what the pooled rule sees)."""
    return cands({d: float(np.mean(v)) if len(v) else 0.9 for d, v in case_dice.items()},
                 {d: 1.0 for d in case_dice}, case_dice)


def naive_bootstrap(case_dice: dict[int, tuple], best: int, depth: int, confidence: float = 0.95) -> tuple[float, float]:
    """The bootstrap written out plainly (a gather per resample), to check the vectorised one."""
    difference = np.asarray(case_dice[best]) - np.asarray(case_dice[depth])
    n = len(difference)
    picks = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    means = [difference[row].mean() for row in picks]
    return float(difference.mean()), float(np.percentile(means, 100 * confidence))


def test_module_is_pure() -> None:
    # no Ray, no MLflow on import (the segment driver and tests import it cheaply)
    source = Path(selection.__file__).read_text()
    assert "import ray" not in source and "import mlflow" not in source


def test_doctests() -> None:
    assert doctest.testmod(selection).failed == 0


# ----------------------------------------------------------------------------------------------
# The default rule: a paired bootstrap over validation cases
# ----------------------------------------------------------------------------------------------


def test_the_known_answer_of_the_constructed_cases() -> None:
    # the premise: L2's mean is within the drop, L3's every case is
    assert np.mean(CASES[4]) - np.mean(CASES[2]) == pytest.approx(0.005)
    assert choose_depth(case_cands(), DepthPolicy()).depth == 3  # L2 varies too much to be trusted
    assert choose_depth(case_cands(), POOLED).depth == 2  # the pooled rule takes it


def test_bootstrap_reason_records_the_interval() -> None:
    choice = choose_depth(case_cands(), DepthPolicy())
    assert choice == DepthChoice(
        3, "L3: smallest depth within 0.010 of L4's volume Dice with 95% confidence over 12 validation cases "
           "(mean drop 0.002, 95th percentile 0.002)"
    )
    assert choice.adaptive is False


def test_bootstrap_reason_numbers_are_the_bootstrap_of_the_chosen_depth() -> None:
    # a noisy depth that still passes at a looser drop: its reason quotes its own mean and percentile
    mean, upper = naive_bootstrap(CASES, best=4, depth=2)
    assert mean < upper < 0.05  # the premise: L2 passes a drop of 0.05, not 0.01
    choice = choose_depth(case_cands(), DepthPolicy(max_dice_drop=0.05))
    assert choice.depth == 2
    assert choice.reason == (
        f"L2: smallest depth within 0.050 of L4's volume Dice with 95% confidence over 12 validation cases "
        f"(mean drop {mean:.3f}, 95th percentile {upper:.3f})"
    )


@pytest.mark.parametrize("confidence,expected,percentile", [(0.95, 3, "95th"), (0.5, 2, "50th"), (0.99, 3, "99th"),
                                                            (0.975, 3, "97.5th")])
def test_confidence_sets_the_percentile(confidence: float, expected: int, percentile: str) -> None:
    # at 50% the upper percentile is about the mean drop (0.005): L2 passes
    choice = choose_depth(case_cands(), DepthPolicy(confidence=confidence))
    assert choice.depth == expected
    assert f"with {confidence * 100:g}% confidence" in choice.reason and f", {percentile} percentile " in choice.reason


def test_vectorised_bootstrap_equals_the_plain_one() -> None:
    dice = np.array([CASES[d] for d in (1, 2, 3, 4)])
    mean, upper = bootstrap_dice_drop(dice, reference=3)
    for row, depth in enumerate((1, 2, 3, 4)):
        expected = naive_bootstrap(CASES, best=4, depth=depth)
        assert (mean[row], upper[row]) == pytest.approx(expected, abs=1e-12)
    assert (mean[3], upper[3]) == (0.0, 0.0)


def test_bootstrap_is_deterministic_and_paired_across_depths() -> None:
    dice = np.array([CASES[d] for d in (1, 2, 3, 4)])
    first = bootstrap_dice_drop(dice, reference=3)
    np.testing.assert_array_equal(first[1], bootstrap_dice_drop(dice, reference=3)[1])
    # the same resamples whatever the other depths: L2's interval alone is the same
    np.testing.assert_array_equal(bootstrap_dice_drop(dice[[1, 3]], reference=1)[1], first[1][[1, 3]])
    # another seed, another (close) interval: the seed is what makes it deterministic
    noisy = np.random.default_rng(0).uniform(0.8, 0.95, size=(2, 30))
    upper, other = (bootstrap_dice_drop(noisy, reference=1, seed=seed)[1][0] for seed in (BOOTSTRAP_SEED, BOOTSTRAP_SEED + 1))
    assert upper != other and other == pytest.approx(upper, abs=0.005)
    assert [choose_depth(case_cands()) for _ in range(3)] == [choose_depth(case_cands())] * 3


def test_bootstrap_is_fast() -> None:
    dice = np.random.default_rng(0).uniform(0.8, 0.95, size=(4, 100))  # 4 depths x 100 cases
    bootstrap_dice_drop(dice, reference=3)
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        bootstrap_dice_drop(dice, reference=3)
        seconds.append(time.perf_counter() - start)
    assert min(seconds) < 0.05, f"{min(seconds) * 1e3:.1f} ms for 4 depths x 100 cases x {BOOTSTRAP_RESAMPLES} resamples"


@pytest.mark.parametrize(
    "offsets,drop,expected",
    [
        ({1: 0.2, 2: 0.0, 3: 0.0, 4: 0.0}, 0.0, 2),  # equal to the best on every case: within even at drop 0
        ({1: 0.010, 2: 0.0, 3: 0.0, 4: 0.0}, 0.01, 1),  # exactly at the drop on every case counts
        ({1: 0.011, 2: 0.3, 3: 0.1, 4: 0.0}, 0.01, 4),  # nothing else within: the best
        ({1: 0.3, 2: -0.02, 3: 0.0, 4: 0.0}, 0.01, 2),  # the best need not be the deepest (L2 beats L4)
        ({1: 0.3, 2: 0.0, 3: -0.02, 4: 0.0}, 0.025, 2),  # best L3; L2 0.02 below it, within 0.025
        ({1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}, 0.0, 1),  # all equal: the smallest
    ],
)
def test_bootstrap_picks_the_smallest_depth_within_with_confidence(offsets: dict, drop: float, expected: int) -> None:
    base = (0.9061, 0.88, 0.93, 0.91, 0.90, 0.92, 0.89)
    case_dice = {d: tuple(v - offsets[d] for v in base) for d in offsets}
    choice = choose_depth(case_cands(case_dice), DepthPolicy(max_dice_drop=drop))
    assert choice.depth == expected and choice.reason.startswith(f"L{expected}: ") and "\n" not in choice.reason


@pytest.mark.parametrize(
    "offsets,reason",
    [
        ({1: 0.3, 2: 0.3, 3: 0.3, 4: 0.0},
         ("L4: the best mean volume Dice (0.9066) over 7 validation cases; no smaller depth is within 0.010 of it with 95% "
          "confidence (closest: L1, mean drop 0.300, 95th percentile 0.300)")),
        ({1: 0.3, 2: 0.02, 3: 0.1, 4: 0.0},
         ("L4: the best mean volume Dice (0.9066) over 7 validation cases; no smaller depth is within 0.010 of it with 95% "
          "confidence (closest: L2, mean drop 0.020, 95th percentile 0.020)")),
        ({1: 0.0, 2: 0.1, 4: 0.1},
         "L1: the smallest depth, with the best mean volume Dice (0.9066) over 7 validation cases"),
    ],
)
def test_bootstrap_reason_when_the_best_is_chosen(offsets: dict, reason: str) -> None:
    base = (0.9061, 0.88, 0.93, 0.91, 0.90, 0.92, 0.8999)
    case_dice = {d: tuple(v - offsets[d] for v in base) for d in offsets}
    assert choose_depth(case_cands(case_dice), DepthPolicy()).reason == reason


@pytest.mark.parametrize("cases", range(1, MIN_BOOTSTRAP_CASES))
@pytest.mark.parametrize("depths", [(1, 2, 3, 4), (1, 2, 3), (2,)])
def test_too_few_cases_give_the_deepest_depth(cases: int, depths: tuple) -> None:
    case_dice = {d: CASES[d][:cases] for d in depths}
    choice = choose_depth(case_cands(case_dice), DepthPolicy(max_dice_drop=1.0))  # everything "within"
    scored = "1 validation case was" if cases == 1 else f"{cases} validation cases were"
    assert choice == DepthChoice(
        depths[-1], f"L{depths[-1]}: the deepest depth, because only {scored} scored (5 needed for a confident choice)"
    )


def test_enough_cases_choose() -> None:
    case_dice = {d: v[:MIN_BOOTSTRAP_CASES] for d, v in CASES.items()}
    assert choose_depth(case_cands(case_dice), DepthPolicy(max_dice_drop=1.0)).depth == 1


@pytest.mark.parametrize(
    "case_dice,why",
    [
        ({1: CASES[1], 2: CASES[2][:11], 3: CASES[3], 4: CASES[4]},
         "the depths were scored on different numbers of validation cases (L1 12, L2 11, L3 12, L4 12)"),
        ({1: (), 2: CASES[2], 3: CASES[3], 4: CASES[4]}, "L1 has no per-case validation Dice (val_case_dice tag)"),
        ({1: (), 2: (), 3: CASES[3], 4: CASES[4]}, "L1, L2 have no per-case validation Dice (val_case_dice tag)"),
        ({d: () for d in CASES}, "no per-case validation Dice is registered (val_case_dice tag)"),
    ],
)
def test_missing_or_mismatched_case_dice_give_the_deepest_depth(case_dice: dict, why: str) -> None:
    choice = choose_depth(case_cands(case_dice), DepthPolicy(max_dice_drop=1.0))
    assert choice == DepthChoice(4, f"L4: the deepest depth, because {why}")


@pytest.mark.parametrize("bad", [1.2, -0.1, math.nan, math.inf])
def test_bad_case_dice_is_refused(bad: float) -> None:
    case_dice = {**CASES, 3: CASES[3][:5] + (bad,) + CASES[3][6:]}
    with pytest.raises(ValueError, match=rf"volume Dice of each validation case must be in \[0, 1\]: L3 case 5 {bad!r}"):
        choose_depth(case_cands(case_dice), DepthPolicy())


def test_bootstrap_does_not_read_pooled_dice_or_latency() -> None:
    nan = cands({d: math.nan for d in CASES}, {d: math.nan for d in CASES}, CASES)
    assert choose_depth(nan, DepthPolicy()) == choose_depth(case_cands(), DepthPolicy())


@pytest.mark.parametrize("case_dice", ["0.9,0.8", 0.9, [0.9, "x"]])
def test_candidate_case_dice_must_be_numbers(case_dice: object) -> None:
    with pytest.raises(ValueError, match="case_dice of L2 must be"):
        DepthCandidate(2, 0.9, 1.0, case_dice=case_dice)  # type: ignore[arg-type]
    assert DepthCandidate(2, 0.9, 1.0, case_dice=np.array([0.5, 1])).case_dice == (0.5, 1.0)


@pytest.mark.parametrize("kwargs,match", [
    ({"case_dice": np.zeros((2, 0))}, r"at least one case, got shape \(2, 0\)"),
    ({"case_dice": np.zeros(3)}, r"\(rows, cases\)"),
    ({"case_dice": np.zeros((2, 3)), "reference": 2}, r"reference must be a row of case_dice \(0..1\), got 2"),
])
def test_bootstrap_refuses_bad_shapes(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bootstrap_dice_drop(**{"reference": 0, **kwargs})


# ----------------------------------------------------------------------------------------------
# The pooled rule (before the bootstrap; kept for the side-by-side benchmark)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dice,drop,expected",
    [
        (DICE, 0.01, 2),  # L2 0.9010 >= 0.9061 - 0.01
        (DICE, 0.0, 4),  # no drop allowed: the best
        (DICE, 0.001, 4),  # L3 0.9050 < 0.9051
        (DICE, 0.002, 3),  # L3 0.9050 >= 0.9041; L2 0.9010 is not
        (DICE, 0.2, 1),  # everything within: the smallest
        ({1: 0.8961, 2: 0.85, 3: 0.90, 4: 0.9061}, 0.01, 1),  # exactly at the threshold counts (float rounding)
        ({1: 0.5, 2: 0.9, 3: 0.9, 4: 0.9}, 0.0, 2),  # equal bests: the smallest
        ({1: 0.5, 2: 0.95, 3: 0.9, 4: 0.92}, 0.01, 2),  # best need not be the deepest
        ({2: 0.90, 4: 0.91}, 0.01, 2),  # a subset of depths registered
        ({3: 0.9}, 0.0, 3),  # one candidate
    ],
)
def test_pooled_policy_picks_smallest_depth_within_the_drop(dice: dict, drop: float, expected: int) -> None:
    choice = choose_depth(cands(dice, {d: 1.0 for d in dice}), DepthPolicy(max_dice_drop=drop, rule="pooled"))
    assert isinstance(choice, DepthChoice) and choice.depth == expected
    assert choice.reason.startswith(f"L{expected}: smallest depth within {drop:.3f} of the best validation Dice")
    assert "\n" not in choice.reason


def test_pooled_reason_names_best_and_chosen() -> None:
    choice = choose_depth(cands(), POOLED)
    assert choice == DepthChoice(
        2, "L2: smallest depth within 0.010 of the best validation Dice (L4 0.9061; L2 0.9010)"
    )
    assert choose_depth(cands(), DepthPolicy(max_dice_drop=0, rule="pooled")).reason.endswith("(L4 0.9061)")


def test_pooled_rule_ignores_case_dice() -> None:
    assert choose_depth(cands(case_dice=CASES), POOLED) == choose_depth(cands(), POOLED)


@pytest.mark.parametrize("policy", [DepthPolicy(), POOLED, DepthPolicy(latency_budget_ms=7.0),
                                    DepthPolicy(max_dice_drop=0.0), DepthPolicy(adaptive=True)])
def test_order_of_candidates_does_not_matter(policy: DepthPolicy) -> None:
    base = cands(case_dice=CASES)
    for seed in range(5):
        shuffled = base[:]
        random.Random(seed).shuffle(shuffled)
        assert choose_depth(shuffled, policy) == choose_depth(base, policy)


# ----------------------------------------------------------------------------------------------
# Latency budget, override, adaptive
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "budget,expected",
    [
        (100.0, 4),  # everything fits: the best Dice
        (9.1, 4),  # exactly at the budget fits
        (7.0, 3),
        (5.0, 2),
        (2.5, 1),
    ],
)
def test_latency_budget_picks_best_dice_within_budget(budget: float, expected: int) -> None:
    choice = choose_depth(cands(), DepthPolicy(latency_budget_ms=budget))
    assert choice.depth == expected
    assert f"latency budget of {budget:g} ms/slice" in choice.reason and "\n" not in choice.reason


def test_latency_budget_ties_go_to_the_smaller_depth_and_ignore_the_drop() -> None:
    dice = {1: 0.5, 2: 0.9, 3: 0.9, 4: 0.95}
    assert choose_depth(cands(dice), DepthPolicy(latency_budget_ms=6.0)).depth == 2
    # max_dice_drop (and the rule) play no part under a budget
    assert choose_depth(cands(dice), DepthPolicy(latency_budget_ms=6.0, max_dice_drop=1.0)).depth == 2
    assert choose_depth(cands(dice), DepthPolicy(latency_budget_ms=6.0, rule="pooled")).depth == 2


def test_latency_budget_too_small_names_the_fastest_depth() -> None:
    with pytest.raises(ValueError, match=r"no depth fits the latency budget of 1 ms/slice: the fastest, L1, takes 2\.500 ms/slice"):
        choose_depth(cands(), DepthPolicy(latency_budget_ms=1.0))


def test_latency_budget_needs_latencies() -> None:
    latency = {**LATENCY, 3: math.nan}
    with pytest.raises(ValueError, match="latency_ms_per_slice.*L3 nan"):
        choose_depth(cands(DICE, latency), DepthPolicy(latency_budget_ms=5.0))
    # the Dice-drop rules do not read latencies
    assert choose_depth(cands(DICE, latency), POOLED).depth == 2
    assert choose_depth(cands(DICE, latency, CASES), DepthPolicy()).depth == 3


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_override_returns_that_depth(depth: int) -> None:
    choice = choose_depth(cands(case_dice=CASES), DepthPolicy(depth=depth))
    assert choice.depth == depth and choice.adaptive is False
    assert choice.reason == f"L{depth}: fixed by the depth override (validation Dice {DICE[depth]:.4f})"


def test_override_wins_over_a_latency_budget_and_ignores_metrics() -> None:
    choice = choose_depth(cands(), DepthPolicy(depth=4, latency_budget_ms=1.0))
    assert choice.depth == 4 and "latency budget of 1 ms/slice is ignored" in choice.reason
    nan_dice = cands({d: math.nan for d in DICE})
    choice = choose_depth(nan_dice, DepthPolicy(depth=3))
    assert choice.depth == 3 and "validation Dice unknown" in choice.reason


def test_override_of_a_missing_depth_is_refused() -> None:
    with pytest.raises(ValueError, match=r"depth L3 was asked for but is not registered \(available: L1, L2\)"):
        choose_depth(cands({1: 0.8, 2: 0.9}), DepthPolicy(depth=3))


@pytest.mark.parametrize("depths", [(1, 2, 3, 4), (1, 2, 3), (2, 4), (1,)])
def test_adaptive_runs_the_deepest_registered_depth(depths: tuple) -> None:
    # the metrics are not read: NaN Dice, no case Dice
    choice = choose_depth(cands({d: math.nan for d in depths}, {d: math.nan for d in depths}), DepthPolicy(adaptive=True))
    deepest = depths[-1]
    assert choice == DepthChoice(
        deepest, f"adaptive: each slice stops between L1 and L{deepest} by the calibrated exit rule", adaptive=True
    )


def test_adaptive_ignores_a_latency_budget() -> None:
    choice = choose_depth(cands(), DepthPolicy(adaptive=True, latency_budget_ms=1.0))
    assert choice.depth == 4 and choice.adaptive
    assert choice.reason.endswith("by the calibrated exit rule; the latency budget of 1 ms/slice is ignored")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"depth": 0}, "depth must be one of 1..4, got 0"),
        ({"depth": 5}, "depth must be one of 1..4, got 5"),
        ({"depth": True}, "depth must be one of 1..4, got True"),
        ({"depth": "2"}, "depth must be one of 1..4, got '2'"),
        ({"depth": 2.0}, "depth must be one of 1..4, got 2.0"),
        ({"max_dice_drop": -0.01}, "max_dice_drop must be within \\[0, 1\\].*-0.01"),
        ({"max_dice_drop": 1.5}, "max_dice_drop must be within \\[0, 1\\].*1.5"),
        ({"max_dice_drop": math.nan}, "max_dice_drop must be within.*nan"),
        ({"max_dice_drop": "a"}, "max_dice_drop must be a number, got 'a'"),
        ({"latency_budget_ms": 0}, "latency_budget_ms must be a positive number.*got 0"),
        ({"latency_budget_ms": -3.0}, "latency_budget_ms must be a positive.*-3.0"),
        ({"latency_budget_ms": math.inf}, "latency_budget_ms must be a positive.*inf"),
        ({"rule": "median"}, "rule must be one of bootstrap, pooled, got 'median'"),
        ({"rule": None}, "rule must be one of bootstrap, pooled, got None"),
        ({"confidence": 1.0}, r"confidence must be within \(0, 1\), e.g. 0.95, got 1.0"),
        ({"confidence": 0}, r"confidence must be within \(0, 1\).*got 0"),
        ({"confidence": 95}, r"confidence must be within \(0, 1\).*got 95"),
        ({"resamples": 0}, "resamples must be a positive int, got 0"),
        ({"resamples": 100.0}, "resamples must be a positive int, got 100.0"),
        ({"adaptive": "yes"}, "adaptive must be True or False, got 'yes'"),
        ({"adaptive": True, "depth": 2}, r"an adaptive depth and a fixed depth \(L2\) exclude each other"),
    ],
)
def test_bad_policy_values_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DepthPolicy(**kwargs)


def test_policy_accepts_numpy_ints_and_normalises() -> None:
    policy = DepthPolicy(depth=np.int64(2), max_dice_drop=0, latency_budget_ms=3, rule=" Pooled ", confidence=np.float64(0.9),
                         resamples=np.int64(500))
    assert policy.depth == 2 and type(policy.depth) is int and type(policy.resamples) is int
    assert isinstance(policy.max_dice_drop, float) and isinstance(policy.latency_budget_ms, float)
    assert policy.rule == "pooled" and type(policy.confidence) is float


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({}, DepthPolicy()),
        ({"depth": "auto"}, DepthPolicy()),
        ({"depth": "AUTO", "max_dice_drop": 0.02}, DepthPolicy(max_dice_drop=0.02)),
        ({"depth": "3"}, DepthPolicy(depth=3)),
        ({"depth": 2, "latency_budget_ms": 5}, DepthPolicy(depth=2, latency_budget_ms=5.0)),
        ({"depth": None, "latency_budget_ms": 5}, DepthPolicy(latency_budget_ms=5.0)),
        ({"depth": "adaptive"}, DepthPolicy(adaptive=True)),
        ({"depth": " Adaptive ", "max_dice_drop": 0.005}, DepthPolicy(adaptive=True, max_dice_drop=0.005)),
    ],
)
def test_policy_from_flags(flags: dict, expected: DepthPolicy) -> None:
    assert DepthPolicy.from_flags(**flags) == expected


@pytest.mark.parametrize("depth,match", [("deep", "'auto', 'adaptive' or one of 1..4, got 'deep'"),
                                         ("7", "one of 1..4, got 7")])
def test_policy_from_bad_flags(depth: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DepthPolicy.from_flags(depth)


@pytest.mark.parametrize("policy,text", [
    (DepthPolicy(), ("smallest depth within 0.010 of the best volume Dice with 95% confidence (paired bootstrap over "
                     "validation cases)")),
    (DepthPolicy(max_dice_drop=0.005, confidence=0.9), ("smallest depth within 0.005 of the best volume Dice with 90% "
                                                        "confidence (paired bootstrap over validation cases)")),
    (POOLED, "smallest depth within 0.010 of the best validation Dice"),
    (DepthPolicy(latency_budget_ms=5), "best validation Dice within 5 ms/slice"),
    (DepthPolicy(depth=2), "fixed depth L2"),
    (DepthPolicy(adaptive=True), "adaptive depth: each slice stops by the calibrated exit rule"),
])
def test_policy_describe(policy: DepthPolicy, text: str) -> None:
    assert policy.describe() == text


@pytest.mark.parametrize("policy", [POOLED, DepthPolicy(latency_budget_ms=100.0)])
@pytest.mark.parametrize("bad", [math.nan, 1.2, -0.1, math.inf])
def test_bad_pooled_or_budget_validation_dice_is_refused(policy: DepthPolicy, bad: float) -> None:
    dice = {**DICE, 2: bad}
    with pytest.raises(ValueError, match=rf"validation Dice must be a number in \[0, 1\].*L2 {bad!r}"):
        choose_depth(cands(dice), policy)


ALL_POLICIES = [DepthPolicy(), POOLED, DepthPolicy(depth=1), DepthPolicy(latency_budget_ms=5.0), DepthPolicy(adaptive=True)]


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_no_candidates_is_refused(policy: DepthPolicy) -> None:
    with pytest.raises(ValueError, match="no depth candidates"):
        choose_depth([], policy)


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_duplicate_depths_are_refused(policy: DepthPolicy) -> None:
    dup = cands() + [DepthCandidate(2, 0.99, 1.0)]
    with pytest.raises(ValueError, match="several candidates for depth L2"):
        choose_depth(dup, policy)


@pytest.mark.parametrize("depth", [0, 5, "2", None])
def test_candidate_depth_is_checked(depth: object) -> None:
    with pytest.raises(ValueError, match="DepthCandidate.depth must be one of 1..4"):
        DepthCandidate(depth, 0.9, 1.0)  # type: ignore[arg-type]


def test_candidate_numbers_are_checked() -> None:
    with pytest.raises(ValueError, match="val_dice of L2 must be a number, got 'x'"):
        DepthCandidate(2, "x", 1.0)  # type: ignore[arg-type]
    assert DepthCandidate(2, "0.9", "1.5").val_dice == 0.9  # type: ignore[arg-type]  # tag strings


def test_non_candidate_items_are_refused() -> None:
    with pytest.raises(TypeError, match="candidates must be DepthCandidate"):
        choose_depth([(1, 0.9, 1.0)], DepthPolicy())  # type: ignore[list-item]


@pytest.mark.parametrize("case_dice", [None, CASES])
def test_choose_depth_default_policy_is_the_default(case_dice: dict | None) -> None:
    assert choose_depth(cands(case_dice=case_dice)) == choose_depth(cands(case_dice=case_dice), DepthPolicy())
    assert DepthPolicy().rule == "bootstrap" and DepthPolicy().confidence == 0.95 and not DepthPolicy().adaptive


# ----------------------------------------------------------------------------------------------
# From the registry
# ----------------------------------------------------------------------------------------------


def registered(case_dice: dict[int, tuple] | None = None, **extra: str) -> dict:
    """``production_depths``-like entries, tags as MLflow stores them (strings)."""
    from anunet_platform.registry import RegisteredDepth

    def tags(d: int) -> dict[str, str]:
        out = {"val_dice": str(DICE[d]), "latency_ms_per_slice": f"{LATENCY[d]:.4f}", "params": str(1000 * d), **extra}
        if case_dice is not None:
            out["val_case_dice"] = RegisteredDepth.case_dice_tag(case_dice[d])
        return out

    return {d: RegisteredDepth(name=f"anunet-liver-ct-L{d}", version=str(d), depth=d, tags=tags(d)) for d in (4, 2, 3, 1)}


def test_candidates_from_registry_depths() -> None:
    out = candidates_from_registry(registered())
    assert out == cands()
    assert choose_depth(out, POOLED).depth == 2
    # without the per-case tag (a version registered before it), the default has no confident choice
    assert choose_depth(out, DepthPolicy()) == DepthChoice(
        4, "L4: the deepest depth, because no per-case validation Dice is registered (val_case_dice tag)"
    )


def test_candidates_from_registry_carry_the_case_dice() -> None:
    out = candidates_from_registry(registered(CASES))
    assert [c.case_dice for c in out] == [pytest.approx(CASES[d], abs=1e-6) for d in (1, 2, 3, 4)]
    assert choose_depth(out, DepthPolicy()).depth == 3 and choose_depth(out, POOLED).depth == 2


@pytest.mark.parametrize("values", [(), (0.0, 1, 0.5), CASES[2], tuple(np.linspace(0, 1, 100))])
def test_val_case_dice_tag_round_trip(values: tuple) -> None:
    from anunet_platform.registry import RegisteredDepth

    tag = RegisteredDepth.case_dice_tag(values)
    entry = RegisteredDepth("anunet-liver-ct-L2", "7", 2, {"val_case_dice": tag})
    assert entry.val_case_dice == pytest.approx(values, abs=5e-7) and type(entry.val_case_dice) is tuple
    assert len(tag) <= 2 + 9 * max(len(values), 1)
    assert RegisteredDepth("anunet-liver-ct-L2", "7", 2, {}).val_case_dice == ()  # no tag: no cases


@pytest.mark.parametrize("tag", ["0.9,0.8", "[0.9, 1.2]", "[0.9, -0.1]", '["0.9"]', "[true]", "[NaN]", "{}", "0.9",
                                 "[[0.9]]", "", "[0.9," + "0.8," * 40])
def test_bad_val_case_dice_tag_is_refused(tag: str) -> None:
    from anunet_platform.registry import RegisteredDepth

    entry = RegisteredDepth("anunet-liver-ct-L2", "7", 2, {"val_case_dice": tag})
    with pytest.raises(ValueError, match=r"^tag val_case_dice of anunet-liver-ct-L2 v7 must be a JSON list of Dice values "
                                         r"in \[0, 1\], got '.{0,60}'$") as raised:
        _ = entry.val_case_dice
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="^registry entry for depth 2 has a bad tag: tag val_case_dice of"):
        candidates_from_registry({2: entry})


@pytest.mark.parametrize("values", [(1.2,), (math.nan,), (-0.1,)])
def test_val_case_dice_tag_writer_refuses_non_dice(values: tuple) -> None:
    from anunet_platform.registry import RegisteredDepth

    with pytest.raises(ValueError, match=r"val_case_dice must be Dice values in \[0, 1\]"):
        RegisteredDepth.case_dice_tag(values)


def test_candidates_from_registry_missing_tag_is_nan_then_refused() -> None:
    entry = SimpleNamespace(depth=1, val_dice=math.nan, latency_ms_per_slice=1.0, params=0)  # no val_case_dice: ()
    out = candidates_from_registry({1: entry})
    assert math.isnan(out[0].val_dice) and out[0].case_dice == ()
    with pytest.raises(ValueError, match="missing val_dice tag"):
        choose_depth(out, POOLED)


def test_candidates_from_registry_refuses_mismatched_keys_and_bad_entries() -> None:
    with pytest.raises(ValueError, match="entry under depth 2 is for depth 3"):
        candidates_from_registry({2: SimpleNamespace(depth=3, val_dice=0.9, latency_ms_per_slice=1.0, params=0)})
    with pytest.raises(ValueError, match="registry entry for depth 1 lacks"):
        candidates_from_registry({1: SimpleNamespace(depth=1, val_dice=0.9)})


def test_importing_selection_does_not_import_mlflow_or_ray() -> None:
    import subprocess

    code = "import sys, anunet_platform.selection; print(sorted(m for m in ('ray', 'mlflow', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert out == "[]"


# ----------------------------------------------------------------------------------------------
# Post-processing: decided at registration, followed (or overridden) at segmentation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("before,after,apply", [
    ([0.80, 0.90], [0.85, 0.90], True),  # it helps: on
    ([0.80, 0.90], [0.80, 0.88], False),  # it hurts: off
    ([0.80, 0.90], [0.80, 0.90], False),  # no change: it must earn its place
    ([0.70, 0.90], [0.80, 0.81], True),  # the mean decides: +0.10 on one case, -0.09 on the other
    ([], [], False),
])
def test_postprocessing_is_on_only_where_it_raises_the_validation_dice(before, after, apply: bool) -> None:
    from anunet_platform.selection import decide_postprocessing

    choice = decide_postprocessing(before, after)
    assert choice.apply is apply and choice.reason.startswith("on:" if apply else "off:")
    if before:
        assert f"on {len(before)} validation cases" in choice.reason
        assert f"{sum(before) / len(before):.4f} -> {sum(after) / len(after):.4f}" in choice.reason


@pytest.mark.parametrize("before,after,message", [
    ([0.8], [0.8, 0.9], "1 Dice values before post-processing but 2 after"),
    ([1.2], [0.8], r"dice_before must be Dice values in \[0, 1\], got 1.2"),
    ([0.8], [float("nan")], "dice_after must be Dice values"),
])
def test_bad_validation_dice_is_refused(before, after, message: str) -> None:
    from anunet_platform.selection import decide_postprocessing

    with pytest.raises(ValueError, match=message):
        decide_postprocessing(before, after)


@pytest.mark.parametrize("mode,tags,apply,reason", [
    ("auto", {"postprocess": "on", "val_volume_dice": "0.8", "val_volume_dice_postprocessed": "0.85"}, True,
     "on: decided at registration (validation volume Dice 0.8000 -> 0.8500)"),
    ("auto", {"postprocess": "off"}, False, "off: decided at registration"),
    ("auto", {}, False, "off: the version has no registered post-processing decision"),
    ("on", {"postprocess": "off"}, True, "on: --postprocess on"),
    ("off", {"postprocess": "on"}, False, "off: --postprocess off"),
])
def test_the_segment_job_follows_the_registered_decision_unless_told(mode, tags, apply: bool, reason: str) -> None:
    from anunet_platform.selection import postprocess_choice

    choice = postprocess_choice(mode, tags)
    assert (choice.apply, choice.reason) == (apply, reason)
    with pytest.raises(ValueError, match="postprocess must be one of auto, on, off"):
        postprocess_choice("sometimes", tags)
