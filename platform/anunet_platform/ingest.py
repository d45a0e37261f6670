"""Ingest: a scan archive -> a Parquet dataset of preprocessed 2D slices, split by patient.

Stages (a Ray Data pipeline over cases, one task per case, streamed):

    discover cases (driver, names only) -> split patients 5:1 train/test, val from train
    -> read + align label + preprocess (anunet_core, the same code segmentation uses)
    -> keep organ slices and a share of organ-free ones -> one Parquet shard per case
    -> summary.json + errors.json beside the shards

The dataset's layout and slice rows are the contract of :mod:`anunet_platform.contracts`
(ingest writes it, train and tune read it).

A case that cannot be read, or whose label does not fit its image, is an entry in
errors.json with a one-line reason; the rest goes on. An archive with no readable case is an
:class:`IngestError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from anunet_core.archives import (
    LAYOUTS,
    Case,
    case_checksum,
    default_label_values,
    load_case,
    printable_path,
    pseudonymize_inventory,
    redact,
    take_inventory,
)
from anunet_core.errors import one_line
from anunet_core.io import (
    DEFAULT_MAX_VOXELS,
    output_lock,
    recover_folder,
    write_atomic,
    write_folder_atomic,
    write_json_atomic,
)
from anunet_core.preprocessing import DEFAULT_SIZE, PREPROCESSING_VERSION, preprocess_label, preprocess_volume
from anunet_core.vocabulary import MODALITIES, ORGANS
from anunet_platform.contracts import (
    DATASET_ERRORS_FILE,
    DATASET_SUMMARY_FILE,
    SLICE_SCHEMA,
    SPLITS,
    DatasetSummary,
    check_failed_fraction,
    encode_masks,
    encode_slices,
)

logger = logging.getLogger(__name__)

class IngestError(ValueError):
    """The ingest as a whole cannot proceed (bad arguments, nothing readable, output exists)."""


@dataclass(frozen=True)
class IngestConfig:
    """What to ingest and how. Flags of ``jobs/ingest.py`` map one to one onto these fields.

    Attributes:
        source: the archive folder.
        out: the dataset folder to create.
        organ: ``liver``, ``spleen`` or ``kidney`` (left + right).
        modality: ``CT`` or ``MR``.
        layout: an archive layout of :data:`anunet_core.archives.LAYOUTS` or ``auto``.
        label_values: label values that form the organ; ``None`` uses the layout's default.
        size: side of the preprocessed slices in pixels.
        seed: seeds the patient split and the choice of organ-free slices.
        test_fraction: share of patients in the test split (the paper's 5:1 -> 1/6).
        val_fraction: share of the remaining (training) patients held out for validation.
        empty_slice_fraction: share of organ-free slices kept per training and validation case
            (all organ slices are); test cases keep every slice (:func:`split_empty_fraction`).
        overwrite: replace an existing dataset folder.
        cpus_per_case: CPUs a case task reserves (reading + preprocessing one volume).
        max_voxels: the largest scan read, in voxels, checked on its header before loading
            (a bigger one, or a gzip bomb, is that case's error: ``too large (N voxels ...``).
        max_failed_fraction: above this share of failed cases the job exits 1, after writing
            the dataset and ``errors.json``.
        pseudonymize: HMAC-SHA256 case ids, patient ids and sources in every Parquet row,
            ``errors.json`` and log line (key from ``$ANUNET_PSEUDONYM_KEY``).
        id_map: with ``pseudonymize``, the one file the map back to the names is written to.
    """

    source: Path
    out: Path
    organ: str
    modality: str
    layout: str = "auto"
    label_values: tuple[int, ...] | None = None
    size: int = DEFAULT_SIZE
    seed: int = 0
    test_fraction: float = 1 / 6
    val_fraction: float = 0.2
    empty_slice_fraction: float = 0.25
    overwrite: bool = False
    cpus_per_case: float = 1.0
    max_voxels: int = DEFAULT_MAX_VOXELS
    max_failed_fraction: float = 0.05
    pseudonymize: bool = False
    id_map: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "modality", str(self.modality).upper())
        if self.organ not in ORGANS:
            raise IngestError(f"--organ must be one of {', '.join(ORGANS)}, got {self.organ!r}")
        if self.modality not in MODALITIES:
            raise IngestError(f"--modality must be {' or '.join(MODALITIES)}, got {self.modality!r}")
        if self.layout != "auto" and self.layout not in LAYOUTS:
            raise IngestError(f"--layout must be auto or one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.size < 16 or self.size % 16:
            raise IngestError(f"--size must be a positive multiple of 16 (the network pools 4 times), got {self.size}")
        if self.id_map is not None and not self.pseudonymize:
            raise IngestError("--id-map is the map of --pseudonymize: pass both")
        if self.max_voxels < 1:
            raise IngestError(f"--max-voxels must be >= 1, got {self.max_voxels}")
        for name in ("test_fraction", "val_fraction", "empty_slice_fraction", "max_failed_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise IngestError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
        if self.label_values is not None:
            object.__setattr__(self, "label_values", tuple(sorted({int(v) for v in self.label_values})))
            if not self.label_values or min(self.label_values) < 1:
                raise IngestError(f"--label-values must be positive label values, got {self.label_values}")


@dataclass
class CaseResult:
    """What one case task reports back to the driver (small: no pixels)."""

    case_id: str
    patient_id: str
    split: str
    source: str
    slices: int = 0
    organ_slices: int = 0
    organ_pixels: int = 0
    pixels: int = 0
    organ_ml: float = 0.0
    source_sha256: str = ""
    seconds: float = 0.0
    error: str | None = None


# ----------------------------------------------------------------------------------------------
# Policy: pure functions, tested without Ray
# ----------------------------------------------------------------------------------------------


def split_patients(
    patient_ids: Iterable[str], seed: int, test_fraction: float = 1 / 6, val_fraction: float = 0.2
) -> dict[str, str]:
    """Assign every patient to ``train``, ``val`` or ``test``; never one patient on two sides.

    Patients are sorted, then shuffled with ``seed``: the result depends only on the set of
    ids and the seed. ``round(n * test_fraction)`` patients go to test (at least one when
    ``test_fraction > 0`` and there are two or more patients), then ``round(n_train *
    val_fraction)`` of the rest to val (likewise at least one), leaving at least one to train.
    """
    patients = sorted(set(patient_ids))
    order = np.random.default_rng(seed).permutation(len(patients))
    shuffled = [patients[i] for i in order]

    def share(n: int, fraction: float) -> int:
        if n < 2 or fraction <= 0:
            return 0
        return min(n - 1, max(1, round(n * fraction)))

    n_test = share(len(shuffled), test_fraction)
    n_val = share(len(shuffled) - n_test, val_fraction)
    splits = {p: "test" for p in shuffled[:n_test]}
    splits |= {p: "val" for p in shuffled[n_test : n_test + n_val]}
    splits |= {p: "train" for p in shuffled[n_test + n_val :]}
    return splits


def select_slices(mask_slices: np.ndarray, empty_slice_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the slices to keep: every slice with organ, plus ``round(fraction * n)`` of
    the ``n`` organ-free ones chosen at random; sorted. ``mask_slices`` is ``(K, H, W)``."""
    has_organ = mask_slices.reshape(len(mask_slices), -1).any(axis=1)
    organ = np.flatnonzero(has_organ)
    empty = np.flatnonzero(~has_organ)
    keep_empty = rng.choice(empty, size=round(empty_slice_fraction * len(empty)), replace=False)
    return np.sort(np.concatenate([organ, keep_empty]).astype(np.int64))


def split_empty_fraction(split: str, config: IngestConfig) -> float:
    """Share of a case's organ-free slices kept in ``split``: ``--empty-slice-fraction`` for
    training and validation (fewer organ-free slices to learn from), every one for the test
    split, which is scored as whole volumes (``jobs/compare.py``), where a false positive on an
    organ-free slice must count against the network."""
    return 1.0 if split == "test" else config.empty_slice_fraction


def dataset_checksum(results: Sequence[CaseResult], config: IngestConfig) -> str:
    """sha256 over what defines the dataset: sources, splits, recipe and selection settings."""
    digest = hashlib.sha256()
    recipe = {
        "organ": config.organ,
        "modality": config.modality,
        "size": config.size,
        "label_values": config.label_values,
        "seed": config.seed,
        "empty_slice_fraction": config.empty_slice_fraction,
        "preprocessing_version": PREPROCESSING_VERSION,
    }
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for r in sorted(results, key=lambda r: r.case_id):
        if r.error is None:
            digest.update(f"{r.case_id}\0{r.split}\0{r.source_sha256}\0{r.slices}\n".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# One case (runs in a Ray task)
# ----------------------------------------------------------------------------------------------


def case_slices(case: Case, split: str, config: IngestConfig) -> tuple[pa.Table, CaseResult]:
    """Read, align, preprocess and select the slices of one case; raises on bad input."""
    start = time.perf_counter()
    volume, mask = load_case(case, organ=config.organ, modality=config.modality, label_values=config.label_values,
                             max_voxels=config.max_voxels)
    if mask is None:
        raise ValueError(f"no label found for case {case.case_id} (image {case.image.name})")
    images, geometry = preprocess_volume(volume, size=config.size)
    masks = preprocess_label(mask, geometry)
    seed = int.from_bytes(hashlib.sha256(f"{config.seed}:{case.case_id}".encode()).digest()[:8], "little")
    keep = select_slices(masks, split_empty_fraction(split, config), np.random.default_rng(seed))
    row_mm, col_mm = geometry.pixel_spacing_mm
    slice_mm = float(np.linalg.norm(geometry.canonical_affine[:3, 2]))
    checksum = case_checksum(case)
    source = _source(case, config)
    n = len(keep)
    table = pa.table(
        {
            "case_id": [case.case_id] * n,
            "patient_id": [case.patient_id] * n,
            "slice_index": keep.astype(np.int32),
            "split": [split] * n,
            "organ": [config.organ] * n,
            "modality": [config.modality] * n,
            "image": [encode_slices(images[k]) for k in keep],
            "mask": [encode_masks(masks[k]) for k in keep],
            "size": np.full(n, config.size, dtype=np.int32),
            "spacing": [[row_mm, col_mm, slice_mm]] * n,
            "source": [source] * n,
            "source_sha256": [checksum] * n,
            "preprocessing_version": [PREPROCESSING_VERSION] * n,
        },
        schema=SLICE_SCHEMA,
    )
    organ_pixels = int(masks.sum())
    result = CaseResult(
        case_id=case.case_id,
        patient_id=case.patient_id,
        split=split,
        source=source,
        slices=n,
        organ_slices=int(masks[keep].reshape(n, -1).any(axis=1).sum()) if n else 0,
        organ_pixels=int(masks[keep].sum()),
        pixels=n * config.size * config.size,
        organ_ml=organ_pixels * row_mm * col_mm * slice_mm / 1000.0,
        source_sha256=checksum,
        seconds=time.perf_counter() - start,
    )
    return table, result


def ingest_case(case: Case, split: str, config: IngestConfig, staging: Path) -> CaseResult:
    """Write the shard of one case into ``staging/<split>/``; never raises for bad input."""
    try:
        table, result = case_slices(case, split, config)
        write_atomic(staging / split / f"{case.case_id}.parquet", lambda tmp: pq.write_table(table, tmp))
        return result
    except Exception as exc:  # noqa: BLE001 - any failure of one case is that case's error row
        return CaseResult(
            case_id=case.case_id,
            patient_id=case.patient_id,
            split=split,
            source=_source(case, config),
            error=redact(one_line(exc), case) if config.pseudonymize else one_line(exc),
        )


# ----------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty dataset folder unless ``overwrite``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise IngestError(f"{out} already exists and is not empty; pass --overwrite to replace it")


def summarise(results: Sequence[CaseResult], config: IngestConfig, layout: str, seconds: float) -> DatasetSummary:
    summary = DatasetSummary(
        organ=config.organ,
        modality=config.modality,
        size=config.size,
        layout=layout,
        label_values=list(config.label_values) if config.label_values else None,
        preprocessing_version=PREPROCESSING_VERSION,
        seed=config.seed,
        source=printable_path(config.source),
        empty_slice_fraction=config.empty_slice_fraction,
        errors=sum(r.error is not None for r in results),
        checksum=dataset_checksum(results, config),
        seconds=seconds,
    )
    for split in SPLITS:
        done = [r for r in results if r.split == split and r.error is None]
        pixels = sum(r.pixels for r in done)
        summary.splits[split] = {
            "cases": len(done),
            "patients": len({r.patient_id for r in done}),
            "slices": sum(r.slices for r in done),
            "organ_slices": sum(r.organ_slices for r in done),
            "organ_pixel_fraction": sum(r.organ_pixels for r in done) / pixels if pixels else 0.0,
            "organ_ml_mean": float(np.mean([r.organ_ml for r in done])) if done else 0.0,
        }
    return summary


def _source(case: Case, config: IngestConfig) -> str:
    """A row's ``source``: the image's path in the archive, or the case's pseudonym."""
    return case.case_id if config.pseudonymize else printable_path(os.path.relpath(case.image, config.source))


def discover_and_split(config: IngestConfig) -> tuple[list[Case], str, dict[str, str]]:
    """The labelled cases, their layout and each patient's split; bad input fails here, before
    any Ray work or output."""
    if not config.source.is_dir():
        raise IngestError(f"--source {config.source} is not a folder")
    inventory = take_inventory(config.source, layout=config.layout, require_labels=True, quiet=config.pseudonymize)
    logger.info("%s", inventory.line())
    if config.pseudonymize:
        inventory = pseudonymize_inventory(inventory, config.id_map)
    cases, layout = inventory.cases, inventory.layout
    if config.label_values is None:
        default_label_values(layout, config.organ)  # e.g. LiTS labels only the liver: fail now, not per case
    splits = split_patients((c.patient_id for c in cases), config.seed, config.test_fraction, config.val_fraction)
    return cases, layout, splits


def ingest_cases(cases: Sequence[Case], splits: dict[str, str], config: IngestConfig, staging: Path) -> list[CaseResult]:
    """One Ray Data task per case writes its shard into ``staging``; one progress line per
    finished case, as they stream in."""
    import ray

    items = [case.to_dict() | {"split": splits[case.patient_id]} for case in cases]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    reports = dataset.map(
        lambda row: asdict(ingest_case(Case.from_dict(row), row["split"], config, staging)),
        num_cpus=config.cpus_per_case,
    )
    results: list[CaseResult] = []
    for row in reports.iter_rows():
        result = CaseResult(**{k: row[k] for k in CaseResult.__dataclass_fields__})
        results.append(result)
        status = f"error: {result.error}" if result.error else f"{result.slices} slices, {result.organ_ml:.0f} mL"
        logger.info("[%d/%d] %s (%s): %s", len(results), len(cases), result.case_id, result.split, status)
    return results


def run_ingest(config: IngestConfig) -> DatasetSummary:
    """Ingest ``config.source`` into ``config.out`` with Ray Data; log progress and the summary.

    The dataset folder appears whole (built in a staging folder, then swapped in), with
    ``errors.json`` listing the cases that failed. One ingest at a time writes a dataset
    folder (a lease beside it; a second run exits 2 naming the first); the leftovers of a
    killed ingest are cleaned up first, and a dataset it had set aside is put back.
    Connects to the Ray cluster in ``RAY_ADDRESS`` or starts a local one.
    """
    start = time.perf_counter()
    cases, layout, splits = discover_and_split(config)
    with output_lock(config.out.parent / f".{config.out.name}.lock", "ingest"):
        for leftover in recover_folder(config.out):
            logger.info("removed %s, left by a killed ingest", leftover)
        check_output(config.out, config.overwrite)
        summary, errors = _write_dataset(config, cases, layout, splits, start)
    logger.info("%s", summary.table())
    if errors:
        logger.info("%d case(s) failed; reasons in %s", len(errors), config.out / DATASET_ERRORS_FILE)
    check_failed_fraction(len(errors), len(cases), config.max_failed_fraction, str(config.out / DATASET_ERRORS_FILE))
    return summary


def _write_dataset(config: IngestConfig, cases: Sequence[Case], layout: str, splits: dict[str, str],
                   start: float) -> tuple[DatasetSummary, list[dict]]:
    """Build the dataset in a staging folder and swap it in whole; ``(summary, error rows)``."""
    from anunet_platform.cluster import init_ray

    logger.info("ingest: %d cases (%s layout) from %s -> %s", len(cases), layout, config.source, config.out)
    with write_folder_atomic(config.out) as staging:
        init_ray()
        results = ingest_cases(cases, splits, config, staging)
        errors = [{"case_id": r.case_id, "source": r.source, "error": r.error} for r in results if r.error]
        if len(errors) == len(results):
            first = errors[0]["error"] if errors else "no case was processed"
            raise IngestError(f"no readable case in {config.source} ({len(errors)} failed; first: {first})")
        summary = summarise(results, config, layout, time.perf_counter() - start)
        write_json_atomic(staging / DATASET_ERRORS_FILE, sorted(errors, key=lambda e: e["case_id"]))
        write_json_atomic(staging / DATASET_SUMMARY_FILE, asdict(summary))
    return summary, errors


__all__ = [
    "CaseResult",
    "IngestConfig",
    "IngestError",
    "run_ingest",
    "select_slices",
    "split_empty_fraction",
    "split_patients",
]
