"""Attention R2U-Net: R2U-Net's recurrent residual blocks with Attention U-Net's gated skips.

Based on: Alom MZ, et al. arXiv:1802.06955 (2018) and Oktay O, et al. arXiv:1804.03999 (2018)
combined, as in the ANU-Net paper's comparison (Tables 2-5, "Attention R2U-Net").

Decoder node ``X_{i,4-i} = RRCNN(cat[ag(X_{i,0}, g), g])`` with ``g = up_i(X_{i+1,3-i})``;
every node is a :class:`~anunet_core.baselines.r2unet.RecurrentResidualBlock` and every gate
ANU-Net's :class:`~anunet_core.model.AttentionGate`. Levels, filters ``(32, 64, 128, 256,
512)``, up blocks and head are :class:`~anunet_core.baselines.unet.UNet`'s.
"""

from __future__ import annotations

from anunet_core.baselines.r2unet import R2UNet


class AttentionR2UNet(R2UNet):
    """Attention R2U-Net for binary organ segmentation of 2D slices.

    Args:
        in_channels: channels of the input slice. Defaults to 1.
        filters: channels of levels 0-4. Defaults to ``(32, 64, 128, 256, 512)``.

    ``forward(x, depth=None)``: ``x`` is ``(B, in_channels, H, W)`` with ``H`` and ``W``
    divisible by 16; returns ``[logits]``, one ``(B, 1, H, W)`` map; ``depth`` may only be
    ``None`` or 4 (see :class:`~anunet_core.baselines.unet.UNet`).

    Example::

        >>> [tuple(t.shape) for t in AttentionR2UNet()(torch.zeros(1, 1, 64, 64))]
        [(1, 1, 64, 64)]
    """

    attention_gates = True
