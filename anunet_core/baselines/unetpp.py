"""UNet++: the nested U-Net with dense skip pathways and deep supervision, without attention.

Based on: Zhou Z, Siddiquee MMR, Tajbakhsh N, Liang J. "UNet++: A nested U-Net architecture for
medical image segmentation." DLMIA 2018, LNCS 11045, 3-11, Fig. 1 (ANU-Net paper, ref. [47],
Tables 2-5).

``X_{i,j} = conv_block(cat[X_{i,j-1}, up_i(X_{i+1,j-1}), X_{i,0}, ..., X_{i,j-2}])`` for
``j >= 1`` (``(j + 1) * f_i`` channels), and a 1x1 head on each of ``X_{0,1}..X_{0,4}``. ANU-Net
is built on this grid (its section 3) and differs only by the attention gate on ``X_{i,j-1}``,
so UNet++ is ANU-Net's :class:`~anunet_core.model.NestedUNet` without the gates: the same
nodes, filters ``(32, 64, 128, 256, 512)``, up blocks (one per level), heads, depths and
pruning (:func:`anunet_core.model.prune`). The concatenation lists Zhou et al.'s inputs
``X_{i,0..j-1}`` and the upsampled node in ANU-Net's order; a different order is only a
permutation of the first conv's input channels.
"""

from __future__ import annotations

from anunet_core.model import NestedUNet


class UNetPlusPlus(NestedUNet):
    """UNet++ for binary organ segmentation of 2D slices, with deep supervision and pruning.

    Args:
        in_channels: channels of the input slice. Defaults to 1.
        filters: channels of levels 0-4. Defaults to ``(32, 64, 128, 256, 512)``.
        depth: the deepest output this network holds, 1-4; smaller values build a pruned
            network (see :func:`anunet_core.model.prune`). Defaults to 4.

    ``forward(x, depth=d)`` takes ``x`` of shape ``(B, in_channels, H, W)`` with ``H`` and
    ``W`` divisible by ``2 ** self.depth`` and returns the ``d`` deep-supervision logits
    ``[X_{0,1}, ..., X_{0,d}]``, each ``(B, 1, H, W)``, computing only the nodes
    ``i + j <= d``; ``d`` defaults to ``self.depth``.

    Example::

        >>> model = UNetPlusPlus()
        >>> [tuple(t.shape) for t in model(torch.zeros(1, 1, 64, 64), depth=2)]
        [(1, 1, 64, 64), (1, 1, 64, 64)]
    """

    attention_gates = False
