"""Per-slice adaptive depth: segment a case's slices, each stopping at its own head.

:func:`segment_adaptive` runs every slice to head 1 with the anytime forward
(:meth:`~anunet_core.inference.InferenceNet.start`), asks the exit rule
(:func:`anunet_core.exit_rule.exits`) which slices stop, and deepens only the others
(:meth:`~anunet_core.inference.InferenceNet.deepen` with their rows), head after head, so that no
node is computed twice and a slice pays only for the depth it reached. :func:`segment_fixed` is
the same record for a fixed depth, from one forward of the pruned network.

Both return a :class:`SliceRecord`: the exit head's probabilities of every slice, the depth each
slice stopped at, and the counts of the quality signals that come for free (agreement of the
final head with the next-shallower one, uncertain pixels) and the GFLOP spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from anunet_core.exit_rule import THRESHOLD, UNCERTAIN_BAND, ExitRule, exits, slice_signals
from anunet_core.inference import InferenceNet


@dataclass
class SliceRecord:
    """What adaptive (or fixed-depth) segmentation of one case of ``K`` slices keeps.

    Attributes:
        probs: ``(K, H, W)`` float32, the sigmoid of each slice's exit head.
        exit_depth: ``(K,)`` int64, the head (1..max depth) each slice stopped at.
        agreement_intersection: pixels (summed over slices) of final mask ∩ the next-shallower
            head's mask (mask = ``p > 0.5``).
        final_voxels: pixels of the final masks, summed over slices.
        shallower_voxels: pixels of the next-shallower heads' masks, summed over slices (a slice
            that stopped at depth 1 counts its own mask).
        uncertain_pixels: pixels of the final heads with ``p`` in :data:`UNCERTAIN_BAND`.
        gflop: GFLOP spent, the sum over slices of ``gflops[exit_depth]`` (cumulative cost of
            the path each slice took).
    """

    probs: np.ndarray
    exit_depth: np.ndarray
    agreement_intersection: int
    final_voxels: int
    shallower_voxels: int
    uncertain_pixels: int
    gflop: float

    @property
    def slices(self) -> int:
        """``K``."""
        return int(self.exit_depth.shape[0])

    @property
    def head_agreement(self) -> float:
        """Volume Dice (0..1) of the final masks and the next-shallower heads' masks; 1.0 when
        both are empty."""
        total = self.final_voxels + self.shallower_voxels
        return 1.0 if total == 0 else 2.0 * self.agreement_intersection / total

    @property
    def uncertain_fraction(self) -> float:
        """Fraction (0..1) of the case's pixels whose final ``p`` is in :data:`UNCERTAIN_BAND`."""
        return self.uncertain_pixels / self.probs.size if self.probs.size else 0.0

    @property
    def gflop_per_slice(self) -> float:
        """Mean GFLOP per slice (0.0 without slices)."""
        return self.gflop / self.slices if self.slices else 0.0

    def depth_histogram(self, max_depth: int) -> list[int]:
        """Slices that stopped at L1..L``max_depth``."""
        if self.exit_depth.size and (self.exit_depth.min() < 1 or self.exit_depth.max() > max_depth):
            raise ValueError(
                f"exit depths {int(self.exit_depth.min())}..{int(self.exit_depth.max())} are outside 1..{max_depth}"
            )
        counts = np.bincount(self.exit_depth.astype(np.int64), minlength=max_depth + 1)
        return [int(c) for c in counts[1 : max_depth + 1]]


class _Recorder:
    """Collects the per-slice results of one case into a :class:`SliceRecord`."""

    def __init__(self, slices: int, height: int, width: int, gflops: Mapping[int, float]) -> None:
        self.probs = np.zeros((slices, height, width), dtype=np.float32)
        self.exit_depth = np.zeros(slices, dtype=np.int64)
        self.gflops = gflops
        self.intersection = self.final = self.shallower = self.uncertain = 0
        self.gflop = 0.0

    def stop(self, index: torch.Tensor, depth: int, prob: torch.Tensor, shallower: torch.Tensor) -> None:
        """Slices ``index`` (of the case) stop at ``depth`` with ``prob`` ``(n, H, W)``; their
        next-shallower head is ``shallower`` ``(n, H, W)`` (``prob`` itself at depth 1)."""
        if index.numel() == 0:
            return
        if depth not in self.gflops:
            raise ValueError(f"gflops has no cost for depth {depth} (has {sorted(self.gflops)})")
        mask, shallow_mask = prob > THRESHOLD, shallower > THRESHOLD
        low, high = UNCERTAIN_BAND
        self.intersection += int((mask & shallow_mask).sum())
        self.final += int(mask.sum())
        self.shallower += int(shallow_mask.sum())
        self.uncertain += int(((prob > low) & (prob < high)).sum())
        self.gflop += float(self.gflops[depth]) * int(index.numel())
        rows = index.cpu().numpy()
        self.probs[rows] = prob.cpu().numpy()
        self.exit_depth[rows] = depth

    def record(self) -> SliceRecord:
        return SliceRecord(
            probs=self.probs,
            exit_depth=self.exit_depth,
            agreement_intersection=self.intersection,
            final_voxels=self.final,
            shallower_voxels=self.shallower,
            uncertain_pixels=self.uncertain,
            gflop=self.gflop,
        )


