"""The five baselines of the paper's comparison, parameterised over the architectures:
parameter counts, output shapes, bad input, gradients, save/load, UNet++ pruning, the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anunet_core import ANUNet, count_parameters, prune
from anunet_core.baselines import CITATIONS, NETWORKS, UNet, UNetPlusPlus, build_network, has_depths
from anunet_core.baselines.r2unet import RecurrentConv, RecurrentResidualBlock
from anunet_core.model import nodes_at_depth
from anunet_core.vocabulary import ARCHS, NESTED_ARCHS
from testkit import randomize_batchnorm

pytestmark = pytest.mark.usefixtures("one_thread")

DEPTHS = [1, 2, 3, 4]
# Exact parameter counts with the paper's filters (32, 64, 128, 256, 512) and one input channel.
EXACT_PARAMS = {
    "anunet": 8_950_594,  # Table 6, L4
    "unet": 7_766_369,
    "r2unet": 8_908_321,
    "unetpp": 8_828_420,
    "attunet": 7_856_237,
    "attr2unet": 8_998_189,
}
HEADS = {arch: 4 if arch in NESTED_ARCHS else 1 for arch in ARCHS}
SMALL = (4, 8, 16, 32, 64)  # filters for the tests that need no paper-sized network


@pytest.fixture(scope="module")
def networks() -> dict[str, nn.Module]:
    """Every architecture with the paper's filters, eval mode, BatchNorms as after training."""
    built = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        built[arch] = randomize_batchnorm(build_network(arch)).eval()
    return built


# --- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_count_is_pinned(networks, arch: str) -> None:
    assert count_parameters(networks[arch]) == EXACT_PARAMS[arch]


def test_parameter_table_next_to_anunet(networks) -> None:
    counts = {arch: count_parameters(network) for arch, network in networks.items()}
    print(f"\n{'arch':<10} {'parameters':>11} {'M':>8} {'/ ANU-Net':>10}")
    for arch, count in counts.items():
        print(f"{arch:<10} {count:>11,} {count / 1e6:>8.4f} {count / counts['anunet']:>10.3f}")
    assert counts == EXACT_PARAMS
    gates = sum(p.numel() for p in networks["anunet"].gates.parameters())
    assert counts["unetpp"] == counts["anunet"] - gates  # UNet++ is ANU-Net without its 10 gates
    assert counts["attunet"] - counts["unet"] == counts["attr2unet"] - counts["r2unet"] > 0  # the same 4 gates


@pytest.mark.parametrize("gated,ungated", [("anunet", "unetpp"), ("attunet", "unet"), ("attr2unet", "r2unet")])
def test_attention_is_the_only_difference(networks, gated: str, ungated: str) -> None:
    """The gated and ungated twins hold the same modules under the same names, gates aside."""
    keys = set(networks[gated].state_dict())
    gate_keys = {k for k in keys if k.startswith("gates.")}
    assert gate_keys and keys - gate_keys == set(networks[ungated].state_dict())
    assert len(networks[gated].gates) == (10 if gated == "anunet" else 4)
    assert len(networks[ungated].gates) == 0


# --- forward -----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch,height,width", [(1, 32, 32), (2, 16, 48)])
def test_forward_returns_a_list_of_logit_maps(networks, arch: str, batch: int, height: int, width: int) -> None:
    with torch.no_grad():
        outputs = networks[arch](torch.randn(batch, 1, height, width))
    assert isinstance(outputs, list) and len(outputs) == HEADS[arch]
    for logits in outputs:
        assert logits.shape == (batch, 1, height, width) and logits.dtype == torch.float32


