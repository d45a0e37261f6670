"""Per-volume scores of a test case from constructed heads with known answers (no Ray, no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anunet_platform.calibration import ValidationCase
from anunet_platform.compare import read_case_scores, score_case
from anunet_platform.compare.evaluation import write_case_scores


def case(heads: np.ndarray, truth: np.ndarray, slice_index, spacing=(2.0, 2.0, 5.0)) -> ValidationCase:
    return ValidationCase(case_id="c1", heads=heads.astype(np.float16), truth=truth, voxel_ml=0.02,
                          slice_weight=np.ones(len(truth)), slice_index=np.asarray(slice_index), spacing_mm=spacing)


def cube(k: int, size: int, rows: slice, cols: slice, on=range(0, 99)) -> np.ndarray:
    volume = np.zeros((k, size, size), dtype=bool)
    for z in range(k):
        if z in on:
            volume[z, rows, cols] = True
    return volume


def test_a_perfect_head_and_a_shifted_one() -> None:
    truth = cube(4, 16, slice(4, 8), slice(4, 8))
    shifted = cube(4, 16, slice(4, 8), slice(5, 9))  # one column over: 2 mm
    heads = np.stack([np.where(shifted, 0.9, 0.1), np.where(truth, 0.9, 0.1)])
    scores = score_case(case(heads, truth, [0, 1, 2, 3]), "unetpp", 1, depths=(1, 2))
    assert [(s.depth, s.arch, s.seed) for s in scores] == [(1, "unetpp", 1), (2, "unetpp", 1)]
    perfect = scores[1]
    assert (perfect.dice, perfect.iou, perfect.precision, perfect.recall) == (1.0, 1.0, 1.0, 1.0)
    assert (perfect.hd95_mm, perfect.assd_mm) == (0.0, 0.0)
    off = scores[0]
    assert off.dice == pytest.approx(0.75) and off.iou == pytest.approx(0.6)  # 48 of 64 voxels shared
    assert off.precision == pytest.approx(0.75) and off.recall == pytest.approx(0.75)
    assert off.hd95_mm == pytest.approx(2.0)  # column spacing, not row or slice
    assert (off.organ_slices, off.slices) == (4, 4)


def test_the_volume_is_rebuilt_at_the_kept_slice_indices() -> None:
    # kept slices 0, 1 and 7 (ingest left 2..6 out): a false positive on slice 7 lies 6 slices (30 mm) from the organ
    truth = cube(3, 16, slice(4, 8), slice(4, 8), on=(0, 1))
    pred = truth.copy()
    pred[2, 4:8, 4:8] = True
    s = score_case(case(np.where(pred, 0.9, 0.1)[None], truth, [0, 1, 7]), "unet", 0, depths=(4,))[0]
    assert s.depth == 4 and s.dice == pytest.approx(2 * 32 / (48 + 32))
    assert s.hd95_mm == pytest.approx(30.0)


def test_empty_prediction_is_an_infinite_distance_and_rows_round_trip(tmp_path) -> None:
    truth = cube(2, 16, slice(4, 8), slice(4, 8))
    s = score_case(case(np.full((1, 2, 16, 16), 0.2), truth, [3, 4]), "attunet", 0, depths=(4,))[0]
    assert s.dice == 0.0 and math.isinf(s.hd95_mm) and math.isinf(s.assd_mm)
    assert score_case(case(np.full((1, 2, 16, 16), 0.5), truth, [3, 4]), "a", 0, (4,))[0].dice == 0.0  # p > 0.5 only
    path = write_case_scores([s], tmp_path / "scores.csv")
    assert read_case_scores(path) == [s]


def test_a_case_scored_without_its_geometry_is_refused() -> None:
    bare = ValidationCase(case_id="c", heads=np.zeros((1, 1, 16, 16), np.float16), truth=np.zeros((1, 16, 16), bool),
                          voxel_ml=1.0, slice_weight=np.ones(1))
    with pytest.raises(ValueError, match="case c: scored without its slice indices and spacing"):
        score_case(bare, "unet", 0, (4,))
