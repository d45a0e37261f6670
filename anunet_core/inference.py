"""The deployment fast path of a (pruned) ANU-Net, or of any network of the comparison.

A trained network in eval mode spends a good share of its CPU time outside the convolutions:
every BatchNorm is a separate pass over memory. For inference this module

1. prunes to the requested depth (only the nodes that output ``X_{0,d}`` needs),
2. folds every BatchNorm into the convolution before it (``y = s * conv(x) + t`` becomes one
   convolution with scaled weights and a shifted bias; also for the transposed convs of the
   up blocks and the 1x1 convs of the attention gates),
3. stores weights and runs activations in ``channels_last`` memory format, which oneDNN's
   CPU convolutions and cuDNN's tensor-core kernels prefer,
4. runs under ``torch.inference_mode``.

The result computes the same function as ``model.eval()(x, depth=d)`` up to float rounding
(tested to 1e-4 on logits).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from anunet_core.anytime import NodeCache, anytime_deepen, anytime_start
from anunet_core.baselines import at_depth
from anunet_core.model import ANUNet


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every ``Conv2d``/``ConvTranspose2d`` directly followed by a ``BatchNorm2d`` inside
    an ``nn.Sequential`` into one convolution, in place; the BatchNorm becomes ``Identity``.

    The module must be in eval mode (running statistics are used). Returns ``module``.
    """
    if module.training:
        raise ValueError("fold_batchnorm needs a module in eval mode (call .eval() first)")
    for child in module.modules():
        if not isinstance(child, nn.Sequential):
            continue
        for index in range(len(child) - 1):
            conv, norm = child[index], child[index + 1]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(norm, nn.BatchNorm2d):
                child[index] = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, nn.ConvTranspose2d))
                child[index + 1] = nn.Identity()
    return module


class InferenceNet(nn.Module):
    """A frozen, BatchNorm-folded, ``channels_last`` depth-``d`` ANU-Net for inference (or one
    of :mod:`anunet_core.baselines`, whose list holds its one output; :meth:`start` and
    :meth:`deepen` need ANU-Net).

    Build it with :func:`optimize_for_inference`. ``forward(x)`` takes ``(B, C, H, W)`` and
    returns the ``d`` head logits, each ``(B, 1, H, W)``, like the source network at depth
    ``d``; gradients are never tracked. :meth:`start` and :meth:`deepen` run the same network one
    depth at a time (:mod:`anunet_core.anytime`), for per-slice adaptive depth.
    """

    def __init__(self, network: ANUNet) -> None:
        super().__init__()
        self.network = network
        self.depth = network.depth

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            return self.network(x.contiguous(memory_format=torch.channels_last))

    def start(self, x: torch.Tensor) -> tuple[NodeCache, torch.Tensor]:
        """Depth 1 of an anytime forward (:func:`~anunet_core.anytime.anytime_start`) on ``x``
        ``(B, C, H, W)``: ``(cache, head-1 logits (B, 1, H, W))``."""
        with torch.inference_mode():
            return anytime_start(self.network, x.contiguous(memory_format=torch.channels_last))

    def deepen(self, cache: NodeCache, rows: torch.Tensor | None = None) -> tuple[NodeCache, torch.Tensor]:
        """One depth more for the slices ``rows`` of ``cache`` (``None`` = all)
        (:func:`~anunet_core.anytime.anytime_deepen`): ``(cache, logits (len(rows), 1, H, W))``;
        ``ValueError`` past ``self.depth``."""
        with torch.inference_mode():
            return anytime_deepen(self.network, cache, rows)


def optimize_for_inference(model: nn.Module, depth: int | None = None) -> InferenceNet:
    """Prune ``model`` to ``depth`` (default: its own depth; :func:`~anunet_core.baselines.at_depth`),
    fold BatchNorm and switch to ``channels_last``. The source model is not modified."""
    depth = model.depth if depth is None else depth
    network = at_depth(model, depth) if depth != model.depth else copy.deepcopy(model)
    network.eval()
    fold_batchnorm(network)
    network.requires_grad_(False)
    network.to(memory_format=torch.channels_last)
    return InferenceNet(network).eval()
