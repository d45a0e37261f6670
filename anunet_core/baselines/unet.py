"""U-Net, the plain encoder-decoder the other baselines build on.

Based on: Ronneberger O, Fischer P, Brox T. "U-Net: Convolutional networks for biomedical image
segmentation." MICCAI 2015, LNCS 9351, 234-241 (ANU-Net paper, Tables 2-5).

In the nested grid's names (UNet++, Fig. 1 of Zhou et al.), U-Net is the grid's outer path:
the encoder nodes ``X_{i,0}`` (``i = 0..4``) and the decoder nodes ``X_{i,4-i}`` (``i = 3..0``)
with ``X_{i,4-i} = block(cat[X_{i,0}, up_i(X_{i+1,3-i})])`` (``2 * f_i`` channels), and one
1x1 head on ``X_{0,4}``. The attention and recurrent variants only change the skip (an attention
gate on ``X_{i,0}``) or the block (a recurrent residual block): :class:`UNet` takes both as
class attributes, and :mod:`~anunet_core.baselines.attunet`,
:mod:`~anunet_core.baselines.r2unet` and :mod:`~anunet_core.baselines.attr2unet` set them.

For a fair comparison with ANU-Net every baseline uses ANU-Net's filters ``(32, 64, 128, 256,
512)``, its conv block (two 3x3 conv-BN-ReLU), its up block (2x2 transposed conv-BN-ReLU) and
its attention gate, rather than each original paper's widths and up-sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import nn

from anunet_core.model import PAPER_FILTERS, AttentionGate, ConvBlock, UpBlock, check_channels, check_image, gate_channels
from anunet_core.vocabulary import MAX_DEPTH


class UNet(nn.Module):
    """U-Net for binary organ segmentation of 2D slices (one output, no deep supervision).

    Args:
        in_channels: channels of the input slice. Defaults to 1.
        filters: channels of levels 0-4. Defaults to ``(32, 64, 128, 256, 512)``.

    ``forward(x, depth=None)`` takes ``x`` of shape ``(B, in_channels, H, W)`` with ``H`` and
    ``W`` divisible by 16 and returns a one-element list ``[logits]``, ``(B, 1, H, W)``: the same
    interface as :class:`~anunet_core.model.ANUNet` (whose list holds one map per depth). U-Net
    has no depths to prune, so ``depth`` may only be ``None`` or 4 (:attr:`depth`, the one
    output's depth); anything else is a ``ValueError``.

    Example::

        >>> model = UNet()
        >>> [tuple(t.shape) for t in model(torch.zeros(2, 1, 256, 256))]
        [(2, 1, 256, 256)]
    """

    block_type: ClassVar[Callable[[int, int], nn.Module]] = ConvBlock
    """The block of every node, ``(in_channels, out_channels) -> module``."""
    attention_gates: ClassVar[bool] = False
    """Whether the decoder reads each skip ``X_{i,0}`` through an attention gate ``ag_{i}_{4-i}``."""

    def __init__(self, in_channels: int = 1, filters: Sequence[int] = PAPER_FILTERS) -> None:
        super().__init__()
        self.filters = check_channels(in_channels, filters)
        self.in_channels = in_channels
        self.depth = MAX_DEPTH
        f = self.filters

        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        # Encoder X_{i,0}, then decoder X_{i,4-i} on 2 * f_i channels (skip, upsampled node).
        self.blocks = nn.ModuleDict()
        # Gates ag_{i}_{4-i} select from the skip X_{i,0} for decoder node X_{i,4-i}.
        self.gates = nn.ModuleDict()
        for i in range(MAX_DEPTH + 1):
            self.blocks[f"x_{i}_0"] = self.block_type(in_channels if i == 0 else f[i - 1], f[i])
        for i in reversed(range(MAX_DEPTH)):
            j = MAX_DEPTH - i
            self.blocks[f"x_{i}_{j}"] = self.block_type(2 * f[i], f[i])
            if self.attention_gates:
                self.gates[f"ag_{i}_{j}"] = AttentionGate(f_g=f[i], f_l=f[i], f_int=gate_channels(i, f))
        # up_{i}: level i+1 -> level i.
        self.ups = nn.ModuleDict({f"up_{i}": UpBlock(f[i + 1], f[i]) for i in range(MAX_DEPTH)})
        self.head = nn.Conv2d(f[0], 1, kernel_size=1)

    def check_input(self, x: torch.Tensor, depth: int | None) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, H, W)`` with sides divisible
        by 16 and ``depth`` is ``None`` or 4."""
        if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth != self.depth):
            raise ValueError(
                f"depth must be None or {self.depth} for {type(self).__name__} (one output, no depths), got {depth!r}"
            )
        check_image(x, self.in_channels, 2**MAX_DEPTH)

    def forward(self, x: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        self.check_input(x, depth)
        skips = []
        node = x
        for i in range(MAX_DEPTH + 1):
            node = self.blocks[f"x_{i}_0"](node if i == 0 else self.pool(node))
            skips.append(node)
        for i in reversed(range(MAX_DEPTH)):
            j = MAX_DEPTH - i
            g = self.ups[f"up_{i}"](node)
            skip = self.gates[f"ag_{i}_{j}"](g, skips[i]) if self.attention_gates else skips[i]
            # 2 * f_i channels: the (gated) skip X_{i,0}, the upsampled node
            node = self.blocks[f"x_{i}_{j}"](torch.cat([skip, g], dim=1))
        return [self.head(node)]
