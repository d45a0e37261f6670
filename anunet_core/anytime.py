"""Anytime inference: deepen an ANU-Net one depth at a time without recomputing anything.

Depth ``d`` of ANU-Net needs the nodes ``X_{i,j}`` with ``i + j <= d`` (see
:func:`anunet_core.model.nodes_at_depth`), so going from depth ``d`` to ``d + 1`` needs only
the anti-diagonal ``i + j = d + 1``. Its nodes are computed encoder first: ``X_{d+1,0}`` from
``X_{d,0}``, then ``X_{i,j}`` for ``i = d, ..., 0`` from ``X_{i+1,j-1}`` (the node just computed
on the same diagonal) and ``X_{i,0}, ..., X_{i,j-1}`` (earlier diagonals). The head of the new
``X_{0,d+1}`` gives the depth-``d + 1`` logits, equal to ``model(x, depth=d + 1)[-1]`` up to
float rounding.

:func:`anytime_start` computes depth 1 (``X_{0,0}``, ``X_{1,0}``, ``X_{0,1}``);
:func:`anytime_deepen` adds one diagonal, optionally for a subset of the batch (the slices still
being deepened), and keeps in the :class:`NodeCache` only what a later diagonal (up to
``network.depth``) reads.

Memory (what is cached per slice). A later diagonal reads ``X_{i,k}`` as long as a node
``X_{i,j}``, ``j > k``, with ``i + j <= network.depth`` is still to come, i.e. whenever
``i + k < network.depth``. So below the network's depth the cache holds every node computed so
far, and at ``network.depth`` it holds nothing. At depth ``d < network.depth`` that is, per slice,

    sum over i + j <= d of f_i * (H / 2**i) * (W / 2**i) * itemsize  bytes,

where level ``i`` holds ``d + 1 - i`` maps of ``f_i`` channels at a quarter of the previous
level's pixels. Level 0 dominates: up to ``d + 1 <= 4`` maps of ``f_0 = 32`` channels at full
resolution. For the paper's filters ``(32, 64, 128, 256, 512)`` at 256 x 256 in float32 the
largest cache (depth 3 of a depth-4 network) is 4 * 32 * 65536 * 4 B = 32 MiB at level 0, plus
12 MiB, 4 MiB and 1 MiB at levels 1-3: 49 MiB (51,380,224 B) per slice, 3.1 GiB for a batch of
64 slices. :func:`cache_bytes_per_slice` gives the exact figure for any network, depth and size.
The transient activations of the diagonal being computed come on top; the largest is the
concatenated input of ``X_{0,d+1}``, ``(d + 2) * f_0`` channels at full resolution (40 MiB at
depth 4 in the example). A plain ``network(x, depth=d)`` holds every node too, so the anytime
path peaks at about the memory of the full forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from anunet_core.model import ANUNet, nodes_at_depth


@dataclass
class NodeCache:
    """The nodes of an anytime forward that later depths still read.

    Attributes:
        nodes: ``X_{i,j}`` by ``(i, j)``, each ``(B, f_i, H / 2**i, W / 2**i)``; only the nodes
            a later diagonal of the network needs (empty at the network's own depth).
        depth: the deepest head computed so far, 1..``network.depth``.
    """

    nodes: dict[tuple[int, int], torch.Tensor]
    depth: int
    _batch: int = field(default=0, repr=False)

    @property
    def batch(self) -> int:
        """``B``: the number of slices this cache is for."""
        for tensor in self.nodes.values():
            return int(tensor.shape[0])
        return self._batch

    def select(self, rows: torch.Tensor) -> NodeCache:
        """The cache of the slices ``rows`` (an int64 index or a ``(B,)`` bool mask), in that order."""
        index = _as_index(rows, self.batch)
        nodes = {key: tensor[index.to(tensor.device)] for key, tensor in self.nodes.items()}
        return NodeCache(nodes=nodes, depth=self.depth, _batch=int(index.numel()))

    def nbytes(self) -> int:
        """Bytes held by the cached nodes."""
        return sum(t.numel() * t.element_size() for t in self.nodes.values())


def _as_index(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """``rows`` as a 1-D int64 index into a batch of ``batch``; ``ValueError`` when out of range."""
    rows = torch.as_tensor(rows)
    if rows.ndim != 1:
        raise ValueError(f"rows must be a 1-D index or mask of the batch, got shape {tuple(rows.shape)}")
    if rows.dtype == torch.bool:
        if rows.numel() != batch:
            raise ValueError(f"a row mask must have {batch} entries (the batch), got {rows.numel()}")
        return rows.nonzero().flatten()
    if rows.dtype.is_floating_point or rows.dtype.is_complex:
        raise ValueError(f"rows must be an integer index or a bool mask, got dtype {rows.dtype}")
    rows = rows.long()
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= batch):
        raise ValueError(f"rows must index a batch of {batch}, got values {int(rows.min())}..{int(rows.max())}")
    return rows


def _still_needed(i: int, j: int, depth: int, max_depth: int) -> bool:
    """Whether a diagonal ``depth + 1 .. max_depth`` reads ``X_{i,j}``: one of them holds a node
    ``X_{i,k}``, ``k > j``, exactly when ``depth < max_depth`` and ``i + j < max_depth``."""
    return depth < max_depth and i + j < max_depth


def _keep(network: ANUNet, nodes: dict[tuple[int, int], torch.Tensor], depth: int, batch: int) -> NodeCache:
    kept = {key: t for key, t in nodes.items() if _still_needed(*key, depth, network.depth)}
    return NodeCache(nodes=kept, depth=depth, _batch=batch)


def anytime_start(network: ANUNet, x: torch.Tensor) -> tuple[NodeCache, torch.Tensor]:
    """Depth 1 of ``network`` on ``x`` ``(B, C, H, W)``: the nodes ``X_{0,0}``, ``X_{1,0}``,
    ``X_{0,1}``.

    Returns ``(cache, logits)``: the cache at depth 1 and head 1's logits ``(B, 1, H, W)``, equal
    to ``network(x, depth=1)[0]``. Runs in the network's mode (eval or train) and with autograd as
    the caller has it; ``H`` and ``W`` must be multiples of ``2 ** network.depth``.
    """
    network.check_input(x, 1)
    nodes: dict[tuple[int, int], torch.Tensor] = {}
    for i, j in nodes_at_depth(1):
        nodes[(i, j)] = network.node(nodes, i, j, x)  # exactly as ANUNet.forward computes it
    logits = network.heads["head_1"](nodes[(0, 1)])
    return _keep(network, nodes, 1, int(x.shape[0])), logits


def anytime_deepen(
    network: ANUNet, cache: NodeCache, rows: torch.Tensor | None = None
) -> tuple[NodeCache, torch.Tensor]:
    """One depth more: restrict ``cache`` to ``rows`` (an int64 index or bool mask of its batch;
    ``None`` = all) and compute only the anti-diagonal ``i + j = cache.depth + 1``.

    Returns ``(cache, logits)``: the cache at ``cache.depth + 1`` for those rows (the input cache
    is not modified) and the new head's logits ``(len(rows), 1, H, W)``, equal to
    ``network(x[rows], depth=cache.depth + 1)[-1]``. Raises ``ValueError`` past ``network.depth``.
    """
    depth = cache.depth + 1
    if depth > network.depth:
        raise ValueError(f"cannot deepen past depth {network.depth} of this network (cache is at depth {cache.depth})")
    if rows is not None:
        cache = cache.select(rows)
    nodes = dict(cache.nodes)
    for i in range(depth, -1, -1):  # encoder node X_{depth,0} first, X_{0,depth} last
        nodes[(i, depth - i)] = network.node(nodes, i, depth - i)
    logits = network.heads[f"head_{depth}"](nodes[(0, depth)])
    return _keep(network, nodes, depth, cache.batch), logits


def cache_bytes_per_slice(
    network: ANUNet, depth: int, height: int, width: int, dtype: torch.dtype = torch.float32
) -> int:
    """Bytes per slice that a :class:`NodeCache` at ``depth`` of ``network`` holds for
    ``height x width`` slices of ``dtype``: the nodes ``i + j <= depth`` below the network's
    depth, nothing at it (see the module docstring for the bound and a worked number)."""
    if not 1 <= depth <= network.depth:
        raise ValueError(f"depth must be in 1..{network.depth} for this network, got {depth!r}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    f = network.filters
    return sum(
        f[i] * (height >> i) * (width >> i) * itemsize
        for i, j in nodes_at_depth(depth)
        if _still_needed(i, j, depth, network.depth)
    )


def depth_gflops(network: ANUNet, height: int, width: int) -> dict[int, float]:
    """GFLOP per ``height x width`` slice of ``network(x, depth=d)`` for ``d = 1..network.depth``:
    cumulative over the nodes ``i + j <= d`` and heads ``1..d``, counting the convolutions only
    (one multiply-add = 2 FLOP; BatchNorm, ReLU, gating products and pooling are not counted),
    as ``torch.utils.flop_counter.FlopCounterMode`` does. ``height`` and ``width`` are the
    network's input size (multiples of ``2 ** network.depth``)."""
    multiple = 2**network.depth
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise ValueError(f"height and width must be positive multiples of {multiple}, got {height}x{width}")
    f = network.filters

    def pixels(level: int) -> int:
        return (height >> level) * (width >> level)

    def node_macs(i: int, j: int) -> int:
        if j == 0:
            c_in = network.in_channels if i == 0 else f[i - 1]
            return (c_in * f[i] * 9 + f[i] * f[i] * 9) * pixels(i)
        up = f[i + 1] * f[i] * 4 * pixels(i + 1)  # 2x2 transposed conv over the coarser grid
        f_int = network.gates[f"ag_{i}_{j}"].W_g[0].out_channels
        gate = (2 * f[i] * f_int + f_int) * pixels(i)  # W_g, W_x, psi (1x1)
        block = ((j + 1) * f[i] * f[i] * 9 + f[i] * f[i] * 9) * pixels(i)
        return up + gate + block

    result: dict[int, float] = {}
    macs = node_macs(0, 0)
    for depth in range(1, network.depth + 1):
        macs += sum(node_macs(i, depth - i) for i in range(depth + 1))
        macs += f[0] * pixels(0)  # head_depth, 1x1 conv to one channel
        result[depth] = 2 * macs / 1e9
    return result
