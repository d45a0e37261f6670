"""What registration measures on the validation split, so that the nightly job can trust its
depth, its exits and its quality flags on new data.

One forward per batch of a validation case's slices gives every head's probabilities
(:func:`score_validation`; the cases are read one Parquet shard at a time). From them
:func:`registration_tags` derives, per registered depth:

- ``val_case_dice``: each validation case's volume Dice at that depth (JSON list, the cases in
  one order for every depth): the paired bootstrap of ``--depth auto``
  (:func:`~anunet_platform.selection.choose_depth`);
- ``postprocess`` (+ reason, ``val_cases``): whether keeping the largest component(s) raises
  the mean volume Dice (:func:`~anunet_platform.selection.decide_postprocessing`);
- ``qc_*``: the quality-control thresholds (:func:`~anunet_platform.qc.calibrate_qc`) from the
  validation cases' own QC features at that depth;
- ``organ_ml_mean``, ``organ_ml_std``, ``organ_ml_cases``: the training cases' organ volumes
  (mL), for the nightly volume z-score;
- on the deepest depth only, ``exit_*``: the per-slice exit rule of ``segment --depth
  adaptive`` (:func:`~anunet_core.exit_rule.calibrate_exit_rule`), so that the expected volume
  Dice stays within ``adaptive_max_dice_drop`` of the deepest head, with ``exit_reason`` and
  ``exit_expected_speedup``.

Ingest keeps every organ slice but only a share of the organ-free ones
(``empty_slice_fraction``): each kept organ-free slice stands for ``1 / fraction`` slices of
the scan, in the exit rule's cost and in the false positives it may add.

Memory: every head's probabilities of every validation case are held as float16 while the
tags are derived (``D x K x S x S x 2`` bytes per case: 4 heads x 48 slices x 128^2 = 6 MB).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anunet_core.exit_rule import CaseHeads, ExitRule, calibrate_exit_rule, simulate
from anunet_core.metrics import confusion_counts, dice
from anunet_core.postprocessing import postprocess_organ
from anunet_platform.contracts import decode_slices, split_files
from anunet_platform.qc import QcFeatures, calibrate_qc, volume_z
from anunet_platform.registry import RegisteredDepth
from anunet_platform.selection import decide_postprocessing

__all__ = [
    "DEFAULT_ADAPTIVE_MAX_DICE_DROP",
    "VALIDATION_BATCH",
    "ValidationCase",
    "VolumeStats",
    "case_qc_features",
    "postprocessing_tags",
    "registration_tags",
    "score_validation",
    "training_volumes",
    "validation_cases",
    "validation_rows",
    "volume_dice",
]

VALIDATION_BATCH = 16  # slices per forward when the registered network is scored per case
DEFAULT_ADAPTIVE_MAX_DICE_DROP = 0.005
"""The expected volume-Dice loss allowed to ``--depth adaptive`` against the deepest head
(``train --adaptive-max-dice-drop``)."""
_UNCERTAIN = (0.1, 0.9)


def volume_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two 0/1 volumes of one shape (1.0 when both are empty)."""
    counts = confusion_counts(torch.from_numpy(np.asarray(pred, bool)), torch.from_numpy(np.asarray(truth, bool)),
                              per="volume")
    return float(dice(counts))


@dataclass
class ValidationCase:
    """One validation case scored by every head.

    ``heads``: ``(D, K, S, S)`` float16 sigmoid probabilities of heads 1..D; ``truth``:
    ``(K, S, S)`` bool; ``voxel_ml``: mL of one voxel of the model's grid; ``slice_weight``:
    ``(K,)`` how many scan slices each kept slice stands for; ``first_slice``: whether the
    case's slice 0 (the scan's edge) is among the kept slices."""

    case_id: str
    heads: np.ndarray = field(repr=False)
    truth: np.ndarray = field(repr=False)
    voxel_ml: float
    slice_weight: np.ndarray = field(repr=False)
    edge_slices: tuple[bool, bool] = (False, False)
    dice: list[float] = field(default_factory=list)
    slice_index: np.ndarray | None = field(default=None, repr=False)  # (K,) each kept slice's index in its scan
    spacing_mm: tuple[float, float, float] | None = None  # row, column (model grid) and slice step
    dice_postprocessed: list[float] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return int(self.heads.shape[0])


