"""Depth selection: a pure function from per-depth metrics and a policy to a depth."""

from __future__ import annotations

import doctest
import math
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

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


def cands(dice: dict[int, float] = DICE, latency: dict[int, float] = LATENCY) -> list[DepthCandidate]:
    return [DepthCandidate(d, dice[d], latency[d], params=1000 * d) for d in dice]


def test_module_is_pure() -> None:
    # no Ray, no MLflow on import (the segment driver and tests import it cheaply)
    source = Path(selection.__file__).read_text()
    assert "import ray" not in source and "import mlflow" not in source


def test_doctests() -> None:
    assert doctest.testmod(selection).failed == 0


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
def test_default_policy_picks_smallest_depth_within_the_drop(dice: dict, drop: float, expected: int) -> None:
    choice = choose_depth(cands(dice, {d: 1.0 for d in dice}), DepthPolicy(max_dice_drop=drop))
    assert isinstance(choice, DepthChoice) and choice.depth == expected
    assert choice.reason.startswith(f"L{expected}: smallest depth within {drop:.3f} of the best validation Dice")
    assert "\n" not in choice.reason


def test_default_reason_names_best_and_chosen() -> None:
    choice = choose_depth(cands(), DepthPolicy())
    assert choice == DepthChoice(
        2, "L2: smallest depth within 0.010 of the best validation Dice (L4 0.9061; L2 0.9010)"
    )
    assert choose_depth(cands(), DepthPolicy(max_dice_drop=0)).reason.endswith("(L4 0.9061)")


def test_order_of_candidates_does_not_matter() -> None:
    base = cands()
    for seed in range(5):
        shuffled = base[:]
        random.Random(seed).shuffle(shuffled)
        for policy in (DepthPolicy(), DepthPolicy(latency_budget_ms=7.0), DepthPolicy(max_dice_drop=0.0)):
            assert choose_depth(shuffled, policy) == choose_depth(base, policy)


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
    # max_dice_drop plays no part under a budget
    assert choose_depth(cands(dice), DepthPolicy(latency_budget_ms=6.0, max_dice_drop=1.0)).depth == 2


def test_latency_budget_too_small_names_the_fastest_depth() -> None:
    with pytest.raises(ValueError, match=r"no depth fits the latency budget of 1 ms/slice: the fastest, L1, takes 2\.500 ms/slice"):
        choose_depth(cands(), DepthPolicy(latency_budget_ms=1.0))


def test_latency_budget_needs_latencies() -> None:
    latency = {**LATENCY, 3: math.nan}
    with pytest.raises(ValueError, match="latency_ms_per_slice.*L3 nan"):
        choose_depth(cands(DICE, latency), DepthPolicy(latency_budget_ms=5.0))
    # the default policy does not read latencies
    assert choose_depth(cands(DICE, latency), DepthPolicy()).depth == 2


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_override_returns_that_depth(depth: int) -> None:
    choice = choose_depth(cands(), DepthPolicy(depth=depth))
    assert choice.depth == depth
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
    ],
)
def test_bad_policy_values_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DepthPolicy(**kwargs)


def test_policy_accepts_numpy_ints_and_normalises() -> None:
    np = pytest.importorskip("numpy")
    policy = DepthPolicy(depth=np.int64(2), max_dice_drop=0, latency_budget_ms=3)
    assert policy.depth == 2 and type(policy.depth) is int
    assert isinstance(policy.max_dice_drop, float) and isinstance(policy.latency_budget_ms, float)


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({}, DepthPolicy()),
        ({"depth": "auto"}, DepthPolicy()),
        ({"depth": "AUTO", "max_dice_drop": 0.02}, DepthPolicy(max_dice_drop=0.02)),
        ({"depth": "3"}, DepthPolicy(depth=3)),
        ({"depth": 2, "latency_budget_ms": 5}, DepthPolicy(depth=2, latency_budget_ms=5.0)),
        ({"depth": None, "latency_budget_ms": 5}, DepthPolicy(latency_budget_ms=5.0)),
    ],
)
def test_policy_from_flags(flags: dict, expected: DepthPolicy) -> None:
    assert DepthPolicy.from_flags(**flags) == expected


@pytest.mark.parametrize("depth,match", [("deep", "'auto' or one of 1..4, got 'deep'"), ("7", "one of 1..4, got 7")])
def test_policy_from_bad_flags(depth: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DepthPolicy.from_flags(depth)


def test_policy_describe() -> None:
    assert DepthPolicy().describe() == "smallest depth within 0.010 of the best validation Dice"
    assert DepthPolicy(latency_budget_ms=5).describe() == "best validation Dice within 5 ms/slice"
    assert DepthPolicy(depth=2).describe() == "fixed depth L2"


@pytest.mark.parametrize("policy", [DepthPolicy(), DepthPolicy(latency_budget_ms=100.0)])
@pytest.mark.parametrize("bad", [math.nan, 1.2, -0.1, math.inf])
def test_bad_validation_dice_is_refused(policy: DepthPolicy, bad: float) -> None:
    dice = {**DICE, 2: bad}
    with pytest.raises(ValueError, match=rf"validation Dice must be a number in \[0, 1\].*L2 {bad!r}"):
        choose_depth(cands(dice), policy)


@pytest.mark.parametrize("policy", [DepthPolicy(), DepthPolicy(depth=1), DepthPolicy(latency_budget_ms=5.0)])
def test_no_candidates_is_refused(policy: DepthPolicy) -> None:
    with pytest.raises(ValueError, match="no depth candidates"):
        choose_depth([], policy)


@pytest.mark.parametrize("policy", [DepthPolicy(), DepthPolicy(depth=2)])
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


def test_choose_depth_default_policy_is_the_default() -> None:
    assert choose_depth(cands()) == choose_depth(cands(), DepthPolicy())


# ----------------------------------------------------------------------------------------------
# From the registry
# ----------------------------------------------------------------------------------------------


def test_candidates_from_registry_depths() -> None:
    from anunet_platform.registry import (
        RegisteredDepth,  # the real type, tags as MLflow stores them
    )

    depths = {
        d: RegisteredDepth(
            name=f"anunet-liver-ct-L{d}", version=str(d), depth=d,
            tags={"val_dice": str(DICE[d]), "latency_ms_per_slice": f"{LATENCY[d]:.4f}", "params": str(1000 * d)},
        )
        for d in (4, 2, 3, 1)
    }
    out = candidates_from_registry(depths)
    assert out == cands()
    assert choose_depth(out, DepthPolicy()).depth == 2


def test_candidates_from_registry_missing_tag_is_nan_then_refused() -> None:
    entry = SimpleNamespace(depth=1, val_dice=math.nan, latency_ms_per_slice=1.0, params=0)
    out = candidates_from_registry({1: entry})
    assert math.isnan(out[0].val_dice)
    with pytest.raises(ValueError, match="missing val_dice tag"):
        choose_depth(out, DepthPolicy())


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
