"""The tuning report: pure functions over trial rows (no Ray)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from anunet_platform.tune.report import (
    COMPLETED,
    ERRORED,
    STOPPED,
    TrialRow,
    TuneReport,
    best_trial,
    compare_to_default,
    format_summary,
    format_trials_table,
    observed_concurrency,
    plot_dice_map,
    write_trials_csv,
)
from PIL import Image


def row(trial_id: str, history: tuple[float, ...], *, alpha=0.3, gamma=1.0, lr=1e-3, max_epochs=4, default=False, error=None) -> TrialRow:
    best = {d: (max(history) - 0.1 * (4 - d) if history else math.nan) for d in (1, 2, 3, 4)}
    return TrialRow(trial_id, alpha, gamma, lr, history, best, max_epochs, error=error, is_default=default)


ROWS = [
    row("t0", (0.50, 0.60, 0.70, 0.72), alpha=0.5, gamma=2.0, default=True),
    row("t1", (0.55, 0.66, 0.80, 0.78), alpha=0.7, gamma=0.5),  # best: 0.80 at epoch 3
    row("t2", (0.40,), alpha=0.1, gamma=4.0),  # stopped by ASHA after 1 epoch
    row("t3", (), alpha=0.9, gamma=3.0, error="worker died"),
]


def test_status_follows_epochs_and_errors() -> None:
    assert [r.status for r in ROWS] == [COMPLETED, COMPLETED, STOPPED, ERRORED]
    assert [r.epochs for r in ROWS] == [4, 4, 1, 0]
    assert math.isnan(ROWS[3].score) and ROWS[1].score == 0.80


def test_best_trial_is_the_highest_dice_at_any_epoch_and_ties_go_to_the_earlier_id() -> None:
    assert best_trial(ROWS).trial_id == "t1"
    tie = [row("b", (0.9,)), row("a", (0.9,))]
    assert best_trial(tie).trial_id == "a"


def test_best_trial_without_any_dice_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no trial reported a validation Dice; first error: worker died"):
        best_trial([ROWS[3]])


def test_comparison_uses_the_same_epoch_budget() -> None:
    full = compare_to_default(ROWS, ROWS[1])
    assert (full.epochs, full.best_dice, full.default_dice) == (4, 0.80, 0.72)
    assert full.gain == pytest.approx(0.08)
    # the default stopped by ASHA after 2 epochs: the best is judged on its first 2 epochs too
    stopped_default = [row("d", (0.50, 0.61), alpha=0.5, gamma=2.0, default=True), ROWS[1]]
    early = compare_to_default(stopped_default, ROWS[1])
    assert (early.epochs, early.best_dice, early.default_dice) == (2, 0.66, 0.61)
    assert compare_to_default(ROWS[1:], ROWS[1]) is None  # no default trial, no comparison


@pytest.mark.parametrize(
    "intervals,expected",
    [
        ([], 0),
        ([(0, 10), (10, 20), (20, 30)], 1),  # back to back: never two at once
        ([(0, 10), (5, 15), (12, 20)], 2),
        ([(0, 100), (1, 2), (3, 4), (3.5, 5)], 3),
    ],
)
def test_observed_concurrency_is_the_peak_overlap(intervals, expected) -> None:
    assert observed_concurrency(intervals) == expected


def test_table_orders_by_dice_and_marks_best_default_and_stopped() -> None:
    table = format_trials_table(ROWS, best_trial(ROWS))
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "trial", "alpha", "gamma", "learning rate", "Dice L1", "Dice L2", "Dice L3", "Dice L4", "epochs", "status",
    ]
    body = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert [b[0] for b in body] == ["t1*", "t0 (default)", "t2", "t3"]
    assert body[0][1:4] == ["0.700", "0.500", "1.00e-03"] and body[0][7] == "0.8000" and body[0][4] == "0.5000"
    assert body[2][8] == "1/4 (stopped)" and body[2][9] == STOPPED
    assert body[3][7] == "-" and body[3][9] == "error: worker died"


def test_csv_keeps_unrounded_numbers(tmp_path: Path) -> None:
    write_trials_csv(ROWS, tmp_path / "trials.csv")
    lines = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [r["trial_id"] for r in lines] == ["t0", "t1", "t2", "t3"]
    assert float(lines[1]["best_val_dice_L4"]) == 0.80 and float(lines[1]["best_val_dice_L1"]) == pytest.approx(0.50)
    assert lines[2]["status"] == STOPPED and lines[2]["epochs"] == "1" and lines[0]["is_default"] == "True"


def test_summary_states_the_best_and_its_gain_over_the_default() -> None:
    best = best_trial(ROWS)
    text = format_summary(TuneReport(ROWS, best, compare_to_default(ROWS, best), max_concurrent_trials=2, observed_concurrency=2))
    assert "alpha 0.700, gamma 0.500" in text and "validation Dice 0.8000" in text
    assert "default (alpha 0.5, gamma 2, learning rate 1e-3): validation Dice 0.7200 in 4 epoch(s)" in text and "+0.0800" in text
    assert "4 (2 completed, 1 stopped by ASHA, 1 failed); at most 2 at once, 2 observed" in text


def test_dice_map_is_a_png(tmp_path: Path) -> None:
    path = plot_dice_map(ROWS, tmp_path / "map.png", title="t")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 450
        # not a blank canvas: the viridis markers put colour on it
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert len(colours) > 50