def _check(net: InferenceNet, slices: torch.Tensor, batch_size: int) -> None:
    if not isinstance(net, InferenceNet):
        raise TypeError(f"expected an InferenceNet (optimize_for_inference), got {type(net).__name__}")
    channels = net.network.in_channels
    if slices.ndim != 4 or slices.shape[1] != channels:
        raise ValueError(f"slices must be (K, {channels}, H, W), got shape {tuple(slices.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``(n, 1, H, W)`` logits -> ``(n, H, W)`` float32 probabilities."""
    return torch.sigmoid(logits.float())[:, 0]


def segment_adaptive(
    net: InferenceNet, slices: torch.Tensor, rule: ExitRule, batch_size: int, gflops: Mapping[int, float]
) -> SliceRecord:
    """Segment ``K`` slices, each deepened until ``rule`` lets it stop.

    In chunks of ``batch_size`` slices: head 1 for the whole chunk, then after each head the
    exit signals (against the previous head) decide which slices stop; only the others are
    deepened, reusing their cached nodes.

    Args:
        net: the BatchNorm-folded network (:func:`~anunet_core.inference.optimize_for_inference`),
            of depth ``>= rule.max_depth``.
        slices: ``(K, C, H, W)`` preprocessed slices (any device; moved to the network's).
        rule: the exit rule; :data:`ExitRule.NEVER` gives fixed depth ``rule.max_depth``.
        batch_size: slices per forward (the first head's batch).
        gflops: cumulative GFLOP per slice up to head ``d`` (:func:`~anunet_core.anytime.depth_gflops`).

    Returns:
        :class:`SliceRecord` with ``exit_depth`` in ``1..rule.max_depth``.
    """
    _check(net, slices, batch_size)
    if rule.max_depth > net.depth:
        raise ValueError(f"the exit rule stops at L{rule.max_depth} but the network has only {net.depth} heads")
    k, _, height, width = slices.shape
    recorder = _Recorder(k, height, width, gflops)
    device = next(net.parameters()).device
    for begin in range(0, k, batch_size):
        chunk = slices[begin : begin + batch_size].to(device)
        index = torch.arange(begin, begin + chunk.shape[0])  # case rows of the slices still going
        cache, logits = net.start(chunk)
        prob, previous, depth = _probabilities(logits), None, 1
        while True:
            stop = exits(slice_signals(prob, previous), rule, depth)
            shallower = prob if previous is None else previous
            recorder.stop(index[stop.cpu()], depth, prob[stop], shallower[stop])
            go = (~stop).nonzero().flatten()
            if go.numel() == 0:
                break
            cache, logits = net.deepen(cache, go)
            previous, prob, depth = prob[go], _probabilities(logits), depth + 1
            index = index[go.cpu()]
    return recorder.record()


def segment_fixed(
    net: InferenceNet, slices: torch.Tensor, depth: int, batch_size: int, gflops: Mapping[int, float]
) -> SliceRecord:
    """Segment ``K`` slices at a fixed ``depth``: the :class:`SliceRecord` of
    :func:`segment_adaptive` with every slice stopping at ``depth`` (shallower head = head
    ``depth - 1``, its own at depth 1), from one forward per chunk that gives every head.

    Args:
        net: the BatchNorm-folded network, of depth ``>= depth`` (the pruned depth-``depth``
            network is the fastest).
        slices: ``(K, C, H, W)`` preprocessed slices.
        depth: the head every slice stops at, 1..``net.depth`` (a network of
            :mod:`anunet_core.baselines` with one output: its depth, 4; the "shallower head" is
            then the same head, so its agreement is 1).
        batch_size: slices per forward.
        gflops: cumulative GFLOP per slice up to head ``d``.
    """
    _check(net, slices, batch_size)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= net.depth:
        raise ValueError(f"depth must be an int in 1..{net.depth} for this network, got {depth!r}")
    k, _, height, width = slices.shape
    recorder = _Recorder(k, height, width, gflops)
    device = next(net.parameters()).device
    for begin in range(0, k, batch_size):
        chunk = slices[begin : begin + batch_size].to(device)
        if depth == net.depth:
            heads = net(chunk)
        else:
            with torch.inference_mode():
                heads = net.network(chunk.contiguous(memory_format=torch.channels_last), depth=depth)
        final = len(heads) - 1 if depth == net.depth else depth - 1  # a one-output network: its only head
        prob = _probabilities(heads[final])
        shallower = _probabilities(heads[final - 1]) if final >= 1 else prob
        recorder.stop(torch.arange(begin, begin + chunk.shape[0]), depth, prob, shallower)
    return recorder.record()