def score_validation(model: torch.nn.Module, data: Path, organ: str,
                     empty_slice_fraction: float | None = None, split: str = "val",
                     dice: bool = True) -> list[ValidationCase]:
    """Every validation case (``val/<case_id>.parquet``; ``split``: another split's) scored by every head of ``model``:
    the heads' probabilities and (``dice``) each depth's volume Dice without and with
    :func:`~anunet_core.postprocessing.postprocess_organ` (in the model's grid: its voxels are
    the dataset's resized pixels times the slice step, in mL through the ``spacing`` column).
    A caller that scores the heads itself passes ``dice=False`` and skips the post-processing
    of every head."""
    import pyarrow.parquet as pq

    model = model.eval()
    weight_empty = 1.0 / empty_slice_fraction if empty_slice_fraction and empty_slice_fraction > 0 else 1.0
    cases = []
    for path in split_files(data, split):
        table = pq.read_table(path, columns=["case_id", "slice_index", "image", "mask", "size", "spacing"])
        if table.num_rows == 0:
            continue
        table = table.sort_by("slice_index")
        images, truth = decode_slices(table)
        truth = truth.astype(bool)
        row_mm, col_mm, step_mm = table.column("spacing")[0].as_py()
        heads = None
        with torch.no_grad():
            for start in range(0, len(images), VALIDATION_BATCH):
                chunk = torch.from_numpy(images[start : start + VALIDATION_BATCH])[:, None]
                outputs = model(chunk)
                if heads is None:
                    heads = np.empty((len(outputs), *truth.shape), dtype=np.float16)
                for d, logits in enumerate(outputs):
                    heads[d, start : start + len(chunk)] = torch.sigmoid(logits[:, 0].float()).numpy()
        indices = np.asarray(table.column("slice_index").to_pylist())
        organ_free = ~truth.reshape(len(truth), -1).any(axis=1)
        case = ValidationCase(
            case_id=table.column("case_id")[0].as_py(), heads=heads, truth=truth,
            voxel_ml=row_mm * col_mm * step_mm / 1000.0,
            slice_weight=np.where(organ_free, weight_empty, 1.0),
            edge_slices=(bool(indices.min() == 0), False),  # the scan's last slice is unknown here
            slice_index=indices, spacing_mm=(float(row_mm), float(col_mm), float(step_mm)),
        )
        for d in range(case.depth if dice else 0):
            pred = heads[d] > 0.5
            case.dice.append(volume_dice(pred, truth))
            case.dice_postprocessed.append(volume_dice(postprocess_organ(pred, organ, case.voxel_ml).mask, truth))
        cases.append(case)
    return cases


def validation_cases(model: torch.nn.Module, data: Path, organ: str) -> dict[int, list[dict[str, Any]]]:
    """``{depth: [{"case_id", "dice", "dice_postprocessed"}]}`` of :func:`score_validation`:
    the run's ``validation_cases.json``."""
    return validation_rows(score_validation(model, data, organ))


def validation_rows(cases: Sequence[ValidationCase],
                    depths: Sequence[int] | None = None) -> dict[int, list[dict[str, Any]]]:
    """``{depth: [{"case_id", "dice", "dice_postprocessed"}]}``: head ``i`` of the cases is
    depth ``depths[i]`` (default ``1..D``; a network with one output: ``(4,)``)."""
    if not cases:
        return {}
    depths = tuple(range(1, cases[0].depth + 1)) if depths is None else tuple(depths)
    return {d: [{"case_id": c.case_id, "dice": c.dice[i], "dice_postprocessed": c.dice_postprocessed[i]}
                for c in cases] for i, d in enumerate(depths)}


def postprocessing_tags(scores: dict[int, list[dict[str, Any]]]) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, str]]]:
    """Per depth: the metrics (``val_volume_dice`` and ``val_volume_dice_postprocessed``, the
    means over the validation cases; none without a case) and the tags (``postprocess`` on/off
    by :func:`~anunet_platform.selection.decide_postprocessing`, its reason, ``val_cases``, and
    ``val_case_dice``: each case's volume Dice, for the depth choice's bootstrap)."""
    metrics, tags = {}, {}
    for depth, cases in scores.items():
        before = [c["dice"] for c in cases]
        after = [c["dice_postprocessed"] for c in cases]
        decision = decide_postprocessing(before, after)
        tags[depth] = {"postprocess": "on" if decision.apply else "off", "postprocess_reason": decision.reason,
                       "val_cases": str(len(cases)), "val_case_dice": RegisteredDepth.case_dice_tag(before)}
        metrics[depth] = ({"val_volume_dice": float(np.mean(before)), "val_volume_dice_postprocessed": float(np.mean(after))}
                          if cases else {})
    return metrics, tags


# ----------------------------------------------------------------------------------------------
# The training cases' organ volumes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeStats:
    """The training cases' organ volumes in mL (mean, standard deviation, number of cases)."""

    mean_ml: float
    std_ml: float
    cases: int

    def to_tags(self) -> dict[str, str]:
        return {"organ_ml_mean": f"{self.mean_ml:.6g}", "organ_ml_std": f"{self.std_ml:.6g}",
                "organ_ml_cases": str(self.cases)}


def training_volumes(data: Path) -> VolumeStats | None:
    """The organ volume of every training case (all its organ slices are in the dataset; mL
    through the ``spacing`` column), or None without a training case with the organ."""
    import pyarrow.parquet as pq

    volumes = []
    for path in split_files(data, "train"):
        table = pq.read_table(path, columns=["mask", "size", "spacing"])
        if table.num_rows == 0:
            continue
        size = int(table.column("size")[0].as_py())
        voxels = sum(int(np.count_nonzero(np.frombuffer(m, np.uint8))) for m in table.column("mask").to_pylist())
        row_mm, col_mm, step_mm = table.column("spacing")[0].as_py()
        if voxels and size:
            volumes.append(voxels * row_mm * col_mm * step_mm / 1000.0)
    if not volumes:
        return None
    return VolumeStats(float(np.mean(volumes)), float(np.std(volumes)), len(volumes))


