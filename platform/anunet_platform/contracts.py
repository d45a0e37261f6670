"""What the stages hand each other: the one place their file layouts and schemas are defined.

Exit codes of every job: 0 done; 1 ran, but more cases failed than ``--max-failed-fraction``
allows (:class:`FailedFractionExceeded`: the outputs are still written); 2 bad flags, archive,
model or output folder (any ``ValueError``).

Stages import this module, never each other. Two contracts:

Dataset (``jobs/ingest.py`` writes it, ``jobs/train.py`` and ``jobs/tune.py`` read it)::

    DATASET_DIR/
      train/<case_id>.parquet   val/<case_id>.parquet   test/<case_id>.parquet
      summary.json              (DatasetSummary: recipe, counts, checksum)
      errors.json               ([{case_id, source, error}], one line per failed case)

    One Parquet row per 2-D slice, columns of :data:`SLICE_SCHEMA`. ``image`` is the
    preprocessed slice ``(size, size)`` as little-endian float16 bytes, row-major, in
    ``anunet_core.preprocessing.OUTPUT_RANGE``; ``mask`` the organ mask as uint8 0/1 bytes.
    The segment job sends slices between its stages with the same encoding
    (:func:`encode_slices` / :func:`decode_slices_bytes`), so the model sees at inference
    exactly the values it was trained on.

Segmentation output (``jobs/segment.py`` writes it, ``jobs/evaluate.py`` reads it)::

    OUT/masks/{case_id}.nii.gz      one model: uint8 0/1; several: the label map (values in
                                    labels.json and in the file's header extension); always the
                                    source scan's exact shape and affine
    OUT/masks/{organ}/{case_id}.nii.gz   several models only: each organ's uint8 0/1 mask, the
                                    label map's voxels of that organ
    OUT/labels.json                 several models only: {"labels": {"background": 0, organ: value}, "models": ...}
    OUT/dicom-seg/{case_id}.dcm     --output-format nifti,dicom-seg, cases read from a DICOM series
    OUT/previews/{case_id}.png      a few axial slices through the organs, one colour per organ
    OUT/records/{case_id}.json      the case's manifest rows (one per organ), written when the case is done
    OUT/manifest.parquet            one row per case and organ, and per ignored entry, columns of MANIFEST_SCHEMA
    OUT/statistics.json             {case_id: {organ: volume, intensity, box, centroid, touches_border}}
    OUT/summary.json                counts, slices/s, each model's depth choice and its reason
    OUT/.anunet-segment.lock        the lease of the run writing OUT (one run at a time)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "DATASET_ERRORS_FILE",
    "DATASET_SUMMARY_FILE",
    "DICOM_SEG_DIR",
    "LABELS_FILE",
    "STATISTICS_FILE",
    "MANIFEST_FILE",
    "MANIFEST_SCHEMA",
    "MANIFEST_STATUSES",
    "MASKS_DIR",
    "LOCK_FILE",
    "MASK_SUFFIX",
    "PREVIEWS_DIR",
    "RECORDS_DIR",
    "SEGMENT_SUMMARY_FILE",
    "SLICE_DTYPE",
    "SLICE_SCHEMA",
    "SPLITS",
    "DatasetError",
    "FailedFractionExceeded",
    "DatasetSummary",
    "decode_batch",
    "decode_slices",
    "decode_table",
    "decode_slices_bytes",
    "dicom_seg_path",
    "mask_path_of",
    "organ_mask_path",
    "check_failed_fraction",
    "encode_masks",
    "encode_slices",
    "prediction_path",
    "preview_path",
    "read_labels",
    "read_manifest",
    "read_slices",
    "read_summary",
    "record_path",
    "split_files",
]

class FailedFractionExceeded(Exception):
    """A job ran to the end and wrote its outputs, but more of its cases failed than allowed:
    ``cli.run_job`` exits 1 with this one-line message (a scheduler sees a failed night)."""


def check_failed_fraction(failed: int, cases: int, max_failed_fraction: float, what: str) -> float:
    """The failed fraction ``failed / cases`` (0 for no case); above ``max_failed_fraction``
    raises :class:`FailedFractionExceeded` naming the counts and where the reasons are."""
    fraction = failed / cases if cases else 0.0
    if fraction > max_failed_fraction:
        raise FailedFractionExceeded(
            f"{failed} of {cases} cases failed ({fraction:.1%}), above --max-failed-fraction {max_failed_fraction:g}; "
            f"the reasons are in {what}"
        )
    return fraction


# ----------------------------------------------------------------------------------------------
# Dataset: ingest -> train, tune
# ----------------------------------------------------------------------------------------------

SPLITS: tuple[str, ...] = ("train", "val", "test")
DATASET_SUMMARY_FILE = "summary.json"
DATASET_ERRORS_FILE = "errors.json"
SLICE_DTYPE = np.dtype("<f2")
"""How image slices travel and are stored: little-endian float16, values in [0, 1]."""

SLICE_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("patient_id", pa.string()),
        ("slice_index", pa.int32()),
        ("split", pa.string()),
        ("organ", pa.string()),
        ("modality", pa.string()),
        ("image", pa.binary()),
        ("mask", pa.binary()),
        ("size", pa.int32()),
        ("spacing", pa.list_(pa.float64(), 3)),  # mm: row, column (resized slice), slice step
        ("source", pa.string()),
        ("source_sha256", pa.string()),
        ("preprocessing_version", pa.string()),
    ]
)


class DatasetError(ValueError):
    """A folder is not an ingested dataset, or lacks a split (one line naming it)."""


@dataclass
class DatasetSummary:
    """``summary.json``: the dataset at a glance, and its checksum (the registry's ``dataset``)."""

    organ: str
    modality: str
    size: int
    layout: str
    label_values: list[int] | None
    preprocessing_version: str
    seed: int
    source: str
    splits: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: int = 0
    checksum: str = ""
    seconds: float = 0.0
    empty_slice_fraction: float | None = None  # share of organ-free slices kept (None: written before it was recorded)

    def table(self) -> str:
        lines = [f"{'split':<6} {'cases':>6} {'slices':>7} {'organ slices':>13} {'organ pixel %':>14}"]
        for split in SPLITS:
            s = self.splits.get(split, {})
            lines.append(
                f"{split:<6} {int(s.get('cases', 0)):>6} {int(s.get('slices', 0)):>7} "
                f"{int(s.get('organ_slices', 0)):>13} {100 * s.get('organ_pixel_fraction', 0.0):>13.2f}%"
            )
        lines.append(f"errors: {self.errors}    checksum: {self.checksum[:16]}    {self.seconds:.1f} s")
        return "\n".join(lines)


def read_summary(dataset: str | os.PathLike) -> DatasetSummary:
    """The :class:`DatasetSummary` of an ingested dataset folder."""
    path = Path(dataset) / DATASET_SUMMARY_FILE
    if not path.is_file():
        raise DatasetError(f"{dataset} is not an ingested dataset (no {DATASET_SUMMARY_FILE})")
    return DatasetSummary(**json.loads(path.read_text()))


def split_files(data: str | os.PathLike, split: str) -> list[str]:
    """The Parquet shards of one split, sorted; none raises :class:`DatasetError`."""
    data = Path(data)
    files = sorted(str(p) for p in (data / split).glob("*.parquet"))
    if not files:
        raise DatasetError(f"{data} has no {split} slices ({data / split}/*.parquet); run jobs/ingest.py first")
    return files


def encode_slices(slices: np.ndarray) -> bytes:
    """Image slices ``(..., size, size)`` in [0, 1] -> float16 bytes (row-major)."""
    return np.ascontiguousarray(slices, dtype=SLICE_DTYPE).tobytes()


def encode_masks(masks: np.ndarray) -> bytes:
    """Masks ``(..., size, size)`` 0/1 -> uint8 bytes (row-major)."""
    return np.ascontiguousarray(masks, dtype=np.uint8).tobytes()


def decode_slices_bytes(data: bytes, num_slices: int, size: int) -> np.ndarray:
    """Inverse of :func:`encode_slices`: read-only float16 ``(num_slices, size, size)``."""
    return np.frombuffer(data, dtype=SLICE_DTYPE).reshape(num_slices, size, size)


def decode_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` step over slice rows: ``image`` float16 ``(N, S, S)`` and
    ``mask`` uint8 ``(N, S, S)`` (the only columns training needs)."""
    size = int(batch["size"][0])
    n = len(batch["size"])
    image = decode_slices_bytes(b"".join(batch["image"]), n, size)
    mask = np.frombuffer(b"".join(batch["mask"]), dtype=np.uint8).reshape(n, size, size)
    return {"image": image.copy(), "mask": mask.copy()}


def _fixed_width_values(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray | None:
    """The bytes of a binary column whose every value is ``width`` bytes long, one row after
    the other, read straight from Arrow's buffers (no Python ``bytes`` per row); None when
    the column is not plain binary, has nulls or a value of another length."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if chunk.null_count or not (pa.types.is_binary(chunk.type) or pa.types.is_large_binary(chunk.type)):
            return None
        offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        _, offsets_buffer, data = chunk.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=offset_type, count=len(chunk) + 1,
                                offset=chunk.offset * np.dtype(offset_type).itemsize)
        if (offsets[-1] - offsets[0]) != len(chunk) * width or np.any(np.diff(offsets) != width):
            return None
        parts.append(np.frombuffer(data, dtype=np.uint8, count=len(chunk) * width, offset=int(offsets[0])))
    if not parts:
        return np.zeros(0, np.uint8)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def decode_table(table: pa.Table) -> dict[str, np.ndarray]:
    """Slice rows (a Parquet read of ``image``, ``mask`` and ``size``) -> ``image`` float16 and
    ``mask`` uint8, both ``(N, S, S)``: what :func:`decode_batch` returns, but read from
    Arrow's buffers without a Python object per row (about 10x faster at 256 px). The arrays
    may be read-only views of the table's memory. Every row must have the same ``size``."""
    n = table.num_rows
    sizes = table.column("size").to_numpy() if n else np.zeros(0, np.int32)
    if n and np.any(sizes != sizes[0]):
        raise ValueError(f"slices of different sizes in one batch: {sorted(set(sizes.tolist()))}")
    size = int(sizes[0]) if n else 0
    image = _fixed_width_values(table.column("image"), size * size * SLICE_DTYPE.itemsize)
    mask = _fixed_width_values(table.column("mask"), size * size)
    if image is None or mask is None:  # not fixed-width binary: the row-by-row way
        return decode_batch({name: np.asarray(table.column(name).to_pylist(), dtype=object) for name in ("image", "mask", "size")})
    return {"image": image.view(SLICE_DTYPE).reshape(n, size, size), "mask": mask.reshape(n, size, size)}


def decode_slices(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, size, size)`` float32 and masks ``(N, size, size)`` uint8 of slice rows."""
    if table.num_rows == 0:
        return np.zeros((0, 0, 0), np.float32), np.zeros((0, 0, 0), np.uint8)
    decoded = decode_table(table)
    return decoded["image"].astype(np.float32), np.array(decoded["mask"])


def read_slices(paths: list[str], seed: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """The decoded slices of case shards ``paths`` (``image`` float16, ``mask`` uint8,
    ``(N, S, S)``), in file order, or with ``seed`` in a random order drawn from it (one copy
    either way). pyarrow reads on this thread only (a Ray Data read task holds one CPU); this
    module imports no torch, so the processes that run the reads start light."""
    parts = [decode_table(pq.read_table(p, columns=["image", "mask", "size"], use_threads=False)) for p in paths]
    parts = [part for part in parts if len(part["image"])]
    if not parts:
        return {"image": np.zeros((0, 0, 0), np.float16), "mask": np.zeros((0, 0, 0), np.uint8)}
    if len({part["image"].shape[1:] for part in parts}) > 1:
        raise ValueError(f"shards of different slice sizes in one read: {', '.join(paths)}")
    n = sum(len(part["image"]) for part in parts)
    place = np.random.default_rng(seed).permutation(n) if seed is not None else np.arange(n)
    out = {name: np.empty((n, *parts[0][name].shape[1:]), parts[0][name].dtype) for name in ("image", "mask")}
    begin = 0
    for part in parts:
        rows = place[begin : begin + len(part["image"])]
        for name in out:
            out[name][rows] = part[name]
        begin += len(part["image"])
    return out


# ----------------------------------------------------------------------------------------------
# Segmentation output: segment -> evaluate
# ----------------------------------------------------------------------------------------------

MASKS_DIR = "masks"
PREVIEWS_DIR = "previews"
RECORDS_DIR = "records"
MANIFEST_FILE = "manifest.parquet"
SEGMENT_SUMMARY_FILE = "summary.json"
LOCK_FILE = ".anunet-segment.lock"  # the lease of the run writing OUT (anunet_core.io.lock)
LABELS_FILE = "labels.json"
STATISTICS_FILE = "statistics.json"
DICOM_SEG_DIR = "dicom-seg"
MASK_SUFFIX = ".nii.gz"
MANIFEST_STATUSES: tuple[str, ...] = ("ok", "failed", "skipped", "ignored")
"""``ok``/``failed``/``skipped`` (done by an earlier run) rows are cases, one per case and organ;
an ``ignored`` row is an entry of the archive that is no scan (``case_id`` and ``organ`` null,
``error`` says why), so that the manifest accounts for every file: the ``files`` column sums
to the archive's entries (a case's files are counted on its first organ's row only)."""

_XYZ = pa.list_(pa.float64())  # 3 numbers (x, y, z); a fixed-size list with nulls does not read back from Parquet (pyarrow)

MANIFEST_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("source", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("depth", pa.int32()),
        ("model_version", pa.string()),
        ("organ_voxels", pa.int64()),
        ("organ_ml", pa.float64()),
        ("seconds", pa.float64()),
        ("slices", pa.int32()),
        ("depth_reason", pa.string()),
        ("files", pa.int32()),  # the archive entries the row accounts for (a series: its slices)
        ("organ", pa.string()),
        ("label_value", pa.int32()),  # the organ's value in the label map (ORGAN_MAP_VALUES)
        ("postprocess", pa.string()),  # "on" / "off": whether the largest component(s) were kept
        ("postprocess_reason", pa.string()),
        ("removed_voxels", pa.int64()),  # by post-processing
        ("overlap_voxels", pa.int64()),  # above threshold for this organ and another one too
        ("overlap_lost_voxels", pa.int64()),  # of those, given to the other organ (higher probability)
        ("mean_intensity", pa.float64()),  # under the mask: HU for CT
        ("std_intensity", pa.float64()),
        ("intensity_unit", pa.string()),
        ("bbox_min_mm", _XYZ),  # RAS+ mm, the box of the mask's voxel centres
        ("bbox_max_mm", _XYZ),
        ("centroid_mm", _XYZ),
        ("touches_border", pa.bool_()),  # the organ reaches the scan's edge: its volume is incomplete
        ("border_sides", pa.string()),  # which edges, as RAS letters ("S", "I,S")
        ("dicom_seg", pa.string()),  # OUT-relative path of the case's DICOM SEG
        ("dicom_seg_error", pa.string()),  # why the SEG could not be written (the NIfTI mask was)
        # the nested heads: which depth each slice used, what it cost, and quality control
        ("exit_rule", pa.string()),  # --depth adaptive: the calibrated per-slice exit rule; null at a fixed depth
        ("depth_histogram", pa.list_(pa.int32())),  # slices that stopped at L1..L4 (a fixed depth d: all at d)
        ("gflop_per_slice", pa.float64()),  # the network's GFLOP per slice along the path each slice took
        ("head_agreement", pa.float64()),  # volume Dice of the final masks with the next-shallower heads' masks
        ("uncertain_fraction", pa.float64()),  # share of the case's pixels (model grid) with p in (0.1, 0.9)
        ("volume_z", pa.float64()),  # organ_ml against the training cases' volumes (null: not registered)
        ("deep_slice_fraction", pa.float64()),  # slices that needed the deepest depth (null at a fixed depth)
        ("qc_score", pa.float64()),  # 0..1, 1 = no sign of trouble; below 0.5 = needs review
        ("needs_review", pa.bool_()),
        ("qc_reasons", pa.string()),  # "; "-joined, null when none
    ]
)


def prediction_path(out: str | os.PathLike, case_id: str) -> Path:
    """``OUT/masks/{case_id}.nii.gz``: where the segment job writes a case's mask."""
    return Path(out) / MASKS_DIR / f"{case_id}{MASK_SUFFIX}"


def preview_path(out: str | os.PathLike, case_id: str) -> Path:
    """``OUT/previews/{case_id}.png``."""
    return Path(out) / PREVIEWS_DIR / f"{case_id}.png"


def organ_mask_path(out: str | os.PathLike, case_id: str, organ: str) -> Path:
    """``OUT/masks/{organ}/{case_id}.nii.gz``: one organ's mask of a several-model run."""
    return Path(out) / MASKS_DIR / organ / f"{case_id}{MASK_SUFFIX}"


def read_labels(out: str | os.PathLike) -> dict[str, int] | None:
    """``{organ: value}`` of a several-model segmentation's ``OUT/labels.json`` (background
    left out), or None when OUT holds one organ's masks (no ``labels.json``)."""
    path = Path(out) / LABELS_FILE
    if not path.is_file():
        return None
    labels = json.loads(path.read_text())["labels"]
    return {str(k): int(v) for k, v in labels.items() if k != "background"}


def mask_path_of(out: str | os.PathLike, case_id: str, organ: str) -> Path:
    """Where ``organ``'s 0/1 mask of a case lies in a segmentation folder: its own file when
    the folder holds several organs (``labels.json``), else ``masks/{case_id}.nii.gz``.
    ``ValueError`` when the folder's label maps hold other organs."""
    labels = read_labels(out)
    if labels is None:
        return prediction_path(out, case_id)
    if organ not in labels:
        raise ValueError(f"{out} holds masks of {', '.join(labels)} ({LABELS_FILE}), not of the {organ}")
    return organ_mask_path(out, case_id, organ)


def dicom_seg_path(out: str | os.PathLike, case_id: str) -> Path:
    """``OUT/dicom-seg/{case_id}.dcm``: the case's DICOM Segmentation object."""
    return Path(out) / DICOM_SEG_DIR / f"{case_id}.dcm"


def record_path(out: str | os.PathLike, case_id: str) -> Path:
    """``OUT/records/{case_id}.json``: the finished case's manifest row."""
    return Path(out) / RECORDS_DIR / f"{case_id}.json"


def read_manifest(out: str | os.PathLike, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows of ``OUT/manifest.parquet`` (the ``columns`` of them that exist, or all).

    Raises ``FileNotFoundError`` when there is none and ``ValueError`` when it has no
    ``case_id`` column; pyarrow's own errors for an unreadable file.
    """
    table = pq.read_table(Path(out) / MANIFEST_FILE)
    if "case_id" not in table.column_names:
        raise ValueError("no case_id column")
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    return table.to_pylist()
