"""Tables 2-6 and Fig. 13 from per-case scores with known answers (pure, no Ray)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from anunet_platform.compare import CaseScore, depth_rows, format_markdown, method_rows
from anunet_platform.compare.tables import mean_std, plot_fig13, write_comparison_csv, write_table6_csv


def score(arch: str, seed: int, case: str, dice: float, depth: int = 4, hd95: float = 5.0) -> CaseScore:
    return CaseScore(arch=arch, seed=seed, depth=depth, case_id=case, dice=dice, iou=dice / (2 - dice),
                     precision=dice, recall=1.0, hd95_mm=hd95, assd_mm=hd95 / 4, organ_slices=10, slices=12)


SCORES = [
    score("unet", 0, "a", 0.80), score("unet", 0, "b", 0.90), score("unet", 1, "a", 0.70), score("unet", 1, "b", 0.60,
                                                                                                 hd95=math.inf),
    score("anunet", 0, "a", 0.95), score("anunet", 0, "b", 0.85),
    score("anunet", 0, "a", 0.50, depth=1), score("anunet", 0, "b", 0.40, depth=1),
]


def test_mean_std_over_finite_values() -> None:
    assert mean_std([1.0, 3.0, math.inf]) == (2.0, 1.0, 1)
    mean, std, infinite = mean_std([math.inf])
    assert math.isnan(mean) and math.isnan(std) and infinite == 1


def test_one_row_per_method_over_seeds_and_cases_at_full_depth() -> None:
    rows = method_rows(SCORES, ("unet", "attunet", "anunet"), params={"unet": 7_766_369, "anunet": 8_950_594},
                       errors={"attunet": "seed 0: KeyError: 'x'"})
    assert [r.arch for r in rows] == ["unet", "attunet", "anunet"]
    unet, attunet, anunet = rows
    assert (unet.method, unet.n, unet.seeds, unet.cases, unet.depth) == ("U-Net", 4, 2, 2, 4)
    assert unet.dice_mean == pytest.approx(0.75) and unet.dice_std == pytest.approx(np.std([0.8, 0.9, 0.7, 0.6]))
    assert unet.recall_mean == 1.0 and unet.recall_std == 0.0
    assert (unet.hd95_mm_mean, unet.hd95_inf) == (5.0, 1)  # the infinite HD95 is counted, not averaged
    assert unet.params == 7_766_369 and unet.error is None
    assert anunet.dice_mean == pytest.approx(0.90)  # L1's scores are not Table 2's
    assert (attunet.n, attunet.error) == (0, "seed 0: KeyError: 'x'") and math.isnan(attunet.dice_mean)


def test_markdown_has_the_papers_columns_bold_best_and_failed_rows() -> None:
    rows = method_rows(SCORES, ("unet", "attunet", "anunet"), errors={"attunet": "boom"})
    text = format_markdown("t", rows, {})
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Method", "IoU (%)", "Dice (%)", "Precision", "Recall", "HD95 (mm)", "ASSD (mm)", "Params (M)", "n"]
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert "**90.00 ± 5.00**" in lines["ANU-Net"]  # Dice %, the best
    assert "75.00 ± 11.18" in lines["U-Net"] and "**75.00" not in lines["U-Net"]
    assert "5.00 ± 0.00 (1 inf)" in lines["U-Net"]
    assert "failed: boom" in lines["Attention U-Net"]


def test_table6_rows_and_files(tmp_path) -> None:
    rows = depth_rows(SCORES, "anunet", seconds={1: 2.0, 4: 8.0}, params={1: 103_841, 4: 8_950_594}, slices=2000,
                      timed_slices=64)
    assert [(r.depth, r.params, r.seconds) for r in rows] == [(1, 103_841, 2.0), (4, 8_950_594, 8.0)]
    assert rows[0].dice_mean == pytest.approx(45.0) and rows[1].dice_mean == pytest.approx(90.0)
    text = format_markdown("t", method_rows(SCORES, ("anunet",)), {"anunet": rows})
    assert "## Table 6: pruned ANU-Net" in text and "| L1 | 2.00 | 0.1038 | 45.00 ± 5.00 |" in text

    path = write_table6_csv(rows, tmp_path / "table6.csv")
    with path.open() as handle:
        read = list(csv.DictReader(handle))
    assert [int(r["depth"]) for r in read] == [1, 4] and float(read[1]["dice_mean"]) == pytest.approx(90.0)
    path = write_comparison_csv(method_rows(SCORES, ("unet", "anunet")), tmp_path / "comparison.csv")
    with path.open() as handle:
        read = list(csv.DictReader(handle))
    assert [r["method"] for r in read] == ["U-Net", "ANU-Net"]
    assert float(read[0]["dice_mean"]) == pytest.approx(0.75) and read[0]["hd95_inf"] == "1"

    chart = plot_fig13({"anunet": rows}, tmp_path / "fig13.png", "t")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5_000
