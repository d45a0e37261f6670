"""Attention U-Net: U-Net whose decoder reads each skip through an additive attention gate.

Based on: Oktay O, Schlemper J, Le Folgoc L, et al. "Attention U-Net: Learning where to look
for the pancreas." MIDL 2018, arXiv:1804.03999, section 2, Fig. 1-2 (ANU-Net paper, ref. [46],
Tables 2-5).

Decoder node ``X_{i,4-i} = block(cat[ag(X_{i,0}, g), g])`` with ``g = up_i(X_{i+1,3-i})``: the
gating signal is the upsampled deeper node, as in ANU-Net, and the gate is ANU-Net's
:class:`~anunet_core.model.AttentionGate` with the same widths
(:func:`~anunet_core.model.gate_channels`). Levels, filters ``(32, 64, 128, 256, 512)``,
blocks and head are :class:`UNet`'s.
"""

from __future__ import annotations

from anunet_core.baselines.unet import UNet


class AttentionUNet(UNet):
    """Attention U-Net for binary organ segmentation of 2D slices: :class:`UNet` with gated skips.

    Args:
        in_channels: channels of the input slice. Defaults to 1.
        filters: channels of levels 0-4. Defaults to ``(32, 64, 128, 256, 512)``.

    ``forward(x, depth=None)``: ``x`` is ``(B, in_channels, H, W)`` with ``H`` and ``W``
    divisible by 16; returns ``[logits]``, one ``(B, 1, H, W)`` map; ``depth`` may only be
    ``None`` or 4 (see :class:`UNet`).

    Example::

        >>> [tuple(t.shape) for t in AttentionUNet()(torch.zeros(1, 1, 64, 64))]
        [(1, 1, 64, 64)]
    """

    attention_gates = True
