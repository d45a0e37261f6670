"""The networks of the paper's comparison (Tables 2-5), and the one registry that builds them.

One network per module: :mod:`~anunet_core.baselines.unet` (U-Net),
:mod:`~anunet_core.baselines.r2unet` (R2U-Net and its recurrent residual block),
:mod:`~anunet_core.baselines.unetpp` (UNet++), :mod:`~anunet_core.baselines.attunet` (Attention
U-Net) and :mod:`~anunet_core.baselines.attr2unet` (Attention R2U-Net); ANU-Net itself is
:mod:`anunet_core.model`. All share ANU-Net's filters ``(32, 64, 128, 256, 512)`` and blocks, so
the comparison measures the architectures, not their widths, and one interface:
``network(x, depth=None)`` with ``x`` of shape ``(B, in_channels, H, W)`` (``H`` and ``W``
multiples of 16) returns a list of ``(B, 1, H, W)`` logits, one per depth for the nested
networks (:data:`~anunet_core.vocabulary.NESTED_ARCHS`, which prune), one for the others.

The architecture names are the vocabulary's :data:`~anunet_core.vocabulary.ARCHS`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from anunet_core.baselines.attr2unet import AttentionR2UNet
from anunet_core.baselines.attunet import AttentionUNet
from anunet_core.baselines.r2unet import R2UNet
from anunet_core.baselines.unet import UNet
from anunet_core.baselines.unetpp import UNetPlusPlus
from anunet_core.model import PAPER_FILTERS, ANUNet, NestedUNet, prune
from anunet_core.vocabulary import MAX_DEPTH, NESTED_ARCHS, validate_arch, validate_depth

__all__ = [
    "CITATIONS",
    "NETWORKS",
    "AttentionR2UNet",
    "AttentionUNet",
    "R2UNet",
    "UNet",
    "UNetPlusPlus",
    "arch_of",
    "at_depth",
    "build_network",
    "has_depths",
    "network_config",
    "network_from_config",
    "network_gflops",
    "output_depths",
]

NETWORKS: Mapping[str, type[nn.Module]] = MappingProxyType(
    {
        "anunet": ANUNet,
        "unet": UNet,
        "r2unet": R2UNet,
        "unetpp": UNetPlusPlus,
        "attunet": AttentionUNet,
        "attr2unet": AttentionR2UNet,
    }
)
"""Architecture name (:data:`~anunet_core.vocabulary.ARCHS`) -> its network class."""

CITATIONS: Mapping[str, str] = MappingProxyType(
    {
        "anunet": "Li C, Tan Y, Chen W, et al. ANU-Net: Attention-based nested U-Net to exploit full "
        "resolution features for medical image segmentation. Computers & Graphics 90 (2020) 11-20.",
        "unet": "Ronneberger O, Fischer P, Brox T. U-Net: Convolutional networks for biomedical image "
        "segmentation. MICCAI 2015, LNCS 9351, 234-241.",
        "r2unet": "Alom MZ, Hasan M, Yakopcic C, Taha TM, Asari VK. Recurrent residual convolutional neural "
        "network based on U-Net (R2U-Net) for medical image segmentation. arXiv:1802.06955 (2018).",
        "unetpp": "Zhou Z, Siddiquee MMR, Tajbakhsh N, Liang J. UNet++: A nested U-Net architecture for "
        "medical image segmentation. DLMIA 2018, LNCS 11045, 3-11.",
        "attunet": "Oktay O, Schlemper J, Le Folgoc L, et al. Attention U-Net: Learning where to look for "
        "the pancreas. MIDL 2018, arXiv:1804.03999.",
        "attr2unet": "Alom MZ, et al. arXiv:1802.06955 (2018) with the attention gates of Oktay O, et al. "
        "arXiv:1804.03999 (2018), as compared in the ANU-Net paper (Tables 2-5).",
    }
)
"""Architecture name -> the reference it implements."""

def has_depths(arch: str) -> bool:
    """True for the nested networks (ANU-Net, UNet++): their heads are depths 1..4 and they
    prune; ``ValueError`` for a name not in :data:`~anunet_core.vocabulary.ARCHS`."""
    return validate_arch(arch) in NESTED_ARCHS


def build_network(
    arch: str, in_channels: int = 1, filters: Sequence[int] = PAPER_FILTERS, depth: int = MAX_DEPTH
) -> nn.Module:
    """A freshly initialised network of architecture ``arch`` (one of ``ARCHS``).

    Args:
        arch: ``anunet``, ``unet``, ``r2unet``, ``unetpp``, ``attunet`` or ``attr2unet``.
        in_channels: channels of the input slice. Defaults to 1.
        filters: channels of levels 0-4. Defaults to ``(32, 64, 128, 256, 512)``.
        depth: the deepest output, 1..4; below 4 only for the nested networks
            (:func:`has_depths`), which then hold just that depth's modules. Defaults to 4.

    Raises ``ValueError`` (one line, naming the valid choices) for an unknown ``arch``, a bad
    ``depth``, or a depth below 4 for a network without depths.
    """
    name = validate_arch(arch)
    validate_depth(depth)
    if name in NESTED_ARCHS:
        return NETWORKS[name](in_channels=in_channels, filters=filters, depth=depth)
    if depth != MAX_DEPTH:
        raise ValueError(f"{name} has one output and no depths: depth must be {MAX_DEPTH}, got {depth!r}")
    return NETWORKS[name](in_channels=in_channels, filters=filters)


def arch_of(network: nn.Module) -> str:
    """The architecture name of a network built by :func:`build_network` (``TypeError`` for any
    other module)."""
    for name, cls in NETWORKS.items():
        if type(network) is cls:
            return name
    raise TypeError(f"not a network of anunet_core.baselines.NETWORKS: {type(network).__name__}")


def output_depths(network: nn.Module) -> tuple[int, ...]:
    """The depth of each element of ``network(x)``'s list: ``1..network.depth`` for the nested
    networks, ``(4,)`` for the one output of the others (their only depth is the full one)."""
    if isinstance(network, NestedUNet):
        return tuple(range(1, network.depth + 1))
    arch_of(network)
    return (network.depth,)


def at_depth(network: nn.Module, depth: int) -> nn.Module:
    """The standalone depth-``depth`` network: :func:`~anunet_core.model.prune` for the nested
    networks; for the others ``depth`` must be their one depth (4), and a copy is returned.
    The source is never modified."""
    if isinstance(network, NestedUNet):
        return prune(network, depth)
    if depth != network.depth:
        raise ValueError(f"{arch_of(network)} has one output and no depths: depth must be {network.depth}, got {depth!r}")
    return copy.deepcopy(network)


def network_config(network: nn.Module) -> dict[str, Any]:
    """The constructor arguments that rebuild ``network`` (:func:`network_from_config`): JSON-safe
    ``{"arch", "in_channels", "filters", "depth"}``."""
    return {"arch": arch_of(network), "in_channels": int(network.in_channels), "filters": list(network.filters),
            "depth": int(network.depth)}


def network_from_config(config: Mapping[str, Any]) -> nn.Module:
    """A fresh (untrained) network of :func:`network_config`'s dict; a config without ``arch``
    (written before the baselines existed) is ANU-Net's."""
    return build_network(str(config.get("arch", "anunet")), in_channels=int(config["in_channels"]),
                         filters=tuple(int(f) for f in config["filters"]), depth=int(config["depth"]))


def network_gflops(network: nn.Module, height: int, width: int) -> dict[int, float]:
    """GFLOP per ``height x width`` slice up to each output depth (:func:`output_depths`),
    counting convolutions only (one multiply-add = 2 FLOP), as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them: ANU-Net's closed form
    (:func:`~anunet_core.anytime.depth_gflops`); for the others one counted forward per depth
    on a ``(1, C, height, width)`` input (on a CPU copy, without gradients)."""
    from torch.utils.flop_counter import FlopCounterMode

    from anunet_core.anytime import depth_gflops

    if isinstance(network, ANUNet):
        return depth_gflops(network, height, width)
    reference = copy.deepcopy(network).to(device="cpu", dtype=torch.float32).eval()
    x = torch.zeros(1, network.in_channels, height, width)
    result = {}
    for depth in output_depths(network):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            reference(x, depth=depth) if isinstance(network, NestedUNet) else reference(x)
        result[depth] = counter.get_total_flops() / 1e9
    return result
