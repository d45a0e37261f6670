"""``jobs/segment.py``: segment an archive, log progress, write the manifest and the summary.

    discover cases (names only) -> the models, each with its depth (model)
    -> skip the cases done with the same model versions (resume)
    -> the Ray Data pipeline over the rest (pipeline)
    -> OUT/manifest.parquet, OUT/statistics.json, OUT/summary.json (and OUT/labels.json with several models)
    -> OUT/report.html: the night at a glance, the cases quality control flags first (report)
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from anunet_core.archives import ArchiveInventory, pseudonymize_inventory, take_inventory
from anunet_core.io import output_lock, write_atomic, write_json_atomic
from anunet_core.vocabulary import MAX_DEPTH
from anunet_platform.cluster import init_ray
from anunet_platform.contracts import (
    LOCK_FILE,
    MANIFEST_FILE,
    MANIFEST_SCHEMA,
    SEGMENT_SUMMARY_FILE,
    STATISTICS_FILE,
    check_failed_fraction,
)
from anunet_platform.segment.config import SegmentConfig, SegmentError
from anunet_platform.segment.model import SelectedModel, select_models
from anunet_platform.segment.outputs import OrganOutput, check_labels_file, organ_outputs, write_labels_file
from anunet_platform.segment.report import write_report
from anunet_platform.segment.resume import ResumePlan, plan_resume
from anunet_platform.selection import DepthChoice

__all__ = ["STATISTICS_KEYS", "SegmentSummary", "run_segmentation", "statistics_document", "write_manifest"]

STATISTICS_KEYS: tuple[str, ...] = (
    "organ_voxels", "organ_ml", "mean_intensity", "std_intensity", "intensity_unit", "bbox_min_mm", "bbox_max_mm",
    "centroid_mm", "touches_border", "border_sides", "removed_voxels", "overlap_voxels", "model_version",
    "volume_z", "qc_score", "needs_review", "qc_reasons",
)
"""The manifest columns ``OUT/statistics.json`` repeats per case and organ."""

logger = logging.getLogger(__name__)


@dataclass
class SegmentSummary:
    """What a run did: counts of cases per status, throughput and the models it used.

    ``models``: one entry per organ (its family, version, depth and reason, post-processing).
    With one model, ``model``, ``model_version``, ``depth`` and ``depth_reason`` are its own;
    with several, ``model`` and ``model_version`` list them (comma-separated) and ``depth`` and
    ``depth_reason`` are None (see ``models``).
    """

    archive: str
    out: str
    model: str
    model_version: str
    depth: int | None
    depth_reason: str | None
    cases: int
    models: list[dict[str, Any]] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    ignored: int = 0
    files: int = 0
    slices: int = 0
    seconds: float = 0.0
    slices_per_second: float = 0.0
    actors: int = 0
    device: str = "cpu"
    failed_fraction: float = 0.0
    max_failed_fraction: float = 0.05
    needs_review: int = 0  # cases with at least one organ flagged by quality control
    depth_histogram: list[int] = field(default_factory=list)  # slices of the segmented cases that stopped at L1..L4
    # where the pipeline's time went: seconds summed over the cases in each stage ("read",
    # "segment", "write"), and from the pipeline's start until its last actor had its models
    stage_seconds: dict[str, float] = field(default_factory=dict)
    actors_ready_seconds: float | None = None

    def line(self) -> str:
        if self.depth is not None:
            used = f"L{self.depth} {self.model_version}"
        else:
            used = ", ".join(f"{m['organ']} L{m['depth']} {m['model_version']}" for m in self.models)
        return (
            f"segment: {self.ok} ok, {self.failed} failed, {self.skipped} skipped of {self.cases} cases "
            f"({self.ignored} of {self.files} files ignored); "
            f"{self.slices} slices in {self.seconds:.1f} s ({self.slices_per_second:.1f} slices/s) "
            f"with {used}"
        )

    def count(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Set the counts of cases per status and the segmented slices from the manifest
        ``rows`` (a case's rows, one per organ, count once)."""
        cases: dict[str, Mapping[str, Any]] = {}
        for r in rows:
            if r["case_id"] is not None:
                cases.setdefault(r["case_id"], r)
        self.ok = sum(r["status"] == "ok" for r in cases.values())
        self.failed = sum(r["status"] == "failed" for r in cases.values())
        self.skipped = sum(r["status"] == "skipped" for r in cases.values())
        self.ignored = sum(int(r["files"] or 0) for r in rows if r["status"] == "ignored")
        self.files = sum(int(r["files"] or 0) for r in rows)
        self.slices = sum(int(r["slices"] or 0) for r in cases.values() if r["status"] == "ok")
        self.needs_review = len({r["case_id"] for r in rows if r["status"] in ("ok", "skipped") and r.get("needs_review")})
        histogram = [0] * MAX_DEPTH
        for r in rows:
            if r["status"] in ("ok", "skipped") and r.get("depth_histogram"):
                histogram = [a + int(b) for a, b in zip(histogram, r["depth_histogram"])]
        self.depth_histogram = histogram


