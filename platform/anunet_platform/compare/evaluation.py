"""Every trained network of a comparison scored on the dataset's test split, per volume.

The test split (``test/<case_id>.parquet``, written by ingest) holds every slice of each test
case (a dataset ingested before that rule holds every organ slice and a share of the organ-free
ones, and is scored on those), on the model's grid (``size x size`` pixels of
``spacing`` mm, slices ``slice_step`` mm apart). One forward per batch gives every head
(:func:`~anunet_platform.calibration.score_validation` with ``split="test"``); each head's mask
is ``p > 0.5`` (the same threshold for every network) and is compared with the label on the
case's kept slices:

- Dice, IoU, precision and recall (Eq. 9-12) from the volume's pooled confusion counts;
- HD95 and ASSD in mm (:func:`~anunet_core.metrics.hausdorff_distance_95`,
  :func:`~anunet_core.metrics.average_surface_distance`) on the case's volume rebuilt at each
  kept slice's own index (slices ingest left out are empty in both masks), with the grid's
  spacing; ``inf`` when exactly one mask is empty.

One row per case and output depth (a network with one output: depth 4 only).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from anunet_core.baselines import output_depths
from anunet_core.io import write_atomic
from anunet_core.metrics import average_surface_distance, confusion_counts, dice, hausdorff_distance_95, iou, precision, recall
from anunet_platform.calibration import ValidationCase, score_validation

__all__ = ["CaseScore", "THRESHOLD", "read_case_scores", "score_case", "score_test_split", "write_case_scores"]

THRESHOLD = 0.5
"""The probability above which a pixel is organ, for every network and depth."""


@dataclass(frozen=True)
class CaseScore:
    """One test case at one output depth of one trained network (``arch``, ``seed``).
    Overlap metrics are fractions in [0, 1]; distances in mm (``inf``: one mask empty)."""

    arch: str
    seed: int
    depth: int
    case_id: str
    dice: float
    iou: float
    precision: float
    recall: float
    hd95_mm: float
    assd_mm: float
    organ_slices: int  # kept slices with organ in the label
    slices: int  # kept slices scored


def _volume(masks: np.ndarray, slice_index: np.ndarray) -> np.ndarray:
    """``(K, S, S)`` kept slices -> ``(max index + 1, S, S)``, each at its own index."""
    volume = np.zeros((int(slice_index.max()) + 1, *masks.shape[1:]), dtype=bool)
    volume[slice_index] = masks
    return volume


def score_case(case: ValidationCase, arch: str, seed: int, depths: Sequence[int]) -> list[CaseScore]:
    """The :class:`CaseScore` of every head of one scored case (``depths``: each head's depth)."""
    if case.spacing_mm is None or case.slice_index is None:
        raise ValueError(f"case {case.case_id}: scored without its slice indices and spacing")
    row_mm, col_mm, step_mm = case.spacing_mm
    spacing = (step_mm, row_mm, col_mm)
    truth = case.truth
    truth_volume = _volume(truth, case.slice_index)
    organ_slices = int(truth.reshape(len(truth), -1).any(axis=1).sum())
    scores = []
    for head, depth in enumerate(depths):
        pred = case.heads[head] > THRESHOLD
        c = confusion_counts(torch.from_numpy(pred), torch.from_numpy(truth), per="volume")
        pred_volume = _volume(pred, case.slice_index)
        scores.append(CaseScore(
            arch=arch, seed=seed, depth=int(depth), case_id=case.case_id, dice=float(dice(c)), iou=float(iou(c)),
            precision=float(precision(c)), recall=float(recall(c)),
            hd95_mm=hausdorff_distance_95(pred_volume, truth_volume, spacing),
            assd_mm=average_surface_distance(pred_volume, truth_volume, spacing),
            organ_slices=organ_slices, slices=len(truth),
        ))
    return scores


def score_test_split(model: torch.nn.Module, data: Path, organ: str, arch: str, seed: int) -> list[CaseScore]:
    """Every test case of dataset ``data`` at every output depth of ``model``, sorted by case
    and depth. A dataset without test cases is a ``DatasetError`` (one line)."""
    depths = output_depths(model)
    scores = []
    for case in score_validation(model, data, organ, split="test", dice=False):  # score_case measures its own
        scores.extend(score_case(case, arch, seed, depths))
    return sorted(scores, key=lambda s: (s.case_id, s.depth))


_COLUMNS = [f.name for f in fields(CaseScore)]


def write_case_scores(scores: Iterable[CaseScore], path: Path) -> Path:
    """The per-case file of one trained network: CSV, one row per case and depth (``inf`` as
    written by Python), atomically."""
    rows = [asdict(s) for s in scores]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    return write_atomic(Path(path), write)


def read_case_scores(path: Path) -> list[CaseScore]:
    """The rows :func:`write_case_scores` wrote."""
    types = {f.name: f.type for f in fields(CaseScore)}
    with Path(path).open(newline="") as handle:
        return [CaseScore(**{k: (int(v) if types[k] == "int" else v if types[k] == "str" else float(v))
                             for k, v in row.items()}) for row in csv.DictReader(handle)]
