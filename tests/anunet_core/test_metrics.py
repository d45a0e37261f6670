"""Tests for anunet_core.metrics: Eq. 9-12 overlap metrics and surface distances in mm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from anunet_core.metrics import (
    ConfusionCounts,
    average_surface_distance,
    confusion_counts,
    dice,
    hausdorff_distance_95,
    iou,
    overlap_metrics,
    precision,
    recall,
    surface_distances,
)

METRICS = {"dice": dice, "iou": iou, "precision": precision, "recall": recall}

# ----------------------------------------------------------------------------------------------
# Overlap metrics (Eq. 9-12)
# ----------------------------------------------------------------------------------------------

# Hand-worked 4x4 example. P = prediction, T = truth, (row, col):
#   P: 1 1 0 0      T: 1 1 0 0      TP (P=1, T=1): (0,0) (0,1) (1,1)  -> 3
#      0 1 1 0         0 1 0 0      FP (P=1, T=0): (1,2)              -> 1
#      0 0 0 0         0 0 0 1      FN (P=0, T=1): (2,3) (3,3)        -> 2
#      0 0 0 0         0 0 0 1
#   Dice = 2*3 / (2*3 + 1 + 2) = 6/9, IoU = 3 / (3 + 1 + 2) = 3/6, P = 3/4, R = 3/5
HAND_PRED = [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
HAND_TRUTH = [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]
HAND_EXPECTED = {"dice": 6 / 9, "iou": 3 / 6, "precision": 3 / 4, "recall": 3 / 5}


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: torch.tensor(a, dtype=torch.bool),
        lambda a: torch.tensor(a, dtype=torch.uint8),
        lambda a: torch.tensor(a, dtype=torch.int64),
        lambda a: torch.tensor(a, dtype=torch.float32),
        lambda a: torch.tensor(a, dtype=torch.float32) * 0.4 + 0.3,  # probabilities 0.3 / 0.7
    ],
    ids=["bool", "uint8", "int64", "float01", "probabilities"],
)
@pytest.mark.parametrize("layout", ["BHW", "B1HW"])
def test_hand_worked_example(convert, layout):
    pred, truth = convert(HAND_PRED)[None], convert(HAND_TRUTH)[None]  # (1, 4, 4)
    if layout == "B1HW":
        pred, truth = pred[:, None], truth[:, None]
    c = confusion_counts(pred, truth)
    assert (c.tp.tolist(), c.fp.tolist(), c.fn.tolist()) == ([3], [1], [2])
    assert c.tp.dtype == torch.int64
    for name, value in overlap_metrics(pred, truth).items():
        assert value.dtype == torch.float64 and value.shape == (1,)
        assert value.item() == pytest.approx(HAND_EXPECTED[name], abs=1e-15)


EMPTY = torch.zeros(4, 4)
BLOB = torch.zeros(4, 4)
BLOB[1:3, 1:3] = 1


@pytest.mark.parametrize(
    "pred, truth, expected",
    [
        (EMPTY, EMPTY, 1.0),  # nothing to find, nothing predicted: perfect
        (EMPTY, BLOB, 0.0),  # missed everything
        (BLOB, EMPTY, 0.0),  # predicted something that is not there
    ],
    ids=["both-empty", "pred-empty", "truth-empty"],
)
@pytest.mark.parametrize("per", ["slice", "volume"])
def test_empty_cases(pred, truth, expected, per):
    pred, truth = pred.expand(3, 1, 4, 4), truth.expand(3, 1, 4, 4)  # (B, 1, H, W), B = 3
    out = overlap_metrics(pred, truth, per=per)
    assert set(out) == set(METRICS)
    for name, value in out.items():
        assert value.shape == ((3,) if per == "slice" else ())
        assert not torch.isnan(value).any(), name
        assert torch.all(value == expected), (name, value)


def test_empty_slices_mixed_with_non_empty():
    pred = torch.stack([EMPTY, BLOB, EMPTY, BLOB])
    truth = torch.stack([EMPTY, BLOB, BLOB, EMPTY])
    out = overlap_metrics(pred, truth, per="slice")
    for value in out.values():
        assert value.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_slice_vs_volume():
    # slice 0: identical 8-pixel masks (Dice 1); slice 1: one pixel each, not overlapping (Dice 0)
    pred = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    truth = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    pred[0, 0, :2] = truth[0, 0, :2] = True
    pred[1, 0, 0, 0] = True
    truth[1, 0, 3, 3] = True
    per_slice = dice(confusion_counts(pred, truth, per="slice"))
    assert per_slice.tolist() == [1.0, 0.0]
    volume = confusion_counts(pred, truth, per="volume")
    assert (volume.tp.item(), volume.fp.item(), volume.fn.item()) == (8, 1, 1)
    assert dice(volume).item() == pytest.approx(16 / 18)  # not the slice mean 0.5
    assert dice(volume).item() != pytest.approx(per_slice.mean().item())
    summed = confusion_counts(pred, truth, per="slice").sum()
    assert (summed.tp.item(), summed.fp.item(), summed.fn.item()) == (8, 1, 1)
    assert dice(summed).item() == dice(volume).item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accumulation_across_batches(seed):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(7, 1, 8, 8, generator=g)  # probabilities, thresholded at 0.5
    truth = torch.rand(7, 1, 8, 8, generator=g) > 0.6
    def as_tuple(c):
        return c.tp.item(), c.fp.item(), c.fn.item()

    whole = as_tuple(confusion_counts(pred, truth, per="volume"))
    a = confusion_counts(pred[:3], truth[:3], per="volume")
    b = confusion_counts(pred[3:], truth[3:], per="volume")
    a_slices = confusion_counts(pred[:3], truth[:3])  # (3,)
    b_slices = confusion_counts(pred[3:], truth[3:])  # (4,)
    assert as_tuple(a + b) == whole
    assert as_tuple(sum([a, b])) == whole
    assert as_tuple(a_slices.sum() + b_slices.sum()) == whole
    # per-slice counts of equal batches add slice by slice
    c = confusion_counts(pred[:3], truth[:3]) + confusion_counts(pred[3:6], truth[3:6])
    assert c.tp.shape == (3,)
    with pytest.raises(ValueError, match="shapes"):
        _ = a_slices + b_slices  # (3,) + (4,): sum() each to a volume first


def _numpy_metrics(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """Independent reference: counts by numpy, zero denominators by the documented rule."""
    tp, fp, fn = int(np.sum(p & t)), int(np.sum(p & ~t)), int(np.sum(~p & t))
    perfect = 1.0 if fp == 0 and fn == 0 else 0.0

    def r(num, den):
        return num / den if den else perfect

    return {
        "dice": r(2 * tp, 2 * tp + fp + fn),
        "iou": r(tp, tp + fp + fn),
        "precision": r(tp, tp + fp),
        "recall": r(tp, tp + fn),
    }


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("density", [0.02, 0.3, 0.7])
def test_matches_numpy_on_random_masks(seed, density):
    rng = np.random.default_rng(seed)
    p = rng.random((6, 12, 12)) < density
    t = rng.random((6, 12, 12)) < density
    p[0] = False  # make sure some empty slices appear
    t[0] = False
    t[1] = False
    per_slice = overlap_metrics(torch.from_numpy(p), torch.from_numpy(t), per="slice")
    for i in range(p.shape[0]):
        ref = _numpy_metrics(p[i], t[i])
        for name in METRICS:
            assert per_slice[name][i].item() == pytest.approx(ref[name], abs=1e-12)
    volume = overlap_metrics(torch.from_numpy(p), torch.from_numpy(t), per="volume")
    ref = _numpy_metrics(p, t)
    for name in METRICS:
        assert volume[name].item() == pytest.approx(ref[name], abs=1e-12)


@pytest.mark.parametrize(
    "pred_shape, truth_shape, per",
    [
        ((2, 4, 4), (2, 4, 5), "slice"),
        ((2, 1, 4, 4), (2, 4, 4), "slice"),
        ((3, 4, 4), (2, 4, 4), "volume"),
        ((2, 3, 4, 4), (2, 3, 4, 4), "slice"),  # more than one channel
        ((4, 4), (4, 4), "slice"),  # no batch axis
        ((2, 2, 4, 4, 4), (2, 2, 4, 4, 4), "slice"),
    ],
)
def test_bad_shapes_raise(pred_shape, truth_shape, per):
    with pytest.raises(ValueError):
        confusion_counts(torch.zeros(pred_shape), torch.zeros(truth_shape), per=per)


def test_shape_mismatch_message_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
        confusion_counts(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))


def test_bad_per_raises():
    with pytest.raises(ValueError, match="per"):
        confusion_counts(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), per="pixel")


def test_counts_sum_of_scalar_is_identity():
    c = ConfusionCounts(torch.tensor(1), torch.tensor(2), torch.tensor(3))
    assert c.sum() is c


# ----------------------------------------------------------------------------------------------
# Surface distances (mm)
# ----------------------------------------------------------------------------------------------


def _brute_surface_distances(p: np.ndarray, t: np.ndarray, spacing) -> tuple[np.ndarray, ...]:
    """Reference: surfaces by explicit face-neighbour checks, distances by all pairs."""

    def surface(m):
        padded = np.pad(m, 1, constant_values=False)
        inner = tuple(slice(1, -1) for _ in range(m.ndim))
        has_bg_neighbour = np.zeros_like(m)
        for axis in range(m.ndim):
            for step in (-1, 1):
                has_bg_neighbour |= ~np.roll(padded, step, axis=axis)[inner]
        return np.argwhere(m & has_bg_neighbour) * np.asarray(spacing, dtype=float)

    sp, st = surface(p), surface(t)
    d = np.sqrt(((sp[:, None, :] - st[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1), d.min(axis=0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "shape, spacing",
    [((16, 16), (1.0, 1.0)), ((16, 20), (2.0, 0.7)), ((6, 10, 12), (2.5, 0.8, 0.6))],
)
def test_surface_distances_match_brute_force(seed, shape, spacing):
    rng = np.random.default_rng(seed)
    # smooth-ish blobs: threshold a blurred noise field
    p = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.5
    t = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.5
    if not p.any() or not t.any():
        p[tuple(s // 2 for s in shape)] = True
        t[tuple(s // 3 for s in shape)] = True
    d_pt, d_tp = surface_distances(p, t, spacing)
    ref_pt, ref_tp = _brute_surface_distances(p, t, spacing)
    np.testing.assert_allclose(d_pt, ref_pt, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d_tp, ref_tp, rtol=1e-12, atol=1e-12)
    expected_hd95 = max(np.percentile(ref_pt, 95), np.percentile(ref_tp, 95))
    expected_assd = (ref_pt.sum() + ref_tp.sum()) / (ref_pt.size + ref_tp.size)
    assert hausdorff_distance_95(p, t, spacing) == pytest.approx(expected_hd95, rel=1e-12)
    assert average_surface_distance(p, t, spacing) == pytest.approx(expected_assd, rel=1e-12)


@pytest.mark.parametrize("shape, spacing", [((9, 9), (1.0, 3.0)), ((5, 9, 9), (2.5, 0.8, 0.8))])
@pytest.mark.parametrize("as_torch", [False, True])
def test_identical_masks_give_zero(shape, spacing, as_torch):
    m = np.zeros(shape, dtype=np.uint8)
    m[tuple(slice(1, s - 2) for s in shape)] = 1
    if as_torch:
        m = torch.from_numpy(m)
    assert hausdorff_distance_95(m, m, spacing) == 0.0
    assert average_surface_distance(m, m, spacing) == 0.0


@pytest.mark.parametrize(
    "spacing, expected", [((1.0, 1.0), 5.0), ((2.0, 0.5), math.hypot(6.0, 2.0))]
)
def test_two_single_points(spacing, expected):
    p = np.zeros((5, 6), dtype=bool)
    t = np.zeros((5, 6), dtype=bool)
    p[0, 0] = True
    t[3, 4] = True
    assert hausdorff_distance_95(p, t, spacing) == pytest.approx(expected, rel=1e-12)
    assert average_surface_distance(p, t, spacing) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("row_spacing", [1.0, 0.7, 3.0])
def test_parallel_segments_2d(k, row_spacing):
    # every point of one segment is directly k rows above/below a point of the other
    p = np.zeros((10, 12), dtype=bool)
    t = np.zeros((10, 12), dtype=bool)
    p[2, 3:9] = True
    t[2 + k, 3:9] = True
    spacing = (row_spacing, 0.5)
    assert hausdorff_distance_95(p, t, spacing) == pytest.approx(k * row_spacing, rel=1e-12)
    assert average_surface_distance(p, t, spacing) == pytest.approx(k * row_spacing, rel=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_parallel_planes_3d_anisotropic(k):
    p = np.zeros((8, 6, 7), dtype=bool)
    t = np.zeros((8, 6, 7), dtype=bool)
    p[1] = True
    t[1 + k] = True
    spacing = (2.5, 0.8, 0.8)
    assert hausdorff_distance_95(p, t, spacing) == pytest.approx(k * 2.5, rel=1e-12)
    assert average_surface_distance(p, t, spacing) == pytest.approx(k * 2.5, rel=1e-12)


@pytest.mark.parametrize("n", [3, 5, 8])
@pytest.mark.parametrize("axis", [0, 1])
def test_square_shifted_by_one_pixel(n, axis):
    # Square S (side n) and S shifted by one pixel along `axis`; their surfaces are the
    # 4n - 4 pixel rings. Shift along columns: each ring pixel on the top/bottom row of S is
    # also on T's ring (distance 0) except the corner column left behind (distance 1 pixel);
    # each pixel of S's left/right columns between the corners is 1 pixel from T's left/right
    # column. So half the 4n - 4 directed distances are 0 and half are 1 pixel, both ways:
    # ASSD = spacing[axis] / 2, and the 95th percentile (index 0.95 * (4n - 5) >= 2n - 2,
    # inside the ones) is spacing[axis]. This needs the spacing across the shift to be at
    # least the spacing along it (else ring pixels next to a corner find a closer neighbour
    # sideways), hence the spacing below.
    spacing = (0.6, 1.5) if axis == 0 else (1.5, 0.6)
    p = np.zeros((12, 12), dtype=bool)
    p[2 : 2 + n, 2 : 2 + n] = True
    t = np.roll(p, 1, axis=axis)
    d_pt, d_tp = surface_distances(p, t, spacing)
    for d in (d_pt, d_tp):
        assert d.size == 4 * n - 4
        assert sorted(d.tolist()) == [0.0] * (2 * n - 2) + [spacing[axis]] * (2 * n - 2)
    assert hausdorff_distance_95(p, t, spacing) == pytest.approx(spacing[axis], rel=1e-12)
    assert average_surface_distance(p, t, spacing) == pytest.approx(spacing[axis] / 2, rel=1e-12)


def test_foreground_touching_the_border_is_surface():
    # a full-width band touching three edges: its edge pixels are surface (border_value=0)
    m = np.zeros((4, 5), dtype=bool)
    m[:2] = True
    p_surface_count = surface_distances(m, m, (1.0, 1.0))[0].size
    assert p_surface_count == 10  # all pixels of the 2-row band


@pytest.mark.parametrize("shape, spacing", [((6, 6), (1.0, 2.0)), ((4, 6, 6), (2.5, 0.8, 0.8))])
@pytest.mark.parametrize("which", ["pred", "target"])
def test_one_empty_is_inf(shape, spacing, which):
    empty = np.zeros(shape, dtype=bool)
    blob = np.zeros(shape, dtype=bool)
    blob[tuple(slice(1, 3) for _ in shape)] = True
    p, t = (empty, blob) if which == "pred" else (blob, empty)
    assert hausdorff_distance_95(p, t, spacing) == math.inf
    assert average_surface_distance(p, t, spacing) == math.inf
    d_pt, d_tp = surface_distances(p, t, spacing)
    empty_side, full_side = (d_pt, d_tp) if which == "pred" else (d_tp, d_pt)
    assert empty_side.size == 0 and full_side.size > 0 and np.all(np.isinf(full_side))


@pytest.mark.parametrize("shape, spacing", [((6, 6), (1.0, 2.0)), ((4, 6, 6), (2.5, 0.8, 0.8))])
def test_both_empty_is_zero(shape, spacing):
    empty = torch.zeros(shape)
    assert hausdorff_distance_95(empty, empty, spacing) == 0.0
    assert average_surface_distance(empty, empty, spacing) == 0.0


@pytest.mark.parametrize(
    "shape, spacing",
    [
        ((6, 6), (1.0,)),
        ((6, 6), (1.0, 1.0, 1.0)),
        ((6, 6), (1.0, 0.0)),
        ((6, 6), (-1.0, 1.0)),
        ((4, 6, 6), (1.0, 1.0)),
        ((4, 6, 6), (2.5, 0.8, -0.8)),
    ],
)
@pytest.mark.parametrize("fn", [surface_distances, hausdorff_distance_95, average_surface_distance])
def test_bad_spacing_raises(shape, spacing, fn):
    m = np.ones(shape, dtype=bool)
    with pytest.raises(ValueError, match="spacing"):
        fn(m, m, spacing)


@pytest.mark.parametrize(
    "pred_shape, truth_shape",
    [((6, 6), (6, 7)), ((4, 6, 6), (6, 6)), ((6,), (6,)), ((1, 1, 6, 6), (1, 1, 6, 6))],
)
@pytest.mark.parametrize("fn", [surface_distances, hausdorff_distance_95, average_surface_distance])
def test_surface_bad_shapes_raise(pred_shape, truth_shape, fn):
    with pytest.raises(ValueError):
        fn(np.ones(pred_shape), np.ones(truth_shape), (1.0,) * len(pred_shape))
