"""Per-slice adaptive segmentation: each slice stops where the exit rule says, at the cost of its path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from anunet_core import ANUNet
from anunet_core.adaptive import SliceRecord, segment_adaptive, segment_fixed
from anunet_core.anytime import depth_gflops
from anunet_core.exit_rule import CaseHeads, ExitRule, simulate
from anunet_core.inference import optimize_for_inference
from testkit import randomize_batchnorm

FILTERS = (4, 8, 16, 32, 64)
K, SIDE = 6, 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def slices() -> torch.Tensor:
    """``(K, 1, H, W)`` noise of different contrasts, so that the slices' heads differ; shuffled
    so that the slices that stop early are not the first of their chunk."""
    noise = torch.randn(K, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(5))
    contrast = noise * torch.tensor([0.0, 0.3, 1.0, 1.0, 2.0, 3.0]).view(K, 1, 1, 1)
    return contrast[[4, 2, 0, 5, 3, 1]]


@pytest.fixture(scope="module")
def model() -> ANUNet:
    """An eval-mode ANU-Net whose heads are decisive: each head's logits are rescaled to a spread
    of about 4 around 0 (a random head's probabilities are all close to one value)."""
    torch.manual_seed(0)
    network = randomize_batchnorm(ANUNet(filters=FILTERS), seed=2).eval()
    noise = torch.randn(K, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for j, logits in enumerate(network(noise), start=1):
            head = network.heads[f"head_{j}"]
            scale = 4.0 / float(logits.std())
            head.weight.mul_(scale)
            head.bias.copy_(scale * (head.bias - logits.median()))
    return network


@pytest.fixture(scope="module")
def gflops(model: ANUNet) -> dict[int, float]:
    return depth_gflops(model, SIDE, SIDE)


def all_heads(model: ANUNet, slices: torch.Tensor) -> np.ndarray:
    """``(4, K, H, W)`` sigmoid of every head, from the plain eval-mode forward."""
    with torch.no_grad():
        return torch.stack([torch.sigmoid(h[:, 0]) for h in model(slices)]).numpy()


@pytest.mark.parametrize("batch_size", [4, K])
def test_never_equals_fixed_depth_4(model, slices, gflops, batch_size: int) -> None:
    net = optimize_for_inference(model)
    adaptive = segment_adaptive(net, slices, ExitRule.NEVER, batch_size, gflops)
    fixed = segment_fixed(net, slices, 4, batch_size, gflops)
    np.testing.assert_allclose(adaptive.probs, fixed.probs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(fixed.probs, all_heads(model, slices)[3], atol=1e-4, rtol=0)
    assert adaptive.probs.dtype == np.float32 and adaptive.probs.shape == (K, SIDE, SIDE)
    assert adaptive.depth_histogram(4) == fixed.depth_histogram(4) == [0, 0, 0, K]
    assert adaptive.gflop == pytest.approx(K * gflops[4])
    assert adaptive.agreement_intersection == fixed.agreement_intersection
    assert 0 < adaptive.final_voxels == fixed.final_voxels < K * SIDE * SIDE
    assert adaptive.shallower_voxels == fixed.shallower_voxels
    assert adaptive.uncertain_pixels == fixed.uncertain_pixels


def test_exit_depths_and_probs_follow_the_rule(model, slices, gflops) -> None:
    net = optimize_for_inference(model)
    # exit at the first head d >= 2 with at most 55% uncertain pixels: here 2 slices each at L2, L3, L4
    rule = ExitRule(tau=0.0, uncertain_max=0.55, empty_max_prob=0.0)
    record = segment_adaptive(net, slices, rule, 4, gflops)
    heads = torch.stack([torch.sigmoid(h[:, 0]) for h in net(slices)]).numpy()
    expected = simulate([CaseHeads(probs=heads, truth=np.zeros(heads.shape[1:], bool))], rule, gflops)
    np.testing.assert_array_equal(record.exit_depth, expected.exit_depths[0])
    assert len(set(record.exit_depth.tolist())) >= 3
    assert record.depth_histogram(4) == expected.depth_histogram(4)
    rows = np.arange(K)
    np.testing.assert_allclose(record.probs, heads[record.exit_depth - 1, rows], atol=1e-4, rtol=0)
    assert record.gflop == pytest.approx(sum(gflops[int(d)] for d in record.exit_depth))
    final = heads[record.exit_depth - 1, rows] > 0.5
    shallower = heads[np.maximum(record.exit_depth - 2, 0), rows] > 0.5
    assert record.final_voxels == final.sum()
    assert record.shallower_voxels == shallower.sum()
    assert record.agreement_intersection == (final & shallower).sum()
    band = heads[record.exit_depth - 1, rows]
    assert record.uncertain_pixels == ((band > 0.1) & (band < 0.9)).sum()


def test_empty_slices_exit_at_the_first_head(model, slices, gflops) -> None:
    silent = copy.deepcopy(model)
    with torch.no_grad():
        for head in silent.heads.values():
            head.bias.fill_(-60.0)
    rule = ExitRule(tau=1.01, uncertain_max=0.0, empty_max_prob=0.1)
    record = segment_adaptive(optimize_for_inference(silent), slices, rule, 4, gflops)
    assert record.depth_histogram(4) == [K, 0, 0, 0]
    assert record.gflop == pytest.approx(K * gflops[1])
    assert record.gflop_per_slice == pytest.approx(gflops[1])
    assert record.probs.max() < 1e-6
    assert record.final_voxels == record.shallower_voxels == record.uncertain_pixels == 0
    assert record.head_agreement == 1.0


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_fixed_depth_on_a_deeper_network_equals_the_pruned_one(model, slices, gflops, depth: int) -> None:
    deep = segment_fixed(optimize_for_inference(model), slices, depth, 4, gflops)
    pruned = segment_fixed(optimize_for_inference(model, depth), slices, depth, 4, gflops)
    np.testing.assert_allclose(deep.probs, pruned.probs, atol=1e-5, rtol=0)
    assert deep.depth_histogram(depth) == pruned.depth_histogram(depth) == [0] * (depth - 1) + [K]
    assert deep.gflop == pytest.approx(K * gflops[depth])
    assert (deep.final_voxels, deep.shallower_voxels, deep.agreement_intersection) == (
        pruned.final_voxels,
        pruned.shallower_voxels,
        pruned.agreement_intersection,
    )
    if depth == 1:  # the shallower head of depth 1 is its own
        assert deep.final_voxels == deep.shallower_voxels == deep.agreement_intersection


def test_bad_input_raises(model, slices, gflops) -> None:
    net = optimize_for_inference(model, 2)
    with pytest.raises(ValueError, match="only 2 heads"):
        segment_adaptive(net, slices, ExitRule.NEVER, 4, gflops)
    with pytest.raises(ValueError, match="batch_size"):
        segment_fixed(net, slices, 2, 0, gflops)
    with pytest.raises(ValueError, match=r"\(K, 1, H, W\)"):
        segment_fixed(net, slices[:, 0], 2, 4, gflops)
    with pytest.raises(ValueError, match="depth must be"):
        segment_fixed(net, slices, 3, 4, gflops)
    with pytest.raises(ValueError, match="no cost for depth 2"):
        segment_fixed(net, slices, 2, 4, {1: 1.0})


def record(exit_depth: list[int], inter: int, final: int, shallower: int) -> SliceRecord:
    return SliceRecord(
        probs=np.zeros((len(exit_depth), 2, 2), np.float32),
        exit_depth=np.array(exit_depth),
        agreement_intersection=inter,
        final_voxels=final,
        shallower_voxels=shallower,
        uncertain_pixels=2,
        gflop=3.0,
    )


@pytest.mark.parametrize(
    ("inter", "final", "shallower", "expected"),
    [(3, 4, 5, 6 / 9), (0, 0, 0, 1.0), (0, 3, 0, 0.0), (7, 7, 7, 1.0)],
)
def test_head_agreement(inter: int, final: int, shallower: int, expected: float) -> None:
    assert record([1], inter, final, shallower).head_agreement == pytest.approx(expected)


def test_depth_histogram_and_fractions() -> None:
    r = record([1, 1, 3, 4, 4, 4], 0, 0, 0)
    assert r.depth_histogram(4) == [2, 0, 1, 3]
    assert r.uncertain_fraction == pytest.approx(2 / 24)
    assert r.gflop_per_slice == pytest.approx(0.5)
    assert record([], 0, 0, 0).depth_histogram(4) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="outside 1..3"):
        r.depth_histogram(3)
