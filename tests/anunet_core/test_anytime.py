"""The anytime forward equals the full forward at every depth, on any subset of the batch."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from anunet_core import ANUNet, prune
from anunet_core.anytime import NodeCache, anytime_deepen, anytime_start, cache_bytes_per_slice, depth_gflops
from anunet_core.inference import optimize_for_inference
from testkit import randomize_batchnorm

FILTERS = (4, 8, 16, 32, 64)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small() -> ANUNet:
    """A depth-4 eval-mode ANU-Net with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    return randomize_batchnorm(ANUNet(filters=FILTERS), seed=1).eval()


def image(batch: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


def anytime_heads(network: ANUNet, x: torch.Tensor) -> tuple[list[torch.Tensor], list[NodeCache]]:
    """Every head of ``network`` on ``x`` by start + deepen, and the cache after each step."""
    cache, logits = anytime_start(network, x)
    heads, caches = [logits], [cache]
    while cache.depth < network.depth:
        cache, logits = anytime_deepen(network, cache)
        heads.append(logits)
        caches.append(cache)
    return heads, caches


@pytest.mark.parametrize(
    ("network_depth", "depth"), [(n, d) for n in (2, 3, 4) for d in range(1, n + 1)], ids=lambda v: str(v)
)
def test_incremental_equals_full_forward(small: ANUNet, network_depth: int, depth: int) -> None:
    network = prune(small, network_depth)
    x = image(3, seed=10 * network_depth + depth)
    with torch.no_grad():
        cache, logits = anytime_start(network, x)
        for _ in range(1, depth):
            cache, logits = anytime_deepen(network, cache)
        reference = network(x, depth=depth)[-1]
    assert cache.depth == depth and cache.batch == 3
    assert logits.shape == (3, 1, 32, 32)
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)


def test_train_mode_with_gradients() -> None:
    torch.manual_seed(3)
    network = ANUNet(filters=FILTERS, depth=2).train()
    x = image(4, seed=3)
    heads, _ = anytime_heads(network, x)
    reference = network(x)
    for a, b in zip(heads, reference):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    heads[-1].sum().backward()
    assert network.blocks["x_0_0"][0].weight.grad is not None


@pytest.mark.parametrize("rows", [[2], [3, 0], [1, 2, 4], [True, False, True, True, False]])
def test_deepen_on_rows_equals_those_rows(small: ANUNet, rows: list) -> None:
    x = image(5, seed=20)
    index = torch.tensor(rows)
    selected = index.nonzero().flatten() if index.dtype == torch.bool else index
    with torch.no_grad():
        cache, _ = anytime_start(small, x)
        cache, logits = anytime_deepen(small, cache, index)
        assert cache.batch == len(selected) and logits.shape[0] == len(selected)
        torch.testing.assert_close(logits, small(x[selected], depth=2)[-1], atol=1e-5, rtol=0)
        # a second subset of the subset, two depths on
        cache, _ = anytime_deepen(small, cache, torch.tensor([len(selected) - 1]))
        cache, logits = anytime_deepen(small, cache)
        torch.testing.assert_close(logits, small(x[selected[-1:]], depth=4)[-1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_folded_start_deepen_equal_eval_model(small: ANUNet, depth: int) -> None:
    fast = optimize_for_inference(small)
    x = image(3, seed=30 + depth)
    cache, logits = fast.start(x)
    rows = torch.tensor([2, 0])
    for _ in range(1, depth):
        cache, logits = fast.deepen(cache, rows)
        x, rows = x[rows], torch.tensor([1, 0])
    assert cache.depth == depth
    assert logits.is_inference() and not logits.requires_grad
    with torch.no_grad():
        reference = small(x, depth=depth)[-1]
    torch.testing.assert_close(logits.contiguous(), reference, atol=1e-4, rtol=0)


def test_deepen_past_network_depth_raises(small: ANUNet) -> None:
    network = prune(small, 2)
    with torch.no_grad():
        cache, _ = anytime_start(network, image(1))
        cache, _ = anytime_deepen(network, cache)
        with pytest.raises(ValueError, match="past depth 2"):
            anytime_deepen(network, cache)
    fast = optimize_for_inference(small, 1)
    cache, _ = fast.start(image(1))
    with pytest.raises(ValueError, match="past depth 1"):
        fast.deepen(cache)


def test_bad_rows_raise(small: ANUNet) -> None:
    with torch.no_grad():
        cache, _ = anytime_start(small, image(3))
    with pytest.raises(ValueError, match="batch of 3"):
        anytime_deepen(small, cache, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="3 entries"):
        anytime_deepen(small, cache, torch.tensor([True, False]))


@pytest.mark.parametrize("network_depth", [2, 3, 4])
def test_cache_within_bound_and_dropped_at_the_end(small: ANUNet, network_depth: int) -> None:
    network = prune(small, network_depth)
    batch = 3
    with torch.no_grad():
        _, caches = anytime_heads(network, image(batch, size=32))
    for cache in caches:
        bound = cache_bytes_per_slice(network, cache.depth, 32, 32) * batch
        assert 0 < cache.nbytes() <= bound or cache.depth == network_depth
        assert cache.batch == batch
    assert caches[-1].nodes == {} and caches[-1].nbytes() == 0
    # below the network's depth every node computed so far is still read by a later diagonal
    assert set(caches[0].nodes) == {(0, 0), (1, 0), (0, 1)}


def test_cache_bound_for_paper_filters() -> None:
    network = ANUNet()
    # the worked number of the module docstring: depth 3 of 4 at 256 x 256, float32
    assert cache_bytes_per_slice(network, 3, 256, 256) == 51_380_224
    assert cache_bytes_per_slice(network, 4, 256, 256) == 0
    assert cache_bytes_per_slice(network, 1, 256, 256, torch.float16) == 2 * (2 * 32 * 65536 + 64 * 16384)


@pytest.mark.parametrize("network_depth", [1, 2, 4])
def test_depth_gflops_matches_flop_counter(small: ANUNet, network_depth: int) -> None:
    network = prune(small, network_depth)
    gflops = depth_gflops(network, 32, 48)
    assert list(gflops) == list(range(1, network_depth + 1))
    values = list(gflops.values())
    assert all(a < b for a, b in zip(values, values[1:]))
    for depth, expected in gflops.items():
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            network(torch.zeros(1, 1, 32, 48), depth=depth)
        assert expected == pytest.approx(counter.get_total_flops() / 1e9, rel=0.01)


def test_depth_gflops_paper_network_scales_with_pixels() -> None:
    network = ANUNet()
    small_side, large_side = depth_gflops(network, 128, 128), depth_gflops(network, 256, 256)
    for depth in range(1, 5):
        assert large_side[depth] == pytest.approx(4 * small_side[depth])
    assert 60 < large_side[4] < 63  # 61.4 GFLOP per 256 x 256 slice at L4
    with pytest.raises(ValueError, match="multiples of 16"):
        depth_gflops(network, 100, 128)
