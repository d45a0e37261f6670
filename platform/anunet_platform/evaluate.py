"""Evaluate segmentation masks against ground-truth labels: the paper's Tables 2-5, per case.

``jobs/evaluate.py --pred OUT --labels DIR --organ liver`` compares the masks the segment job
wrote (``OUT/masks/{case_id}.nii.gz``: uint8, in the source scan's own shape and affine; the
layout of :mod:`anunet_platform.contracts`) with the label files of a labelled archive (any
layout ingest reads: LiTS, CHAOS, MSD, DICOM series + NIfTI labels, NIfTI pairs), one case at
a time, on the scan's own voxel grid:

- Dice, IoU, precision, recall (Eq. 9-12) from the volume's pooled confusion counts
  (:func:`anunet_core.metrics.confusion_counts` with ``per="volume"``); both masks empty ->
  1.0, one empty -> 0.0 (the conventions of :mod:`anunet_core.metrics`);
- HD95 in millimetres (:func:`anunet_core.metrics.hausdorff_distance_95` with the scan's voxel
  spacing): 0.0 when both masks are empty, ``inf`` when exactly one is;
- the organ volume in ml of the truth and of the prediction (voxels x |det(affine)| / 1000).

Every labelled case gets one row, sorted by case id: status ``ok``; ``missing`` when there is
no prediction file (the segment manifest's reason is quoted when ``OUT/manifest.parquet``
says why); ``failed`` with a one-line reason when the scan, its label or the prediction cannot
be read, or the prediction is not on the scan's grid (a different shape, or an affine off by
more than ``AFFINE_ATOL_MM``). One bad case never stops the others.

Outputs (atomic: temporary file + rename), in ``--out`` (default: the ``--pred`` folder)::

    evaluation.parquet   one row per case, columns of EVALUATION_SCHEMA
    evaluation.csv       the same rows (infinite HD95 written as ``inf``, missing values empty)

and, on stdout, a table in the form of the paper's Tables 2-5 (IoU and Dice in %, precision
and recall as fractions) plus HD95 in mm: one row per case and a mean row over the ``ok``
cases (the HD95 mean is over its finite values; how many were infinite is stated).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from anunet_core import metrics
from anunet_core.archives import (
    Case,
    default_label_values,
    discover_cases,
    load_case,
    printable_path,
    pseudonym_key,
    redact,
)
from anunet_core.archives.pseudonyms import pseudonymize_case
from anunet_core.errors import one_line
from anunet_core.io import Volume, read_label_nifti, voxel_volume_ml, write_atomic
from anunet_core.vocabulary import validate_organ
from anunet_platform.contracts import MANIFEST_FILE, MASK_SUFFIX, MASKS_DIR, mask_path_of, read_manifest

__all__ = [
    "AFFINE_ATOL_MM",
    "CSV_FILE",
    "EVALUATION_SCHEMA",
    "PARQUET_FILE",
    "CaseEvaluation",
    "evaluate",
    "evaluate_case",
    "evaluation_table",
    "rows_to_table",
    "run_evaluate",
    "summarize",
    "write_evaluation",
]

logger = logging.getLogger(__name__)

PARQUET_FILE = "evaluation.parquet"
CSV_FILE = "evaluation.csv"
STATUSES = ("ok", "missing", "failed")

#: A prediction is on the scan's grid when every affine entry matches within this (mm; the
#: NIfTI sform holds float32, so a few 1e-5 mm of rounding on offsets of hundreds of mm).
AFFINE_ATOL_MM = 1e-3
_AFFINE_RTOL = 1e-5


@dataclass(frozen=True)
class CaseEvaluation:
    """One case's row. Metrics are None unless ``status == "ok"``; ``hd95_mm`` may be ``inf``."""

    case_id: str
    status: str  # ok | missing | failed
    error: str | None = None
    dice: float | None = None
    iou: float | None = None
    precision: float | None = None
    recall: float | None = None
    hd95_mm: float | None = None
    organ_voxels_true: int | None = None
    organ_voxels_pred: int | None = None
    organ_ml_true: float | None = None
    organ_ml_pred: float | None = None
    source: str | None = None  # the scan, relative to the labels archive
    prediction: str | None = None  # the mask, relative to the prediction folder
    depth: int | None = None  # from the segment manifest, when there is one
    model_version: str | None = None


