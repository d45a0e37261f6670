"""Tests of the per-slice exit rule, its signals, its replay and its calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anunet_core.confidence import MIN_BOOTSTRAP_CASES, bootstrap_dice_drop
from anunet_core.exit_rule import (
    DEFAULT_GRID,
    UNCERTAIN_BAND,
    CaseHeads,
    ExitGrid,
    ExitRule,
    SliceSignals,
    calibrate_exit_rule,
    exits,
    simulate,
    slice_signals,
)

LOW, HIGH = 0.01, 0.99  # confident background / foreground probabilities (not uncertain)
GFLOPS = {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}
TAU_OFF = 1.01  # never by agreement


def square(size: int = 8, top: int = 2, left: int = 2, side: int = 4) -> np.ndarray:
    """An ``(size, size)`` bool mask with a ``side x side`` square at (top, left)."""
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def confident(mask: np.ndarray) -> np.ndarray:
    """Probabilities that are HIGH on ``mask`` and LOW elsewhere (float32)."""
    return np.where(mask, HIGH, LOW).astype(np.float32)


# --- slice_signals -------------------------------------------------------------------------------

EMPTY = np.zeros((8, 8), dtype=bool)


@pytest.mark.parametrize(
    ("mask", "prev_mask", "agreement"),
    [
        pytest.param(square(), square(), 1.0, id="identical"),
        pytest.param(square(top=0, left=0), square(top=4, left=4), 0.0, id="disjoint"),
        pytest.param(EMPTY, EMPTY, 1.0, id="both-empty"),
        pytest.param(square(), EMPTY, 0.0, id="one-empty"),
        pytest.param(square(top=0, left=0), square(top=0, left=2), 0.5, id="half-overlap"),  # 2*8/(16+16)
    ],
)
def test_agreement_is_mask_dice(mask: np.ndarray, prev_mask: np.ndarray, agreement: float) -> None:
    signals = slice_signals(torch.from_numpy(confident(mask))[None], torch.from_numpy(confident(prev_mask))[None])
    assert signals.agreement.dtype == torch.float64
    assert signals.agreement.tolist() == pytest.approx([agreement])


def test_agreement_is_nan_without_previous_head() -> None:
    signals = slice_signals(torch.rand(3, 8, 8), None)
    assert signals.agreement.shape == (3,)
    assert torch.isnan(signals.agreement).all()


def test_max_prob_and_uncertain_fraction() -> None:
    low, high = UNCERTAIN_BAND
    # slice 0: 16 pixels, 4 of them strictly inside the band; the band's ends are not uncertain
    first = torch.full((4, 4), 0.02)
    first[0, :] = torch.tensor([0.2, 0.5, 0.7, 0.85])
    first[1, :2] = torch.tensor([low, high])
    second = torch.zeros(4, 4)  # slice 1: all zero
    signals = slice_signals(torch.stack([first, second]), None)
    assert signals.max_prob.tolist() == pytest.approx([high, 0.0])
    assert signals.uncertain_fraction.tolist() == pytest.approx([4 / 16, 0.0])
    assert len(signals) == 2


@pytest.mark.parametrize(
    ("prob", "prev", "message"),
    [
        (torch.rand(8, 8), None, "shape"),
        (torch.rand(2, 8, 8), torch.rand(3, 8, 8), "differs"),
    ],
)
def test_slice_signals_rejects_bad_shapes(prob: torch.Tensor, prev: torch.Tensor | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        slice_signals(prob, prev)


# --- exits ---------------------------------------------------------------------------------------

RULE = ExitRule(tau=0.95, uncertain_max=0.002, empty_max_prob=0.1)


def signals_of(max_prob: float, uncertain_fraction: float, agreement: float) -> SliceSignals:
    return SliceSignals(
        max_prob=torch.tensor([max_prob], dtype=torch.float64),
        uncertain_fraction=torch.tensor([uncertain_fraction], dtype=torch.float64),
        agreement=torch.tensor([agreement], dtype=torch.float64),
    )


@pytest.mark.parametrize(
    ("signals", "rule", "depth", "stop"),
    [
        pytest.param(signals_of(0.05, 0.0, math.nan), RULE, 1, True, id="empty-exits-at-L1"),
        pytest.param(signals_of(0.05, 0.0, 1.0), RULE, 3, True, id="empty-exits-deeper"),
        pytest.param(signals_of(0.1, 0.0, math.nan), RULE, 1, False, id="empty-bound-is-strict"),
        pytest.param(signals_of(0.05, 0.0, math.nan), ExitRule(0.95, 0.002, 0.0), 1, False, id="empty-exit-off"),
        pytest.param(
            signals_of(0.05, 0.0, math.nan), ExitRule(0.95, 0.002, 0.1, min_depth=2), 1, False, id="min-depth"
        ),
        pytest.param(signals_of(0.99, 0.0, math.nan), RULE, 1, False, id="L1-never-by-agreement"),
        pytest.param(signals_of(0.99, 0.001, 0.96), RULE, 2, True, id="agreement-exit"),
        pytest.param(signals_of(0.99, 0.002, 0.95), RULE, 2, True, id="agreement-bounds-inclusive"),
        pytest.param(signals_of(0.99, 0.001, 0.94), RULE, 2, False, id="agreement-below-tau"),
        pytest.param(signals_of(0.99, 0.01, 1.0), RULE, 3, False, id="uncertainty-blocks-exit"),
        pytest.param(signals_of(0.99, 0.0, math.nan), RULE, 2, False, id="nan-agreement-never-settles"),
        pytest.param(signals_of(0.99, 0.0, 1.0), ExitRule.NEVER, 3, False, id="never-by-agreement"),
        pytest.param(signals_of(0.99, 0.5, 0.0), RULE, 4, True, id="max-depth-L4"),
        pytest.param(signals_of(0.99, 0.5, 0.0), ExitRule(0.95, 0.002, 0.1, max_depth=3), 3, True, id="max-depth-L3"),
        pytest.param(signals_of(0.99, 0.5, 0.0), ExitRule(0.95, 0.002, 0.1, max_depth=1), 1, True, id="max-depth-L1"),
    ],
)
def test_exit_branches(signals: SliceSignals, rule: ExitRule, depth: int, stop: bool) -> None:
    decision = exits(signals, rule, depth)
    assert decision.dtype == torch.bool
    assert decision.tolist() == [stop]


def test_exits_decides_per_slice() -> None:
    signals = SliceSignals(
        max_prob=torch.tensor([0.05, 0.99, 0.99], dtype=torch.float64),
        uncertain_fraction=torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64),
        agreement=torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64),
    )
    assert exits(signals, RULE, 2).tolist() == [True, True, False]


@pytest.mark.parametrize("depth", [0, 5, 2.0, True])
def test_exits_rejects_bad_depth(depth: object) -> None:
    with pytest.raises(ValueError, match="depth"):
        exits(signals_of(0.5, 0.0, 1.0), RULE, depth)  # type: ignore[arg-type]


# --- ExitRule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": -0.1}, "tau"),
        ({"tau": 1.5}, "tau"),
        ({"tau": math.nan}, "tau"),
        ({"uncertain_max": 1.1}, "uncertain_max"),
        ({"empty_max_prob": -0.01}, "empty_max_prob"),
        ({"max_depth": 5}, "max_depth"),
        ({"min_depth": 0}, "min_depth"),
        ({"max_depth": 2.0}, "max_depth"),
        ({"min_depth": 3, "max_depth": 2}, "above"),
    ],
)
def test_rule_rejects_bad_fields(kwargs: dict, message: str) -> None:
    fields = {"tau": 0.9, "uncertain_max": 0.01, "empty_max_prob": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        ExitRule(**fields)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        pytest.param(ExitRule(tau=0.9, uncertain_max=1.0, empty_max_prob=0.0), True, id="agreement"),
        pytest.param(ExitRule(tau=TAU_OFF, uncertain_max=0.0, empty_max_prob=0.2), False, id="organ-absent-only"),
        pytest.param(ExitRule.NEVER, False, id="never"),
        pytest.param(ExitRule(tau=0.9, uncertain_max=1.0, empty_max_prob=0.0, max_depth=1), False, id="one-head"),
        pytest.param(ExitRule(tau=0.9, uncertain_max=1.0, empty_max_prob=0.0, min_depth=4), False, id="min-is-max"),
    ],
)
def test_exits_by_agreement(rule: ExitRule, expected: bool) -> None:
    assert rule.exits_by_agreement is expected


@pytest.mark.parametrize(
    "rule",
    [
        ExitRule.NEVER,
        ExitRule.never(max_depth=3),
        RULE,
        ExitRule(tau=0.1 + 0.2, uncertain_max=1 / 3, empty_max_prob=0.0005, min_depth=2, max_depth=3),
    ],
)
def test_tags_round_trip(rule: ExitRule) -> None:
    tags = rule.to_tags()
    assert all(isinstance(value, str) for value in tags.values())
    assert {"exit_tau", "exit_uncertain_max", "exit_empty_max_prob", "exit_max_depth"} <= set(tags)
    assert ExitRule.from_tags({**tags, "other": "x"}) == rule


def test_from_tags_defaults_min_depth() -> None:
    tags = RULE.to_tags()
    del tags["exit_min_depth"]
    assert ExitRule.from_tags(tags) == RULE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"exit_tau": None}, "missing: exit_tau"),
        ({"exit_max_depth": None, "exit_uncertain_max": None}, "missing: exit_uncertain_max, exit_max_depth"),
        ({"exit_tau": "high"}, "exit_tau is not a number"),
        ({"exit_max_depth": "4.5"}, "exit_max_depth is not an integer"),
        ({"exit_min_depth": ""}, "exit_min_depth is not an integer"),
        ({"exit_empty_max_prob": "2"}, "empty_max_prob must be in"),
        ({"exit_max_depth": "7"}, "max_depth must be"),
    ],
)
def test_from_tags_rejects_bad_tags(change: dict, message: str) -> None:
    tags = RULE.to_tags()
    for key, value in change.items():
        if value is None:
            del tags[key]
        else:
            tags[key] = value
    with pytest.raises(ValueError, match=message) as caught:
        ExitRule.from_tags(tags)
    assert "\n" not in str(caught.value)


def test_describe() -> None:
    assert ExitRule.NEVER.describe() == "no early exit: every slice runs to L4"
    text = RULE.describe()
    assert "p < 0.1 exit at L1" in text
    assert "mask Dice >= 0.95" in text
    assert "0.2% of pixels" in text
    assert text.endswith("all stop at L4")
    assert not ExitRule.NEVER.exits_early
    assert RULE.exits_early


# --- simulate ------------------------------------------------------------------------------------


def easy_case(depth: int, weight: np.ndarray | None = None) -> CaseHeads:
    """4 slices of 8 x 8: two organ-free, two with a 4 x 4 organ.

    Head L1 is perfect on the organ-free slices and misses 2 organ pixels of each organ slice;
    heads L2..L``depth`` are perfect everywhere; no head has an uncertain pixel.
    """
    truth = np.stack([EMPTY, square(), EMPTY, square()])
    rough = truth.copy()
    rough[:, 2, 2:4] = False  # L1 misses 2 of the 16 organ pixels: agreement with L2 = 28/30
    probs = np.stack([confident(rough)] + [confident(truth)] * (depth - 1))
    return CaseHeads(probs=probs, truth=truth, slice_weight=weight)


def run_head_by_head(case: CaseHeads, rule: ExitRule) -> np.ndarray:
    """Exit depths as adaptive inference finds them: deepen only the slices that continue."""
    probs = torch.from_numpy(case.probs)
    active = torch.arange(probs.shape[1])
    exit_depth = torch.zeros(probs.shape[1], dtype=torch.int64)
    for depth in range(1, rule.max_depth + 1):
        prev = probs[depth - 2, active] if depth >= 2 else None
        stop = exits(slice_signals(probs[depth - 1, active], prev), rule, depth)
        exit_depth[active[stop]] = depth
        active = active[~stop]
        if active.numel() == 0:
            break
    return exit_depth.numpy()


@pytest.mark.parametrize(
    "rule",
    [ExitRule.NEVER, RULE, ExitRule(0.6, 0.05, 0.3), ExitRule(0.8, 1.0, 0.0, min_depth=2, max_depth=3)],
    ids=["never", "strict", "loose", "L2-L3"],
)
def test_simulate_matches_exits_head_by_head(rule: ExitRule) -> None:
    generator = np.random.default_rng(0)
    truth = np.zeros((12, 16, 16), dtype=bool)
    truth[3:9, 4:12, 4:12] = True
    noise = [0.6, 0.3, 0.15, 0.05]
    probs = np.stack([np.clip(truth + generator.normal(0, s, truth.shape), 0, 1) for s in noise]).astype(np.float32)
    case = CaseHeads(probs=probs, truth=truth)
    result = simulate([case], rule, GFLOPS)
    np.testing.assert_array_equal(result.exit_depths[0], run_head_by_head(case, rule))


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_simulate_known_answer(depth: int) -> None:
    rule = ExitRule(tau=0.9, uncertain_max=0.0, empty_max_prob=0.05, max_depth=depth)
    result = simulate([easy_case(depth)], rule, GFLOPS)
    np.testing.assert_array_equal(result.exit_depths[0], [1, 2, 1, 2])
    assert result.dice.tolist() == [1.0]
    assert result.mean_gflop == pytest.approx((1 + 2 + 1 + 2) / 4)
    assert result.depth_histogram() == [2, 2] + [0] * (depth - 2)


def test_simulate_volume_dice_pools_slices() -> None:
    # the L1-only rule keeps L1's masks: 2 x 14 of 2 x 16 organ pixels -> Dice 56 / 60
    result = simulate([easy_case(4)], ExitRule.never(max_depth=1), GFLOPS)
    assert result.dice.tolist() == pytest.approx([56 / 60])
    assert result.mean_gflop == 1.0


@pytest.mark.parametrize(
    ("weight", "gflop", "dice"),
    [
        pytest.param(None, (1 + 4) / 2, 8 / (4 + 2 + 4), id="unweighted"),
        pytest.param([3.0, 1.0], (3 * 1 + 4) / 4, 8 / (4 + 3 * 2 + 4), id="organ-free-x3"),
    ],
)
def test_slice_weights_change_cost_and_false_positives(weight: list | None, gflop: float, dice: float) -> None:
    """Slice 0 is organ-free with 2 false-positive pixels (it exits empty-confident at L1: max
    p 0.6 < 0.7); slice 1 has a 2 x 2 organ, found perfectly, and runs to L4."""
    truth = np.zeros((2, 4, 4), dtype=bool)
    truth[1, :2, :2] = True
    head = np.where(truth, 0.95, 0.0).astype(np.float32)
    head[0, 3, 2:] = 0.6
    case = CaseHeads(probs=np.stack([head] * 4), truth=truth, slice_weight=weight)
    result = simulate([case], ExitRule(tau=TAU_OFF, uncertain_max=0.0, empty_max_prob=0.7), GFLOPS)
    np.testing.assert_array_equal(result.exit_depths[0], [1, 4])
    assert result.mean_gflop == pytest.approx(gflop)
    assert result.gflop_per_slice.tolist() == pytest.approx([gflop])
    assert result.mean_dice == pytest.approx(dice)



@pytest.mark.parametrize(
    ("cases", "rule", "gflops", "message"),
    [
        ([], RULE, GFLOPS, "at least one case"),
        ([easy_case(3)], RULE, GFLOPS, "3 heads"),
        ([easy_case(4), easy_case(3)], ExitRule.never(3), GFLOPS, "same number of heads"),
        ([easy_case(4)], RULE, {1: 1.0, 2: 2.0, 3: 3.0}, r"depth\(s\) \[4\]"),
        ([easy_case(2)], ExitRule.never(2), {1: 1.0, 2: math.inf}, "finite"),
    ],
)
def test_simulate_rejects_bad_input(cases: list, rule: ExitRule, gflops: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate(cases, rule, gflops)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probs": np.zeros((5, 2, 4, 4), np.float32)}, "D in 1..4"),
        ({"probs": np.zeros((2, 2, 4, 4), np.int64)}, "floating"),
        ({"truth": np.zeros((3, 4, 4), bool)}, "truth shape"),
        ({"slice_weight": [1.0]}, r"must be \(2,\)"),
        ({"slice_weight": [1.0, 0.0]}, "positive"),
    ],
)
def test_case_heads_rejects_bad_arrays(kwargs: dict, message: str) -> None:
    fields = {"probs": np.zeros((2, 2, 4, 4), np.float32), "truth": np.zeros((2, 4, 4), bool), **kwargs}
    with pytest.raises(ValueError, match=message):
        CaseHeads(**fields)


# --- calibrate_exit_rule -------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_calibration_known_answer(depth: int) -> None:
    """Organ-free slices exit at L1 (empty rule), organ slices at L2 (agreement 28/30 with L1)."""
    gflops = {d: GFLOPS[d] for d in range(1, depth + 1)}
    cases = [easy_case(depth)] * MIN_BOOTSTRAP_CASES
    calibration = calibrate_exit_rule(cases, gflops, max_dice_drop=0.0)
    assert calibration.dice == 1.0
    assert calibration.reference_dice == 1.0
    assert calibration.gflop == pytest.approx(1.5)
    assert calibration.reference_gflop == float(depth)
    assert calibration.speedup == pytest.approx(depth / 1.5)
    # the strictest rule of the grid with that cost
    expected_tau = 0.93 if depth > 2 else TAU_OFF  # L2 is the last head when depth == 2
    assert calibration.rule == ExitRule(tau=expected_tau, uncertain_max=0.0, empty_max_prob=0.05, max_depth=depth)
    n = 2 * MIN_BOOTSTRAP_CASES
    assert simulate(cases, calibration.rule, gflops).depth_histogram() == [n, n] + [0] * (depth - 2)
    assert f"1.0000 vs 1.0000 at L{depth}" in calibration.reason
    assert "with 95% confidence (mean drop 0.000, 95th percentile 0.000)" in calibration.reason
    assert f"{depth / 1.5:.2f}x fewer GFLOP/slice" in calibration.reason
    assert f"{MIN_BOOTSTRAP_CASES} validation cases" in calibration.reason


@pytest.mark.parametrize("depth", [3, 4])
def test_too_few_cases_allow_only_the_organ_absent_exit(depth: int) -> None:
    """The same slices on 2 cases: agreement exits are not trusted, organ-free slices still stop at L1."""
    gflops = {d: GFLOPS[d] for d in range(1, depth + 1)}
    cases = [easy_case(depth)] * 2
    calibration = calibrate_exit_rule(cases, gflops, max_dice_drop=0.0)
    assert calibration.rule == ExitRule(tau=TAU_OFF, uncertain_max=0.0, empty_max_prob=0.05, max_depth=depth)
    assert simulate(cases, calibration.rule, gflops).depth_histogram() == [4] + [0] * (depth - 2) + [4]
    assert calibration.gflop == pytest.approx((1 + depth) / 2) and calibration.dice == 1.0
    assert "2 validation cases (8 slices, 63 rules); fewer than 5, so only confidently empty slices" in calibration.reason
    assert "confidence" not in calibration.reason
    # a lower bar for the bootstrap, and agreement exits come back
    assert calibrate_exit_rule(cases, gflops, max_dice_drop=0.0, min_cases=2).rule.tau == 0.93


def test_too_few_cases_refuse_an_empty_exit_that_loses_a_case() -> None:
    """A slice whose organ L1 misses entirely (all p = 0): the empty exit would lose it; refused."""
    truth = square()[None]
    probs = np.stack([np.zeros_like(truth, dtype=np.float32)] + [confident(truth)] * 3)
    calibration = calibrate_exit_rule([CaseHeads(probs=probs, truth=truth), easy_case(4)], GFLOPS, 0.005)
    assert calibration.rule == ExitRule(tau=TAU_OFF, uncertain_max=0.0, empty_max_prob=0.0)
    assert "every slice runs to L4" in calibration.reason


def costly_case() -> CaseHeads:
    """One slice, 25 organ pixels. L1 = L2 miss one pixel (volume Dice 48/49, 0.0204 below L3 = L4,
    which are perfect): every rule that exits by agreement stops at L2."""
    truth = square(size=8, top=1, left=1, side=5)[None]
    rough = truth.copy()
    rough[0, 1, 1] = False
    probs = np.stack([confident(rough), confident(rough), confident(truth), confident(truth)])
    return CaseHeads(probs=probs, truth=truth)


def perfect_case() -> CaseHeads:
    """The slice of :func:`costly_case` with every head perfect: exiting at L2 costs nothing."""
    truth = square(size=8, top=1, left=1, side=5)[None]
    return CaseHeads(probs=np.stack([confident(truth)] * 4), truth=truth)


@pytest.mark.parametrize(
    ("max_dice_drop", "gflop", "dice"),
    [
        pytest.param(0.01, 4.0, 1.0, id="drop-0.01-rejects"),
        pytest.param(0.03, 2.0, 48 / 49, id="drop-0.03-accepts"),
    ],
)
def test_calibration_respects_max_dice_drop(max_dice_drop: float, gflop: float, dice: float) -> None:
    calibration = calibrate_exit_rule([costly_case()] * MIN_BOOTSTRAP_CASES, GFLOPS, max_dice_drop)
    assert calibration.gflop == gflop
    assert calibration.dice == pytest.approx(dice)
    assert calibration.reference_dice == 1.0
    if gflop == 4.0:
        assert calibration.rule == ExitRule.NEVER
        assert calibration.speedup == 1.0
        assert "every slice runs to L4" in calibration.reason
    else:
        assert calibration.rule.tau == 0.99
        assert calibration.speedup == 2.0


def test_calibration_refuses_a_rule_within_the_drop_only_on_average() -> None:
    """Half the cases lose 0.0204 by exiting at L2, half nothing: mean drop 0.0102 is within 0.015,
    but with 95% confidence it is not (its 95th percentile is 0.017), so no agreement exit."""
    cases = [costly_case(), perfect_case()] * 3
    calibration = calibrate_exit_rule(cases, GFLOPS, 0.015)
    l2 = simulate(cases, ExitRule(tau=0.99, uncertain_max=0.0, empty_max_prob=0.0), GFLOPS)
    assert calibration.reference_dice - l2.mean_dice == pytest.approx(1 / 49 / 2)  # the premise: within on average
    mean, upper = bootstrap_dice_drop(np.stack([np.ones(6), l2.dice]), reference=0)
    assert mean[1] == pytest.approx(1 / 49 / 2) and upper[1] > 0.015
    assert calibration.rule == ExitRule.NEVER and calibration.gflop == 4.0
    # a looser drop takes it, and the reason quotes that interval
    looser = calibrate_exit_rule(cases, GFLOPS, 0.025)
    assert looser.rule.tau <= 1.0 and looser.gflop == 2.0  # every slice stops at L2
    assert f"(mean drop {mean[1]:.3f}, 95th percentile {upper[1]:.3f})" in looser.reason


@pytest.mark.parametrize("max_dice_drop", [0.0, 0.005, 0.02, 0.1])
def test_calibration_bound_holds_on_noisy_heads(max_dice_drop: float) -> None:
    generator = np.random.default_rng(1)
    cases = []
    for index in range(6):
        truth = np.zeros((6, 16, 16), dtype=bool)
        truth[1 + index % 3 : 5, 3:12, 4:10] = True
        noise = [0.5, 0.35, 0.2, 0.1]
        probs = np.stack([np.clip(truth + generator.normal(0, s, truth.shape), 0, 1) for s in noise])
        cases.append(CaseHeads(probs=probs.astype(np.float32), truth=truth))
    grid = ExitGrid(taus=(0.5, 0.8, 0.9, 0.95, 1.01), uncertain_maxes=(0.01, 0.1, 1.0), empty_max_probs=(0.0, 0.5))
    calibration = calibrate_exit_rule(cases, GFLOPS, max_dice_drop, grid=grid)
    assert calibration.gflop <= calibration.reference_gflop
    again = calibrate_exit_rule(cases, GFLOPS, max_dice_drop, grid=grid)
    assert again == calibration
    check = simulate(cases, calibration.rule, GFLOPS)
    assert (check.mean_dice, check.mean_gflop) == (calibration.dice, calibration.gflop)
    reference = simulate(cases, ExitRule.NEVER, GFLOPS)
    others = [simulate(cases, rule, GFLOPS) for rule in grid.rules()]
    _, upper = bootstrap_dice_drop(np.stack([reference.dice, *(o.dice for o in others)]), reference=0)
    chosen = check.dice if calibration.rule != ExitRule.NEVER else reference.dice
    assert bootstrap_dice_drop(np.stack([reference.dice, chosen]), reference=0)[1][1] <= max_dice_drop + 1e-12
    for other, bound in zip(others, upper[1:], strict=True):  # nothing admissible is cheaper
        if bound <= max_dice_drop:
            assert other.mean_gflop >= calibration.gflop


def test_calibration_without_cases_never_exits() -> None:
    calibration = calibrate_exit_rule([], GFLOPS, 0.005)
    assert calibration.rule == ExitRule.NEVER
    assert calibration.speedup == 1.0
    assert calibration.gflop == calibration.reference_gflop == 4.0
    assert math.isnan(calibration.dice)
    assert "no validation case" in calibration.reason


@pytest.mark.parametrize("max_dice_drop", [-0.01, 1.5, math.nan, "0.01", True])
def test_calibration_rejects_bad_drop(max_dice_drop: object) -> None:
    with pytest.raises(ValueError, match="max_dice_drop"):
        calibrate_exit_rule([easy_case(4)], GFLOPS, max_dice_drop)  # type: ignore[arg-type]


def test_default_grid() -> None:
    assert len(DEFAULT_GRID) == len(list(DEFAULT_GRID.rules())) == 756
    assert TAU_OFF in DEFAULT_GRID.taus  # "never by agreement" is a candidate
    assert 0.0 in DEFAULT_GRID.empty_max_probs  # so is "no empty exit"
    assert 1.0 in DEFAULT_GRID.uncertain_maxes  # and "no uncertainty condition"