@pytest.mark.parametrize("arch", ARCHS)
def test_multichannel_input(arch: str) -> None:
    network = build_network(arch, in_channels=3, filters=SMALL).eval()
    with torch.no_grad():
        outputs = network(torch.randn(1, 3, 32, 64))
    assert [tuple(t.shape) for t in outputs] == [(1, 1, 32, 64)] * HEADS[arch]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 32, 32), "4-D"),
        ((1, 2, 32, 32), "input channel"),
        ((1, 1, 250, 256), "multiples of 16"),
        ((1, 1, 256, 40), "multiples of 16"),
        ((1, 1, 0, 16), "multiples of 16"),
    ],
)
def test_bad_input_shapes_raise(networks, arch: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        networks[arch](torch.zeros(shape))


@pytest.mark.parametrize("arch", sorted(set(ARCHS) - set(NESTED_ARCHS)))
def test_a_network_without_depths_takes_depth_none_or_four_only(networks, arch: str) -> None:
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(networks[arch](x, depth=4)[0], networks[arch](x)[0], rtol=0, atol=0)
    for depth in (1, 2, 3, 5, 4.0, True):
        with pytest.raises(ValueError, match="depth must be None or 4"):
            networks[arch](x, depth=depth)


@pytest.mark.parametrize("arch", ["attunet", "attr2unet"])
def test_each_skip_goes_through_its_gate_once(arch: str) -> None:
    network = build_network(arch, filters=SMALL).eval()
    called: list[str] = []
    for name, gate in network.gates.items():
        gate.register_forward_hook(lambda *_, name=name: called.append(name))
    with torch.no_grad():
        network(torch.randn(1, 1, 16, 16))
    assert called == ["ag_3_1", "ag_2_2", "ag_1_3", "ag_0_4"]


def test_recurrent_residual_block() -> None:
    """``RCL(x) = conv(x + conv(x + conv(x)))`` for t = 2 (one shared conv), and the RRCNN
    block adds two stacked RCLs to its 1x1 projection."""
    torch.manual_seed(0)
    block = randomize_batchnorm(RecurrentResidualBlock(3, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        y = block(x)
        projected = block.conv_1x1(x)
        h = projected
        for rcl in block.rcnn:
            assert isinstance(rcl, RecurrentConv) and rcl.t == 2
            h = rcl.conv(h + rcl.conv(h + rcl.conv(h)))
    assert y.shape == (2, 5, 8, 8)
    torch.testing.assert_close(y, projected + h, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="t must be"):
        RecurrentConv(4, t=0)


# --- training and storage ----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch: str) -> None:
    torch.manual_seed(1)
    network = build_network(arch).train()
    outputs = network(torch.randn(1, 1, 32, 32))
    torch.stack([o.square().mean() for o in outputs]).sum().backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None, f"no gradient reached {name}"
        # A conv bias right before a train-mode BatchNorm has an exactly zero gradient (the
        # BatchNorm subtracts the batch mean); every weight must get a non-zero one.
        if name.endswith("weight"):
            assert parameter.grad.abs().sum() > 0, f"zero gradient at {name}"


@pytest.mark.parametrize("arch,depth", [(arch, 4) for arch in ARCHS] + [("unetpp", 2)])
def test_save_load_roundtrip_weights_only(tmp_path, networks, arch: str, depth: int) -> None:
    network = networks[arch] if depth == 4 else prune(networks[arch], depth)
    path = tmp_path / f"{arch}-L{depth}.pt"
    torch.save(network.state_dict(), path)
    restored = build_network(arch, depth=depth)
    restored.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    restored.eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        before, after = network(x), restored(x)
    assert len(after) == len(before) == (depth if arch in NESTED_ARCHS else 1)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# --- UNet++ depths and pruning -----------------------------------------------------------------


@pytest.fixture(scope="module")
def unetpp_forward(networks) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return x, networks["unetpp"](x)


@pytest.mark.parametrize("depth", DEPTHS)
def test_unetpp_pruned_equals_the_full_forwards_first_heads(networks, unetpp_forward, depth: int) -> None:
    x, full = unetpp_forward
    pruned = prune(networks["unetpp"], depth)
    assert isinstance(pruned, UNetPlusPlus) and pruned.depth == depth and not pruned.training
    with torch.no_grad():
        alone = pruned(x)
        shallow = networks["unetpp"](x, depth=depth)
    assert len(alone) == len(shallow) == depth
    for a, b, c in zip(alone, shallow, full[:depth]):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=0)
        torch.testing.assert_close(b, c, atol=1e-5, rtol=0)


@pytest.mark.parametrize("depth", DEPTHS)
def test_unetpp_pruned_holds_and_computes_only_the_needed_nodes(networks, depth: int) -> None:
    pruned = prune(networks["unetpp"], depth)
    nodes = nodes_at_depth(depth)
    prefixes = {f"blocks.x_{i}_{j}." for i, j in nodes} | {f"ups.up_{i}." for i in range(depth)}
    prefixes |= {f"heads.head_{j}." for j in range(1, depth + 1)}
    state = pruned.state_dict()
    assert {p for p in prefixes if any(k.startswith(p) for k in state)} == prefixes
    assert [k for k in state if not any(k.startswith(p) for p in prefixes)] == []
    assert count_parameters(pruned) == count_parameters(UNetPlusPlus(depth=depth))
    called: list[str] = []
    hooks = [
        block.register_forward_hook(lambda *_, name=name: called.append(name))
        for name, block in networks["unetpp"].blocks.items()
    ]
    try:
        with torch.no_grad():
            networks["unetpp"](torch.randn(1, 1, 16, 16), depth=depth)
    finally:
        for hook in hooks:
            hook.remove()
    assert called == [f"x_{i}_{j}" for i, j in nodes]


def test_prune_refuses_a_network_without_depths(networks) -> None:
    with pytest.raises(TypeError, match="prune expects a nested network"):
        prune(networks["unet"], 2)
    with pytest.raises(ValueError, match="1..4"):
        networks["unetpp"](torch.zeros(1, 1, 16, 16), depth=5)


# --- registry ----------------------------------------------------------------------------------


def test_the_registry_covers_the_vocabulary() -> None:
    assert ARCHS == ("anunet", "unet", "r2unet", "unetpp", "attunet", "attr2unet")
    assert tuple(NETWORKS) == ARCHS == tuple(CITATIONS)
    assert NETWORKS["anunet"] is ANUNet
    assert all(CITATIONS[arch] and "\n" not in CITATIONS[arch] for arch in ARCHS)
    assert [arch for arch in ARCHS if has_depths(arch)] == ["anunet", "unetpp"]


@pytest.mark.parametrize("arch", ARCHS)
def test_build_network_for_every_arch(arch: str) -> None:
    network = build_network(arch.upper(), filters=SMALL)
    assert type(network) is NETWORKS[arch]
    assert network.filters == SMALL and network.in_channels == 1 and network.depth == 4
    if has_depths(arch):
        assert build_network(arch, filters=SMALL, depth=2).depth == 2
    else:
        with pytest.raises(ValueError, match=f"^{arch} has one output and no depths: depth must be 4, got 2$"):
            build_network(arch, filters=SMALL, depth=2)


@pytest.mark.parametrize("call", [lambda: build_network("vnet"), lambda: has_depths("vnet")])
def test_unknown_arch_names_the_choices_on_one_line(call) -> None:
    with pytest.raises(ValueError) as caught:
        call()
    assert str(caught.value) == "arch must be one of anunet, unet, r2unet, unetpp, attunet, attr2unet, got 'vnet'"


@pytest.mark.parametrize(
    "kwargs,message",
    [({"depth": 0}, "depth"), ({"depth": 2.0}, "depth"), ({"in_channels": 0}, "in_channels"), ({"filters": (8, 16)}, "filters")],
)
@pytest.mark.parametrize("arch", ["unet", "unetpp"])
def test_bad_build_arguments_raise(arch: str, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_network(arch, **kwargs)


def test_lazy_exports() -> None:
    import anunet_core
    from anunet_core.baselines import attr2unet, attunet, r2unet, unetpp

    assert anunet_core.UNet is UNet and anunet_core.UNetPlusPlus is unetpp.UNetPlusPlus
    assert anunet_core.R2UNet is r2unet.R2UNet and anunet_core.AttentionUNet is attunet.AttentionUNet
    assert anunet_core.AttentionR2UNet is attr2unet.AttentionR2UNet
    assert anunet_core.build_network is build_network


# --- one interface for the platform: config, depths, pruning, FLOPs, the inference fast path -----


@pytest.mark.parametrize("arch", ARCHS)
def test_network_config_rebuilds_the_network(networks, arch: str) -> None:
    from anunet_core.baselines import arch_of, network_config, network_from_config

    network = networks[arch]
    assert arch_of(network) == arch
    config = network_config(network)
    assert config == {"arch": arch, "in_channels": 1, "filters": [32, 64, 128, 256, 512], "depth": 4}
    rebuilt = network_from_config(config)
    assert type(rebuilt) is type(network)
    rebuilt.load_state_dict(network.state_dict(), strict=True)
    rebuilt.eval()
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(rebuilt(x)[-1], network(x)[-1])


def test_a_config_without_arch_is_anunet() -> None:
    from anunet_core.baselines import network_from_config

    assert type(network_from_config({"in_channels": 1, "filters": list(SMALL), "depth": 2})) is ANUNet


@pytest.mark.parametrize("arch", ARCHS)
def test_output_depths_and_at_depth(networks, arch: str) -> None:
    from anunet_core.baselines import at_depth, output_depths

    network = networks[arch]
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    if arch in NESTED_ARCHS:
        assert output_depths(network) == (1, 2, 3, 4)
        assert output_depths(at_depth(network, 2)) == (1, 2)
        with torch.no_grad():
            torch.testing.assert_close(at_depth(network, 2)(x)[-1], network(x)[1], rtol=0, atol=1e-5)
    else:
        assert output_depths(network) == (4,)
        copy = at_depth(network, 4)
        assert copy is not network
        with torch.no_grad():
            assert torch.equal(copy(x)[0], network(x)[0])
        with pytest.raises(ValueError, match=f"{arch} has one output and no depths: depth must be 4"):
            at_depth(network, 3)
    with pytest.raises(TypeError, match="not a network of anunet_core.baselines.NETWORKS"):
        output_depths(nn.Conv2d(1, 1, 1))


@pytest.mark.parametrize("arch", ARCHS)
def test_network_gflops_is_what_the_flop_counter_counts(arch: str) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from anunet_core.baselines import network_gflops, output_depths

    torch.manual_seed(0)
    network = build_network(arch, filters=SMALL).eval()
    gflops = network_gflops(network, 32, 32)
    assert tuple(gflops) == output_depths(network)
    assert all(b > a for a, b in zip(list(gflops.values()), list(gflops.values())[1:]))  # cumulative
    x = torch.zeros(1, 1, 32, 32)
    for depth, value in gflops.items():
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            network(x, depth=depth) if arch in NESTED_ARCHS else network(x)
        assert value == pytest.approx(counter.get_total_flops() / 1e9, rel=1e-9)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_inference_fast_path_computes_the_same_function(networks, arch: str) -> None:
    from anunet_core.adaptive import segment_fixed
    from anunet_core.baselines import network_gflops
    from anunet_core.inference import optimize_for_inference

    network = networks[arch]
    fast = optimize_for_inference(network)
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = network(x)
    got = fast(x)
    assert len(got) == len(expected)
    torch.testing.assert_close(got[-1], expected[-1], rtol=1e-4, atol=1e-4)
    record = segment_fixed(fast, x, 4, batch_size=2, gflops=network_gflops(network, 32, 32))
    assert record.probs.shape == (3, 32, 32)
    assert record.exit_depth.tolist() == [4, 4, 4]
    torch.testing.assert_close(torch.from_numpy(record.probs.astype("float32")), torch.sigmoid(expected[-1][:, 0]),
                               rtol=0, atol=2e-3)