# ----------------------------------------------------------------------------------------------
# QC features of a validation case, and every tag registration adds
# ----------------------------------------------------------------------------------------------


def case_qc_features(case: ValidationCase, exit_depths: np.ndarray, volumes: VolumeStats | None,
                     adaptive: bool = False) -> QcFeatures:
    """The QC features the nightly job computes, on one validation case whose slices stopped
    at ``exit_depths`` (``(K,)``; a fixed depth d: all d): head agreement of the final masks
    with the next-shallower heads' (a slice that stopped at L1: its own), the uncertain pixel
    fraction, the volume z-score, whether the mask reaches the slice's edge or the scan's
    first slice, and (``adaptive``) the share of slices at the deepest depth."""
    k = np.arange(len(exit_depths))
    final = case.heads[exit_depths - 1, k].astype(np.float32)
    shallower = case.heads[np.where(exit_depths >= 2, exit_depths - 2, exit_depths - 1), k].astype(np.float32)
    final_mask, shallow_mask = final > 0.5, shallower > 0.5
    inter = int(np.count_nonzero(final_mask & shallow_mask))
    total = int(np.count_nonzero(final_mask)) + int(np.count_nonzero(shallow_mask))
    agreement = 2.0 * inter / total if total else 1.0
    uncertain = float(np.count_nonzero((final > _UNCERTAIN[0]) & (final < _UNCERTAIN[1])) / final.size)
    organ_ml = float(np.count_nonzero(final_mask)) * case.voxel_ml
    z = volume_z(organ_ml, volumes.mean_ml, volumes.std_ml) if volumes else None
    touches = bool(final_mask[:, 0, :].any() or final_mask[:, -1, :].any() or final_mask[:, :, 0].any()
                   or final_mask[:, :, -1].any() or (case.edge_slices[0] and final_mask[0].any()))
    deep = float(np.mean(exit_depths == case.depth)) if adaptive else None
    return QcFeatures(head_agreement=agreement, uncertain_fraction=uncertain, volume_z=z, touches_border=touches,
                      deep_slice_fraction=deep)


@dataclass
class RegistrationTags:
    """What registration adds to each depth's version: ``metrics[d]`` and ``tags[d]``, and the
    exit-rule calibration (on the deepest depth's tags)."""

    metrics: dict[int, dict[str, float]]
    tags: dict[int, dict[str, str]]
    exit_calibration: Any = None


def registration_tags(cases: Sequence[ValidationCase], volumes: VolumeStats | None, gflops: dict[int, float],
                      adaptive_max_dice_drop: float = DEFAULT_ADAPTIVE_MAX_DICE_DROP,
                      depths: Sequence[int] | None = None) -> RegistrationTags:
    """Every tag of the module docstring, per depth, from the scored validation ``cases``.

    ``depths``: the depth of each head (default ``1..D``). A network with one output
    (``(4,)``, :func:`~anunet_core.baselines.output_depths`) has no shallower head to exit at:
    it gets no exit rule, and its QC thresholds come from its one head."""
    rows = validation_rows(cases, depths)
    metrics, tags = postprocessing_tags(rows)
    depth = max(tags) if tags else 0
    nested = list(rows) == list(range(1, len(rows) + 1))  # heads 1..D: per-slice exits apply
    volume_tags = volumes.to_tags() if volumes else {}
    for head, d in enumerate(rows, start=1):
        tags[d].update(volume_tags)
        if d != depth or not nested:  # a nested network's deepest thresholds come from the adaptive replay below
            fixed = [case_qc_features(c, np.full(len(c.truth), head), volumes) for c in cases]
            tags[d].update(calibrate_qc(fixed).to_tags())
    calibration = None
    if depth and nested:
        heads = [CaseHeads(probs=c.heads, truth=c.truth, slice_weight=c.slice_weight) for c in cases]
        calibration = calibrate_exit_rule(heads, {d: gflops[d] for d in range(1, depth + 1)}, adaptive_max_dice_drop)
        rule: ExitRule = calibration.rule
        exits = simulate(heads, rule, gflops).exit_depths if cases else []
        adaptive = [case_qc_features(c, np.asarray(e), volumes, adaptive=rule.exits_by_agreement)
                    for c, e in zip(cases, exits)]
        tags[depth].update(calibrate_qc(adaptive).to_tags())
        tags[depth].update(rule.to_tags())
        tags[depth]["exit_reason"] = calibration.reason
        speedup = calibration.speedup
        tags[depth]["exit_expected_speedup"] = f"{speedup:.4g}" if math.isfinite(speedup) else "1"
    return RegistrationTags(metrics=metrics, tags=tags, exit_calibration=calibration)