EVALUATION_SCHEMA = pa.schema(
    [
        pa.field("case_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("dice", pa.float64()),
        pa.field("iou", pa.float64()),
        pa.field("precision", pa.float64()),
        pa.field("recall", pa.float64()),
        pa.field("hd95_mm", pa.float64()),
        pa.field("organ_voxels_true", pa.int64()),
        pa.field("organ_voxels_pred", pa.int64()),
        pa.field("organ_ml_true", pa.float64()),
        pa.field("organ_ml_pred", pa.float64()),
        pa.field("source", pa.string()),
        pa.field("prediction", pa.string()),
        pa.field("depth", pa.int64()),
        pa.field("model_version", pa.string()),
    ]
)


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _relative(path: Path, root: Path) -> str:
    try:
        return printable_path(path.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        return printable_path(path)


# ----------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------


def _crop_to_union(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to their union's bounding box plus one background voxel per side.

    Surface distances do not change: every surface voxel lies in the box, the distance
    transform is Euclidean (not along paths inside the box), and the margin (or the array's
    own edge, outside which is background) keeps each surface what it was.
    """
    union = pred | truth
    if not union.any():
        return pred, truth
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hit = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(int(hit[0]) - 1, 0), int(hit[-1]) + 2))
    box_t = tuple(box)
    return pred[box_t], truth[box_t]


def _check_geometry(pred_array: np.ndarray, pred_affine: np.ndarray, image: Volume, rel: str) -> None:
    if tuple(pred_array.shape) != image.shape:
        raise ValueError(
            f"{rel}: prediction is {_fmt_shape(pred_array.shape)} voxels but the scan is "
            f"{_fmt_shape(image.shape)} (not written in the scan's geometry)"
        )
    if not np.allclose(pred_affine, image.affine, rtol=_AFFINE_RTOL, atol=AFFINE_ATOL_MM):
        off = float(np.max(np.abs(np.asarray(pred_affine) - image.affine)))
        raise ValueError(
            f"{rel}: prediction affine differs from the scan's by up to {off:.4g} mm "
            f"(tolerance {AFFINE_ATOL_MM:g}; not written in the scan's geometry)"
        )


def _scores(pred: np.ndarray, truth: np.ndarray, image: Volume) -> dict[str, float | int]:
    counts = metrics.confusion_counts(torch.from_numpy(pred), torch.from_numpy(truth), per="volume")
    crop_pred, crop_truth = _crop_to_union(pred, truth)
    voxel_ml = voxel_volume_ml(image.affine)
    n_true, n_pred = int(truth.sum()), int(pred.sum())
    return {
        "dice": float(metrics.dice(counts)),
        "iou": float(metrics.iou(counts)),
        "precision": float(metrics.precision(counts)),
        "recall": float(metrics.recall(counts)),
        "hd95_mm": metrics.hausdorff_distance_95(crop_pred, crop_truth, spacing=image.spacing),
        "organ_voxels_true": n_true,
        "organ_voxels_pred": n_pred,
        "organ_ml_true": n_true * voxel_ml,
        "organ_ml_pred": n_pred * voxel_ml,
    }


def _read_modality(case: Case, modality: str | None) -> str | None:
    """The modality to read the scan with. Metrics never look at intensities, so a NIfTI scan
    (which has no modality tag) is read as CT when none is given; DICOM uses its own tag."""
    if modality is not None or case.modality is not None or case.image.is_dir():
        return modality
    return "CT"


def evaluate_case(
    case: Case,
    pred_dir: Path,
    labels_root: Path,
    organ: str,
    modality: str | None = None,
    label_values: Iterable[int] | None = None,
    pseudonymized: bool = False,
) -> CaseEvaluation:
    """One case's row; never raises for bad input (the reason goes into ``error``).
    ``pseudonymized``: the row's source is the case id and the reason names no path."""
    pred_path = mask_path_of(pred_dir, case.case_id, organ)
    base = {
        "case_id": case.case_id,
        "source": case.case_id if pseudonymized else _relative(case.image, labels_root),
        "prediction": _relative(pred_path, pred_dir),
    }
    rel = base["prediction"]
    if not pred_path.is_file():
        return CaseEvaluation(status="missing", error=f"no prediction {rel}", **base)
    try:
        if case.label is None:
            raise ValueError(f"{case.image}: no label file for this case")
        image, truth = load_case(case, organ, _read_modality(case, modality), label_values)
        if truth is None:
            raise ValueError(f"{case.image}: no label read for this case")
        pred_array, pred_affine = read_label_nifti(pred_path)
        _check_geometry(pred_array, pred_affine, image, rel)
        scores = _scores(pred_array > 0, np.asarray(truth) > 0, image)
    except Exception as exc:  # one bad case is a row, never the end of the job
        if not isinstance(exc, ValueError):
            logger.warning("%s: unexpected error", case.case_id, exc_info=True)
        error = redact(one_line(exc), case) if pseudonymized else one_line(exc)
        return CaseEvaluation(status="failed", error=error, **base)
    return CaseEvaluation(status="ok", **base, **scores)


# ----------------------------------------------------------------------------------------------
# All cases
# ----------------------------------------------------------------------------------------------


def _manifest_info(pred_dir: Path, organ: str) -> dict[str, dict]:
    """``{case_id: {"depth", "model_version", "status", "error"}}`` of ``organ`` from the
    segment manifest (its rows of that organ, or of the one organ it holds), when there is a
    readable one; else empty (the evaluation does not need it)."""
    path = pred_dir / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        rows = read_manifest(pred_dir, columns=["case_id", "organ", "depth", "model_version", "status", "error"])
    except Exception as exc:  # noqa: BLE001 - optional information
        logger.warning("ignoring %s: %s", path, one_line(exc))
        return {}
    return {str(row["case_id"]): row for row in rows if row.get("organ") in (None, organ)}


def _with_manifest(row: CaseEvaluation, info: dict | None) -> CaseEvaluation:
    if not info:
        return row
    values = asdict(row)
    depth = info.get("depth")
    if depth is not None and not (isinstance(depth, float) and math.isnan(depth)):
        values["depth"] = int(depth)
    if info.get("model_version") is not None:
        values["model_version"] = str(info["model_version"])
    if row.status == "missing" and info.get("status") and info.get("status") != "ok":
        why = f"segment {info['status']}"
        if info.get("error"):
            why += f": {one_line(str(info['error']))}"
        values["error"] = f"{row.error} ({why})"
    return CaseEvaluation(**values)


def evaluate(
    pred_dir: str | os.PathLike,
    labels: str | os.PathLike,
    organ: str,
    modality: str | None = None,
    layout: str = "auto",
    label_values: Iterable[int] | None = None,
    pseudonymize: bool = False,
) -> list[CaseEvaluation]:
    """Score ``pred_dir/masks/*.nii.gz`` against every labelled case of the archive ``labels``.

    Args:
        pred_dir: the segment job's ``--out`` folder (holding ``masks/``; an optional
            ``manifest.parquet`` adds each case's depth and model version).
        labels: a labelled archive (:func:`~anunet_core.archives.discover_cases` with
            ``require_labels=True``; ``layout`` as there).
        organ: ``liver``, ``spleen`` or ``kidney``; ``label_values`` overrides which label
            values make it up (default: the layout's).
        modality: ``CT``/``MR``; checked against DICOM tags and layouts when given. Not needed
            otherwise: the metrics only use the masks and the scan's geometry.
        pseudonymize: the masks were written by ``segment --pseudonymize``: the labels' case
            ids get the same pseudonyms (the key in ``$ANUNET_PSEUDONYM_KEY``), and no row
            names a path.

    Returns:
        One :class:`CaseEvaluation` per case, sorted by case id. Bad cases are rows (``missing``
        / ``failed``); only an unusable ``labels`` archive or ``pred_dir`` raises ``ValueError``.
    """
    pred_dir = Path(os.path.abspath(os.fspath(pred_dir)))
    if not pred_dir.is_dir():
        raise ValueError(f"{pred_dir}: no such prediction folder (the segment job's --out)")
    organ = validate_organ(organ)
    labels_root = Path(os.path.abspath(os.fspath(labels)))
    cases = discover_cases(labels_root, layout, require_labels=True)
    if pseudonymize:
        key = pseudonym_key()
        cases = sorted((pseudonymize_case(c, key) for c in cases), key=lambda c: c.case_id)
    if label_values is None:  # a layout without this organ's labels fails once, not per case
        for case_layout in sorted({c.layout for c in cases}):
            default_label_values(case_layout, organ)
    masks = pred_dir / MASKS_DIR
    if not masks.is_dir():
        logger.warning("%s: no masks folder; every case will be missing", masks)
    mask_path_of(pred_dir, "", organ)  # label maps of other organs: one error, before any case
    manifest = _manifest_info(pred_dir, organ)
    rows = []
    for case in cases:
        row = _with_manifest(evaluate_case(case, pred_dir, labels_root, organ, modality, label_values, pseudonymize),
                             manifest.get(case.case_id))
        rows.append(row)
        if row.status == "ok":
            logger.info(
                "%s: Dice %.4f IoU %.4f HD95 %.2f mm", row.case_id, row.dice, row.iou, row.hd95_mm
            )
        else:
            logger.warning("%s: %s: %s", row.case_id, row.status, row.error)
    _warn_unscored(masks, {c.case_id for c in cases}, labels_root)
    return rows


def _warn_unscored(masks: Path, known: set[str], labels_root: Path) -> None:
    """Warn about masks of cases the labelled archive does not have (they are not scored)."""
    if not masks.is_dir():
        return
    extra = sorted(
        p.name[: -len(MASK_SUFFIX)]
        for p in masks.iterdir()
        if p.name.endswith(MASK_SUFFIX) and not p.name.startswith(".") and p.name[: -len(MASK_SUFFIX)] not in known
    )
    if extra:
        logger.warning(
            "%d prediction(s) have no labelled case in %s and are not scored: %s",
            len(extra), labels_root, ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else ""),
        )


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------


def rows_to_table(rows: Sequence[CaseEvaluation]) -> pa.Table:
    """The rows as an Arrow table of :data:`EVALUATION_SCHEMA`."""
    return pa.Table.from_pylist([asdict(r) for r in rows], schema=EVALUATION_SCHEMA)


def write_evaluation(rows: Sequence[CaseEvaluation], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``evaluation.parquet`` and ``evaluation.csv`` into ``out`` (created), atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = rows_to_table(rows)
    parquet, csv = out / PARQUET_FILE, out / CSV_FILE
    write_atomic(parquet, lambda tmp: pq.write_table(table, tmp))
    write_atomic(csv, lambda tmp: pacsv.write_csv(table, tmp))
    return parquet, csv


def summarize(rows: Sequence[CaseEvaluation]) -> dict[str, float | int | None]:
    """Counts per status and the means over ``ok`` cases (None when there is none); the HD95
    mean is over finite values, ``hd95_infinite`` counts the others."""
    ok = [r for r in rows if r.status == "ok"]
    out: dict[str, float | int | None] = {s: sum(r.status == s for r in rows) for s in STATUSES}
    out["cases"] = len(rows)
    for key in ("dice", "iou", "precision", "recall"):
        out[key] = float(np.mean([getattr(r, key) for r in ok])) if ok else None
    finite = [r.hd95_mm for r in ok if math.isfinite(r.hd95_mm)]
    out["hd95_mm"] = float(np.mean(finite)) if finite else None
    out["hd95_infinite"] = len(ok) - len(finite)
    return out


def _num(value: float | None, scale: float, digits: int) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value * scale:.{digits}f}"


def evaluation_table(rows: Sequence[CaseEvaluation], title: str | None = None) -> str:
    """The paper's Tables 2-5 layout (IoU(%), Dice (%), Precision, Recall) plus HD95 (mm):
    one line per case, then the mean over the ``ok`` cases, then notes."""
    summary = summarize(rows)
    depths = sorted({r.depth for r in rows if r.depth is not None})
    method = "ANU-Net" + (f" L{depths[0]}" if len(depths) == 1 else "")
    mean_label = f"{method} mean ({summary['ok']} ok)"
    width = max([len("Method / case"), len(mean_label), *(len(r.case_id) for r in rows)])
    header = (
        f"{'Method / case':<{width}}  {'IoU(%)':>7}  {'Dice (%)':>8}  {'Precision':>9}  {'Recall':>7}  "
        f"{'HD95 (mm)':>9}  status"
    )

    def line(label: str, values: CaseEvaluation | dict, status: str) -> str:
        get = values.get if isinstance(values, dict) else lambda k: getattr(values, k)
        return (
            f"{label:<{width}}  {_num(get('iou'), 100, 2):>7}  {_num(get('dice'), 100, 2):>8}  "
            f"{_num(get('precision'), 1, 4):>9}  {_num(get('recall'), 1, 4):>7}  "
            f"{_num(get('hd95_mm'), 1, 2):>9}  {status}"
        ).rstrip()

    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for r in rows:
        lines.append(line(r.case_id, r, r.status if r.status == "ok" else f"{r.status}: {r.error}"))
    lines.append("-" * len(header))
    lines.append(line(mean_label, summary, ""))
    notes = [f"{summary['cases']} cases: {summary['ok']} ok, {summary['missing']} missing, {summary['failed']} failed"]
    if summary["hd95_infinite"]:
        finite = summary["ok"] - summary["hd95_infinite"]
        notes.append(
            f"HD95 mean over {finite} finite values; {summary['hd95_infinite']} case(s) have an infinite HD95 "
            f"(an empty mask on one side only)"
        )
    lines += notes
    return "\n".join(lines)


def run_evaluate(
    pred: str | os.PathLike,
    labels: str | os.PathLike,
    organ: str,
    modality: str | None = None,
    layout: str = "auto",
    label_values: Iterable[int] | None = None,
    out: str | os.PathLike | None = None,
    pseudonymize: bool = False,
) -> list[CaseEvaluation]:
    """``jobs/evaluate.py``: :func:`evaluate`, write Parquet + CSV to ``out`` (default ``pred``),
    print the table (to stdout: it is the job's output; progress goes to the log). Returns the rows."""
    rows = evaluate(pred, labels, organ, modality=modality, layout=layout, label_values=label_values,
                    pseudonymize=pseudonymize)
    out_dir = Path(out) if out is not None else Path(pred)
    parquet, csv = write_evaluation(rows, out_dir)
    title = (
        f"{organ} segmentation{f' ({modality})' if modality else ''}: predictions {Path(pred)} vs labels {Path(labels)}"
    )
    print(evaluation_table(rows, title), flush=True)  # the job's product, not a progress line
    logger.info("wrote %s and %s", parquet, csv)
    return rows
