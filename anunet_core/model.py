"""ANU-Net: attention-based nested U-Net with deep supervision and real pruning.

Based on: Li C, Tan Y, Chen W, et al. "ANU-Net: Attention-based nested U-Net to exploit full
resolution features for medical image segmentation." Computers & Graphics 90 (2020) 11-20
(sections 3.1-3.5, Fig. 3-7, Eq. 1-4, Table 6).

Node ``X_{i,j}``: level ``i`` (0 = full resolution, 4 = bottleneck), column ``j`` along the
dense skip path. With filters ``f = (32, 64, 128, 256, 512)``:

- ``X_{i,0} = conv_block(maxpool(X_{i-1,0}))`` (``X_{0,0}`` convolves the input),
- ``X_{i,j} = conv_block(cat[ag(X_{i,j-1}, g), g, X_{i,0}, ..., X_{i,j-2}])`` for ``j >= 1``,
  with ``g = up_i(X_{i+1,j-1})``: ``(j + 1) * f_i`` input channels,
- head ``j`` (a 1x1 conv) on ``X_{0,j}`` gives the depth-``j`` logits.

``up_i`` (2x2 transposed conv, stride 2, BN, ReLU; ``f_{i+1} -> f_i`` channels) is one module
per level, shared by every node of that level, as in the authors' code. These choices give
exactly the parameter counts of Table 6 (L1 0.1038M, L2 0.5134M, L3 2.1918M, L4 8.9506M).

Depth ``d`` needs only the nodes with ``i + j <= d``: ``forward(x, depth=d)`` computes just
those, and ``prune(model, d)`` returns a standalone network that holds just those modules.

The nested grid itself (nodes, ups, heads, depths, pruning) is :class:`NestedUNet`, shared with
UNet++ (:class:`anunet_core.baselines.unetpp.UNetPlusPlus`), which is the same grid without the
attention gates. :func:`check_channels` and :func:`check_image` are the constructor and input
checks every network of the project uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, TypeVar

import torch
from torch import nn

from anunet_core.vocabulary import MAX_DEPTH

PAPER_FILTERS: tuple[int, ...] = (32, 64, 128, 256, 512)


class ConvBlock(nn.Sequential):
    """Two (3x3 conv -> BatchNorm -> ReLU) layers: ``(B, C_in, H, W) -> (B, C_out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Sequential):
    """2x2 transposed conv (stride 2) -> BatchNorm -> ReLU: ``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class AttentionGate(nn.Module):
    """The attention gate of Fig. 3 / Eq. 1-3.

    ``F = ReLU(BN(W_x x) + BN(W_g g))``, ``alpha = sigmoid(BN(psi F))``, ``output = x * alpha``
    (the paper's ``W_f`` is ``W_x`` here and its ``W_theta`` is ``psi``; all 1x1 convs).

    Args:
        f_g: channels of the gating signal ``g`` (the upsampled deeper node).
        f_l: channels of the gated feature ``x`` (the same-level node).
        f_int: channels of the intermediate map ``F``.

    Shapes: ``g`` and ``x`` are ``(B, f_g, H, W)`` and ``(B, f_l, H, W)``; returns
    ``(B, f_l, H, W)``.
    """

    def __init__(self, f_g: int, f_l: int, f_int: int) -> None:
        super().__init__()
        self.W_g = nn.Sequential(nn.Conv2d(f_g, f_int, kernel_size=1), nn.BatchNorm2d(f_int))
        self.W_x = nn.Sequential(nn.Conv2d(f_l, f_int, kernel_size=1), nn.BatchNorm2d(f_int))
        self.psi = nn.Sequential(nn.Conv2d(f_int, 1, kernel_size=1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        attention = self.psi(self.relu(self.W_g(g) + self.W_x(x)))
        return x * attention


def gate_channels(level: int, filters: Sequence[int]) -> int:
    """``F_int`` of the gates at ``level``: 32 at level 0, half the level's width elsewhere."""
    return filters[0] if level == 0 else filters[level] // 2


def nodes_at_depth(depth: int) -> list[tuple[int, int]]:
    """The nodes ``(i, j)`` that output ``X_{0,depth}`` needs (``i + j <= depth``), in the
    order they are computed: anti-diagonal by anti-diagonal, encoder node first."""
    return [(k - j, j) for k in range(depth + 1) for j in range(k + 1)]


def check_channels(in_channels: int, filters: Sequence[int]) -> tuple[int, ...]:
    """``filters`` as a tuple of ints, after checking ``in_channels >= 1`` and that ``filters`` is
    five channel counts (levels 0-4) of at least 2; ``ValueError`` quoting the bad value otherwise."""
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if len(filters) != MAX_DEPTH + 1 or any(int(c) < 2 for c in filters):
        raise ValueError(f"filters must be {MAX_DEPTH + 1} channel counts >= 2, got {tuple(filters)}")
    return tuple(int(c) for c in filters)


def check_image(x: torch.Tensor, in_channels: int, multiple: int) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, H, W)`` with ``H`` and ``W``
    positive multiples of ``multiple`` (``2 ** pools``: 16 for a network that pools four times)."""
    if x.ndim != 4:
        raise ValueError(f"expected a 4-D input (B, {in_channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channel(s) (B, {in_channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] % multiple or x.shape[3] % multiple or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"expected H and W to be positive multiples of {multiple}, got {x.shape[2]}x{x.shape[3]}")


class NestedUNet(nn.Module):
    """The nested grid of nodes ``X_{i,j}`` with deep supervision, shared by ANU-Net and UNet++.

    A subclass sets :attr:`attention_gates`: ANU-Net (``True``) gates ``X_{i,j-1}`` by
    ``g = up_i(X_{i+1,j-1})`` before node ``X_{i,j}`` reads it; UNet++ (``False``) reads it as it
    is. Everything else (nodes, channel counts, ups, heads, depths, pruning) is this class.
    Arguments, shapes and ``forward`` are those of :class:`ANUNet`.
    """

    attention_gates: ClassVar[bool] = True
    """Whether node ``X_{i,j}`` reads ``X_{i,j-1}`` through an attention gate ``ag_{i}_{j}``."""

    def __init__(self, in_channels: int = 1, filters: Sequence[int] = PAPER_FILTERS, depth: int = MAX_DEPTH) -> None:
        super().__init__()
        filters = check_channels(in_channels, filters)
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be in 1..{MAX_DEPTH}, got {depth}")
        self.in_channels = in_channels
        self.filters = filters
        self.depth = depth
        f = self.filters

        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        # Conv blocks X_{i,j}; X_{i,0} is the encoder, X_{i,j>=1} convolves (j + 1) * f_i channels.
        self.blocks = nn.ModuleDict()
        # Gates ag_{i}_{j} select from X_{i,j-1} for node X_{i,j} (none without attention gates).
        self.gates = nn.ModuleDict()
        for i, j in nodes_at_depth(depth):
            if j == 0:
                self.blocks[f"x_{i}_0"] = ConvBlock(in_channels if i == 0 else f[i - 1], f[i])
            else:
                self.blocks[f"x_{i}_{j}"] = ConvBlock((j + 1) * f[i], f[i])
                if self.attention_gates:
                    self.gates[f"ag_{i}_{j}"] = AttentionGate(f_g=f[i], f_l=f[i], f_int=gate_channels(i, f))
        # up_{i}: level i+1 -> level i, shared by every node of level i.
        self.ups = nn.ModuleDict({f"up_{i}": UpBlock(f[i + 1], f[i]) for i in range(depth)})
        # Deep supervision heads on X_{0,1} .. X_{0,depth}: logits.
        self.heads = nn.ModuleDict({f"head_{j}": nn.Conv2d(f[0], 1, kernel_size=1) for j in range(1, depth + 1)})

    def check_input(self, x: torch.Tensor, depth: int) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, H, W)`` with sides divisible
        by ``2 ** self.depth`` and ``depth`` is in ``1..self.depth``."""
        if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= self.depth:
            raise ValueError(f"depth must be an int in 1..{self.depth} for this network, got {depth!r}")
        check_image(x, self.in_channels, 2**self.depth)

    def forward(self, x: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        depth = self.depth if depth is None else depth
        self.check_input(x, depth)
        nodes: dict[tuple[int, int], torch.Tensor] = {}
        outputs = []
        for i, j in nodes_at_depth(depth):
            nodes[(i, j)] = self.node(nodes, i, j, x)
            if i == 0 and j > 0:
                outputs.append(self.heads[f"head_{j}"](nodes[(0, j)]))
        return outputs

    def node(self, nodes: dict[tuple[int, int], torch.Tensor], i: int, j: int, x: torch.Tensor | None = None) -> torch.Tensor:
        """``X_{i,j}`` from the nodes it reads (``X_{i-1,0}`` for an encoder node, the input
        ``x`` for ``X_{0,0}``; else ``X_{i+1,j-1}`` and ``X_{i,0..j-1}``): ``(B, f_i, H/2^i, W/2^i)``."""
        if j == 0:
            return self.blocks[f"x_{i}_0"](x if i == 0 else self.pool(nodes[(i - 1, 0)]))
        g = self.ups[f"up_{i}"](nodes[(i + 1, j - 1)])
        previous = nodes[(i, j - 1)]
        if self.attention_gates:
            previous = self.gates[f"ag_{i}_{j}"](g, previous)
        # (j + 1) * f_i channels: X_{i,j-1} (gated for ANU-Net), upsampled node, X_{i,0} .. X_{i,j-2}
        skip = [nodes[(i, k)] for k in range(j - 1)]
        return self.blocks[f"x_{i}_{j}"](torch.cat([previous, g, *skip], dim=1))


class ANUNet(NestedUNet):
    """ANU-Net for binary organ segmentation of 2D slices.

    Args:
        in_channels: channels of the input slice. Defaults to 1.
        filters: channels of levels 0-4. Defaults to ``(32, 64, 128, 256, 512)``.
        depth: the deepest output this network holds, 1-4. ``depth=4`` is the paper's whole
            network; smaller values build a pruned network (see :func:`prune`). Defaults to 4.

    ``forward(x, depth=d)`` takes ``x`` of shape ``(B, in_channels, H, W)`` with ``H`` and
    ``W`` divisible by ``2 ** self.depth`` (16 for the whole network) and returns the list of
    the ``d`` deep-supervision outputs ``[X_{0,1}, ..., X_{0,d}]`` as logits, each
    ``(B, 1, H, W)``; apply a sigmoid for probabilities. ``d`` defaults to ``self.depth``.

    Example::

        >>> model = ANUNet()
        >>> logits = model(torch.zeros(2, 1, 256, 256), depth=3)
        >>> [tuple(t.shape) for t in logits]
        [(2, 1, 256, 256), (2, 1, 256, 256), (2, 1, 256, 256)]
    """

    attention_gates = True


Nested = TypeVar("Nested", bound=NestedUNet)


def prune(model: Nested, depth: int) -> Nested:
    """The standalone depth-``depth`` network of a trained ANU-Net (section 3.5, Fig. 7) or UNet++.

    Returns a new network of the same class with ``depth=depth`` holding copies of exactly the
    modules that ``X_{0,depth}`` needs (nodes ``i + j <= depth``, their gates, ups and heads);
    its ``forward(x)`` returns the same list as ``model(x, depth=depth)``. The source model is
    left untouched; train/eval mode is carried over.
    """
    if not isinstance(model, NestedUNet):
        raise TypeError(f"prune expects a nested network (ANUNet or UNetPlusPlus), got {type(model).__name__}")
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= model.depth:
        raise ValueError(f"depth must be an int in 1..{model.depth} for this network, got {depth!r}")
    pruned = type(model)(in_channels=model.in_channels, filters=model.filters, depth=depth)
    source = model.state_dict()
    pruned.load_state_dict({name: source[name].clone() for name in pruned.state_dict()}, strict=True)
    reference = next(model.parameters())
    pruned.to(device=reference.device, dtype=reference.dtype)
    pruned.train(model.training)
    return pruned


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (what Table 6 counts), frozen ones included."""
    return sum(p.numel() for p in model.parameters())
