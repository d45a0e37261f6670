"""R2U-Net: U-Net whose blocks are recurrent residual convolutional (RRCNN) blocks.

Based on: Alom MZ, Hasan M, Yakopcic C, Taha TM, Asari VK. "Recurrent residual convolutional
neural network based on U-Net (R2U-Net) for medical image segmentation." arXiv:1802.06955
(2018), section III, Fig. 2-4 (ANU-Net paper, ref. [41], Fig. 2, Tables 2-5).

A recurrent convolutional layer (RCL) unfolded over ``t`` steps: ``h_0 = conv(x)`` and
``h_k = conv(x + h_{k-1})`` for ``k = 1..t``, ``conv`` being 3x3 conv-BN-ReLU: Alom et al.'s
``O(t) = w_f * x + w_r * h(t-1) + b`` with the feed-forward and recurrent weights tied, as in
the widely used PyTorch implementation of R2U-Net. The RRCNN block maps ``C_in -> C_out`` with a
1x1 conv, then adds two stacked RCLs to it (the residual unit). ``t = 2`` as in the paper.

Levels, filters ``(32, 64, 128, 256, 512)``, up blocks and head are :class:`UNet`'s (ANU-Net's
widths, for a fair comparison).
"""

from __future__ import annotations

import torch
from torch import nn

from anunet_core.baselines.unet import UNet

RECURRENCE_STEPS = 2
"""``t``: the recurrent steps of each RCL after its feed-forward one (Alom et al. use t = 2)."""


class RecurrentConv(nn.Module):
    """One recurrent convolutional layer unfolded over ``t`` steps (weights shared by every step).

    Args:
        channels: channels in and out.
        t: recurrent steps after the feed-forward one. Defaults to 2.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, t: int = RECURRENCE_STEPS) -> None:
        super().__init__()
        if t < 1:
            raise ValueError(f"t must be >= 1, got {t}")
        self.t = t
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        for _ in range(self.t):
            h = self.conv(x + h)
        return h


class RecurrentResidualBlock(nn.Module):
    """The RRCNN block (Alom et al., Fig. 4d): ``y = x' + RCL(RCL(x'))`` with ``x' = conv1x1(x)``.

    Args:
        in_channels: channels of ``x``.
        out_channels: channels of ``y``.
        t: recurrent steps of each RCL. Defaults to 2.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, t: int = RECURRENCE_STEPS) -> None:
        super().__init__()
        self.conv_1x1 = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.rcnn = nn.Sequential(RecurrentConv(out_channels, t), RecurrentConv(out_channels, t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_1x1(x)
        return x + self.rcnn(x)


class R2UNet(UNet):
    """R2U-Net for binary organ segmentation of 2D slices: :class:`UNet` with RRCNN blocks.

    Args:
        in_channels: channels of the input slice. Defaults to 1.
        filters: channels of levels 0-4. Defaults to ``(32, 64, 128, 256, 512)``.

    ``forward(x, depth=None)``: ``x`` is ``(B, in_channels, H, W)`` with ``H`` and ``W``
    divisible by 16; returns ``[logits]``, one ``(B, 1, H, W)`` map; ``depth`` may only be
    ``None`` or 4 (see :class:`UNet`).

    Example::

        >>> [tuple(t.shape) for t in R2UNet()(torch.zeros(1, 1, 64, 64))]
        [(1, 1, 64, 64)]
    """

    block_type = RecurrentResidualBlock
