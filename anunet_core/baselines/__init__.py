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

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from torch import nn

from anunet_core.baselines.attr2unet import AttentionR2UNet
from anunet_core.baselines.attunet import AttentionUNet
from anunet_core.baselines.r2unet import R2UNet
from anunet_core.baselines.unet import UNet
from anunet_core.baselines.unetpp import UNetPlusPlus
from anunet_core.model import PAPER_FILTERS, ANUNet
from anunet_core.vocabulary import MAX_DEPTH, NESTED_ARCHS, validate_arch, validate_depth

__all__ = [
    "CITATIONS",
    "NETWORKS",
    "AttentionR2UNet",
    "AttentionUNet",
    "R2UNet",
    "UNet",
    "UNetPlusPlus",
    "build_network",
    "has_depths",
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