def write_manifest(rows: Iterable[Mapping[str, Any]], out: Path, choice: DepthChoice | Mapping[str, DepthChoice]) -> Path:
    """``OUT/manifest.parquet``: the case rows sorted by case id and label value, then the
    ignored entries by source; the depth choice in its metadata (several models: JSON objects
    ``{organ: depth}`` and ``{organ: reason}``)."""
    rows = sorted(rows, key=lambda r: (r["case_id"] is None, r["case_id"] or "", r.get("label_value") or 0,
                                       r["source"] or ""))
    columns = {name: [r.get(name) for r in rows] for name in MANIFEST_SCHEMA.names}
    if isinstance(choice, DepthChoice):
        metadata = {"depth": str(choice.depth), "depth_reason": choice.reason}
    else:
        metadata = {"depth": json.dumps({o: c.depth for o, c in choice.items()}),
                    "depth_reason": json.dumps({o: c.reason for o, c in choice.items()})}
    schema = MANIFEST_SCHEMA.with_metadata(metadata)
    table = pa.table(columns, schema=schema)
    return write_atomic(out / MANIFEST_FILE, lambda tmp: pq.write_table(table, tmp))


def run_segmentation(config: SegmentConfig) -> SegmentSummary:
    """Segment ``config.archive`` into ``config.out``; log progress and the summary.

    Connects to the Ray cluster in ``RAY_ADDRESS`` or starts a local one (only when there is
    work: a rerun with every case done touches no cluster). Raises :class:`SegmentError` (a
    ``ValueError``) for a bad archive, model or output folder, and when every case failed;
    :class:`~anunet_platform.contracts.FailedFractionExceeded` when more than
    ``max_failed_fraction`` of the cases failed (the manifest and summary are written first).
    One run at a time writes ``--out`` (its lease ``OUT/.anunet-segment.lock``): a second one
    is refused with :class:`~anunet_core.io.OutputLocked` naming the first (exit 2); a killed
    run's lease is taken over.
    """
    start = time.perf_counter()
    _check_folders(config)
    config.out.mkdir(parents=True, exist_ok=True)
    with output_lock(config.out / LOCK_FILE, "segment"):
        return _run(config, start)


def _run(config: SegmentConfig, start: float) -> SegmentSummary:
    """The job, holding ``--out``'s lease."""
    inventory = take_inventory(config.archive, layout=config.layout, require_labels=False,
                               quiet=config.pseudonymize)
    logger.info("%s", inventory.line())
    if config.pseudonymize:
        inventory = pseudonymize_inventory(inventory, config.id_map)
    cases = inventory.cases
    selected = select_models(config)
    organs = organ_outputs(selected)
    check_labels_file(config.out, organs)
    for s in selected:
        logger.info("%s: depth L%d (%s): %s; post-processing %s", s.organ, s.depth, s.model_version, s.choice.reason,
                    s.postprocess.reason)
    resume = plan_resume(inventory, config.out, organs, config.recompute, config.output_format)
    summary = _new_summary(config, selected, organs, len(cases), len(resume.skipped))
    logger.info(
        "%d cases: %d to segment, %d already done", len(cases), len(resume.todo), len(resume.skipped)
    )
    write_labels_file(config.out, organs)
    rows, work_seconds = _segment(resume, selected, config, summary)
    manifest_rows = [row for c in cases if c.case_id in rows for row in rows[c.case_id]] + ignored_rows(inventory)
    choices = selected[0].choice if len(selected) == 1 else {s.organ: s.choice for s in selected}
    write_manifest(manifest_rows, config.out, choices)
    write_json_atomic(config.out / STATISTICS_FILE, statistics_document(manifest_rows))
    _finish(summary, manifest_rows, time.perf_counter() - start, work_seconds, config)
    if resume.todo and summary.ok == 0 and summary.skipped == 0:
        first = next(r["error"] for r in manifest_rows if r["status"] == "failed")
        raise SegmentError(f"no case of {config.archive} could be segmented ({summary.failed} failed; first: {first})")
    check_failed_fraction(summary.failed, summary.cases, config.max_failed_fraction,
                          f"{config.out / MANIFEST_FILE} (status 'failed')")
    return summary


def _new_summary(config: SegmentConfig, selected: Sequence[SelectedModel], organs: Sequence[OrganOutput], cases: int,
                 skipped: int) -> SegmentSummary:
    one = len(selected) == 1
    return SegmentSummary(
        archive=str(config.archive), out=str(config.out), model=",".join(config.model),
        model_version=",".join(o.model_version for o in organs),
        depth=selected[0].depth if one else None, depth_reason=selected[0].choice.reason if one else None,
        cases=cases, skipped=skipped, device="cuda" if config.use_gpu else "cpu",
        models=[{"organ": o.organ, "model": o.model_name.rsplit("-L", 1)[0], "model_version": o.model_version,
                 "depth": o.depth, "depth_reason": o.depth_reason, "postprocess": "on" if o.postprocess else "off",
                 "postprocess_reason": o.postprocess_reason, "label_value": o.label_value} for o in organs],
    )


