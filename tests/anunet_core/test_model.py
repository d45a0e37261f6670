"""ANU-Net: Table 6 parameter counts, real pruning, gradients per depth, I/O and bad input."""

from __future__ import annotations

import pytest
import torch

from anunet_core import ANUNet, count_parameters, prune
from anunet_core.model import nodes_at_depth

DEPTHS = [1, 2, 3, 4]
# Table 6 of the paper (millions, four digits) and the exact counts they round from.
TABLE6_PARAMS_M = {1: 0.1038, 2: 0.5134, 3: 2.1918, 4: 8.9506}
EXACT_PARAMS = {1: 103_812, 2: 513_387, 3: 2_191_829, 4: 8_950_594}


def expected_state_prefixes(depth: int) -> set[str]:
    nodes = nodes_at_depth(depth)
    prefixes = {f"blocks.x_{i}_{j}." for i, j in nodes}
    prefixes |= {f"gates.ag_{i}_{j}." for i, j in nodes if j > 0}
    prefixes |= {f"ups.up_{i}." for i in range(depth)}
    prefixes |= {f"heads.head_{j}." for j in range(1, depth + 1)}
    return prefixes


@pytest.mark.parametrize("depth", DEPTHS)
def test_parameter_count_matches_table6(depth: int) -> None:
    pruned = prune(ANUNet(), depth)
    assert count_parameters(pruned) == EXACT_PARAMS[depth]
    assert round(count_parameters(pruned) / 1e6, 4) == TABLE6_PARAMS_M[depth]
    # building the pruned network directly gives the same network
    assert count_parameters(ANUNet(depth=depth)) == EXACT_PARAMS[depth]


def test_full_network_is_depth_four() -> None:
    assert count_parameters(ANUNet()) == EXACT_PARAMS[4]


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("batch,side", [(1, 16), (3, 32), (2, 48)])
def test_forward_returns_depth_logit_maps(depth: int, batch: int, side: int) -> None:
    model = ANUNet().eval()
    outputs = model(torch.randn(batch, 1, side, side), depth=depth)
    assert len(outputs) == depth
    for logits in outputs:
        assert logits.shape == (batch, 1, side, side)
        assert logits.dtype == torch.float32


def test_rectangular_input_and_multichannel() -> None:
    model = ANUNet(in_channels=3).eval()
    outputs = model(torch.randn(1, 3, 32, 64))
    assert [tuple(t.shape) for t in outputs] == [(1, 1, 32, 64)] * 4


@pytest.mark.parametrize("depth", DEPTHS)
def test_pruned_equals_full_at_depth(trained_like: ANUNet, depth: int) -> None:
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(depth))
    pruned = prune(trained_like, depth)
    assert pruned.depth == depth and not pruned.training
    with torch.no_grad():
        full = trained_like(x, depth=depth)
        alone = pruned(x)
    assert len(alone) == depth
    for a, b in zip(full, alone):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


@pytest.mark.parametrize("depth", DEPTHS)
def test_pruned_state_dict_holds_only_needed_modules(trained_like: ANUNet, depth: int) -> None:
    state = prune(trained_like, depth).state_dict()
    prefixes = expected_state_prefixes(depth)
    used = {p for p in prefixes if any(k.startswith(p) for k in state)}
    assert used == prefixes, f"missing modules: {prefixes - used}"
    stray = [k for k in state if not any(k.startswith(p) for p in prefixes)]
    assert stray == []
    # copied, not shared: changing the pruned network leaves the source untouched
    pruned = prune(trained_like, depth)
    before = trained_like.heads["head_1"].weight.clone()
    with torch.no_grad():
        pruned.heads["head_1"].weight.add_(1.0)
    torch.testing.assert_close(trained_like.heads["head_1"].weight, before)


@pytest.mark.parametrize("depth", DEPTHS)
def test_forward_computes_only_needed_nodes(depth: int) -> None:
    model = ANUNet().eval()
    called: list[str] = []
    for name, block in model.blocks.items():
        block.register_forward_hook(lambda *_, name=name: called.append(name))
    with torch.no_grad():
        model(torch.randn(1, 1, 16, 16), depth=depth)
    assert called == [f"x_{i}_{j}" for i, j in nodes_at_depth(depth)]


@pytest.mark.parametrize("depth", DEPTHS)
def test_gradients_reach_used_modules_only(depth: int) -> None:
    torch.manual_seed(depth)
    model = ANUNet().train()
    outputs = model(torch.randn(2, 1, 32, 32), depth=depth)
    torch.stack([o.square().mean() for o in outputs]).sum().backward()
    prefixes = expected_state_prefixes(depth)
    for name, parameter in model.named_parameters():
        if any(name.startswith(p) for p in prefixes):
            assert parameter.grad is not None, f"no gradient reached {name}"
            # A conv bias right before a train-mode BatchNorm has an exactly zero gradient (the
            # BatchNorm subtracts the batch mean); every weight must get a non-zero one.
            if name.endswith("weight"):
                assert parameter.grad.abs().sum() > 0, f"zero gradient at {name}"
        else:
            assert parameter.grad is None, f"gradient leaked into {name}, beyond depth {depth}"


@pytest.mark.parametrize("depth", DEPTHS)
def test_save_load_roundtrip_weights_only(tmp_path, trained_like: ANUNet, depth: int) -> None:
    pruned = prune(trained_like, depth)
    path = tmp_path / f"anunet-L{depth}.pt"
    torch.save(pruned.state_dict(), path)
    restored = ANUNet(depth=depth)
    restored.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    restored.eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        for a, b in zip(pruned(x), restored(x)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_bf16_autocast_forward_is_finite() -> None:
    model = ANUNet().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(torch.randn(1, 1, 32, 32))
    assert all(torch.isfinite(o.float()).all() for o in outputs)


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 32, 32), "4-D"),
        ((1, 1, 1, 32, 32), "4-D"),
        ((1, 2, 32, 32), "input channel"),
        ((1, 1, 250, 256), "multiples of 16"),
        ((1, 1, 256, 40), "multiples of 16"),
        ((1, 1, 0, 16), "multiples of 16"),
    ],
)
def test_bad_input_shapes_raise(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ANUNet()(torch.zeros(shape))


@pytest.mark.parametrize("depth", [0, 5, -1, 2.0, True])
def test_bad_depth_raises(depth) -> None:
    with pytest.raises(ValueError, match="depth"):
        ANUNet()(torch.zeros(1, 1, 16, 16), depth=depth)


@pytest.mark.parametrize("depth", [0, 5, 2.0, True])
def test_prune_refuses_a_depth_that_is_not_one_of_1_to_4(depth) -> None:
    with pytest.raises(ValueError, match="depth"):
        prune(ANUNet(), depth)


def test_pruned_network_rejects_deeper_outputs_and_needs_fewer_pools() -> None:
    pruned = prune(ANUNet(), 2)
    with pytest.raises(ValueError, match="1..2"):
        pruned(torch.zeros(1, 1, 16, 16), depth=3)
    with pytest.raises(ValueError, match="1..2"):
        prune(pruned, 3)
    # a depth-2 network pools twice: sides need only be multiples of 4
    assert [tuple(t.shape) for t in pruned(torch.zeros(1, 1, 12, 20))] == [(1, 1, 12, 20)] * 2


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"depth": 0}, "depth"),
        ({"depth": 5}, "depth"),
        ({"in_channels": 0}, "in_channels"),
        ({"filters": (32, 64, 128, 256)}, "filters"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ANUNet(**kwargs)