def statistics_document(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``OUT/statistics.json``: ``{case_id: {organ: {...}}}`` of the segmented cases (``ok``
    and ``skipped`` rows), the :data:`STATISTICS_KEYS` of each organ."""
    document: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["case_id"] is None or r["status"] not in ("ok", "skipped"):
            continue
        organ = r.get("organ") or "organ"
        document.setdefault(r["case_id"], {})[organ] = {key: r.get(key) for key in STATISTICS_KEYS}
    return dict(sorted(document.items()))


def ignored_rows(inventory: ArchiveInventory) -> list[dict[str, Any]]:
    """One manifest row per ignored entry of the archive: ``status`` ``ignored``, no case id,
    its ``source`` and the reason in ``error``."""
    return [
        {"case_id": None, "source": inventory.source(item.path), "status": "ignored", "error": item.reason,
         "files": item.files}
        for item in inventory.ignored
    ]


def _check_folders(config: SegmentConfig) -> None:
    if not config.archive.is_dir():
        raise SegmentError(f"--archive {config.archive} is not a folder")
    if config.out.exists() and not config.out.is_dir():
        raise SegmentError(f"--out {config.out} exists and is not a folder")


def _segment(resume: ResumePlan, selected: Sequence[SelectedModel], config: SegmentConfig,
             summary: SegmentSummary) -> tuple[dict[str, list[dict[str, Any]]], float]:
    """Every case's rows, one per organ (the skipped ones and those segmented now), and the
    seconds the pipeline ran (0 when there was nothing to do: then no cluster is touched)."""
    rows = dict(resume.skipped)
    if not resume.todo:
        return rows, 0.0
    from anunet_platform.segment.pipeline import segment_cases  # imports Ray Data's side only when needed

    init_ray()
    work_start, work_start_wall = time.perf_counter(), time.time()  # from here on: slices/s of the pipeline itself
    plan, finished = segment_cases(resume.todo, list(selected), config)
    summary.actors = plan.num_actors
    stages, ready = {"read": 0.0, "segment": 0.0, "write": 0.0}, []
    for done, (case_rows, times) in enumerate(finished, start=1):
        first = case_rows[0]
        rows[first["case_id"]] = case_rows
        logger.info("[%d/%d] %s: %s (%.1f s)", done, len(resume.todo), first["case_id"], _outcome(case_rows),
                    first["seconds"])
        stages["read"] += times.read_seconds
        stages["segment"] += times.segment_seconds
        stages["write"] += times.write_seconds
        if math.isfinite(times.actor_ready_at):
            ready.append(times.actor_ready_at - work_start_wall)
    summary.stage_seconds = stages
    summary.actors_ready_seconds = max(ready) if ready else None
    return rows, time.perf_counter() - work_start


def _outcome(rows: Sequence[Mapping[str, Any]]) -> str:
    first = rows[0]
    if first["status"] != "ok":
        return f"failed: {first['error']}"
    volumes = ", ".join(f"{r['organ']} {r['organ_ml']:.1f} mL" + (" (touches the edge)" if r.get("touches_border") else "")
                        for r in rows)
    seg = f"; no DICOM SEG: {first['dicom_seg_error']}" if first.get("dicom_seg_error") else ""
    return f"ok, {first['slices']} slices, {volumes}{seg}"


def _finish(summary: SegmentSummary, rows: Sequence[Mapping[str, Any]], seconds: float, work_seconds: float,
            config: SegmentConfig) -> None:
    """Complete the summary, write ``OUT/summary.json`` and log the closing lines."""
    summary.count(rows)
    summary.max_failed_fraction = config.max_failed_fraction
    summary.failed_fraction = summary.failed / summary.cases if summary.cases else 0.0
    summary.seconds = seconds
    summary.slices_per_second = summary.slices / work_seconds if summary.slices and work_seconds > 0 else 0.0
    write_json_atomic(config.out / SEGMENT_SUMMARY_FILE, asdict(summary))
    report = write_report(config.out, asdict(summary), rows)
    logger.info("%s", summary.line())
    if summary.needs_review:
        logger.info("%d case(s) need review (quality control): see %s", summary.needs_review, report)
    if summary.failed:
        over = summary.failed_fraction > summary.max_failed_fraction
        logger.info("%d case(s) failed (%.1f%%, %s --max-failed-fraction %g); reasons in %s (status 'failed')",
                    summary.failed, 100 * summary.failed_fraction, "above" if over else "within",
                    summary.max_failed_fraction, config.out / MANIFEST_FILE)
