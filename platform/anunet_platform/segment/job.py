"""``jobs/segment.py``: segment an archive, log progress, write the manifest and the summary.

    discover cases (names only) -> skip those done with the same model version (resume)
    -> the Ray Data pipeline over the rest (pipeline) -> OUT/manifest.parquet + OUT/summary.json
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from anunet_core.archives import ArchiveInventory, pseudonymize_inventory, take_inventory
from anunet_core.io import output_lock, write_atomic, write_json_atomic
from anunet_platform.cluster import init_ray
from anunet_platform.contracts import LOCK_FILE, MANIFEST_FILE, MANIFEST_SCHEMA, SEGMENT_SUMMARY_FILE, check_failed_fraction
from anunet_platform.segment.config import SegmentConfig, SegmentError
from anunet_platform.segment.model import SelectedModel, select_model
from anunet_platform.segment.resume import ResumePlan, plan_resume
from anunet_platform.selection import DepthChoice

__all__ = ["SegmentSummary", "run_segmentation", "write_manifest"]

logger = logging.getLogger(__name__)


@dataclass
class SegmentSummary:
    """What a run did: counts per status, throughput and the model it used."""

    archive: str
    out: str
    model: str
    model_version: str
    depth: int
    depth_reason: str
    cases: int
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

    def line(self) -> str:
        return (
            f"segment: {self.ok} ok, {self.failed} failed, {self.skipped} skipped of {self.cases} cases "
            f"({self.ignored} of {self.files} files ignored); "
            f"{self.slices} slices in {self.seconds:.1f} s ({self.slices_per_second:.1f} slices/s) "
            f"with L{self.depth} {self.model_version}"
        )

    def count(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Set the counts per status and the segmented slices from the manifest ``rows``."""
        self.ok = sum(r["status"] == "ok" for r in rows)
        self.failed = sum(r["status"] == "failed" for r in rows)
        self.skipped = sum(r["status"] == "skipped" for r in rows)
        self.ignored = sum(int(r["files"] or 0) for r in rows if r["status"] == "ignored")
        self.files = sum(int(r["files"] or 0) for r in rows)
        self.slices = sum(int(r["slices"] or 0) for r in rows if r["status"] == "ok")


def write_manifest(rows: Iterable[Mapping[str, Any]], out: Path, choice: DepthChoice) -> Path:
    """``OUT/manifest.parquet``: the case rows sorted by case id, then the ignored entries by
    source; the depth choice in its metadata."""
    rows = sorted(rows, key=lambda r: (r["case_id"] is None, r["case_id"] or "", r["source"] or ""))
    columns = {name: [r.get(name) for r in rows] for name in MANIFEST_SCHEMA.names}
    schema = MANIFEST_SCHEMA.with_metadata({"depth": str(choice.depth), "depth_reason": choice.reason})
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
    selected = select_model(config)
    choice = selected.choice
    logger.info("depth: L%d (%s): %s", choice.depth, selected.model_version, choice.reason)
    resume = plan_resume(inventory, config.out, selected.model_version, config.recompute)
    summary = SegmentSummary(
        archive=str(config.archive), out=str(config.out), model=config.model,
        model_version=selected.model_version, depth=choice.depth, depth_reason=choice.reason,
        cases=len(cases), skipped=len(resume.skipped), device="cuda" if config.use_gpu else "cpu",
    )
    logger.info(
        "%d cases: %d to segment, %d already done", len(cases), len(resume.todo), len(resume.skipped)
    )
    rows, work_seconds = _segment(resume, selected, config, summary)
    manifest_rows = [rows[c.case_id] for c in cases if c.case_id in rows] + ignored_rows(inventory)
    write_manifest(manifest_rows, config.out, choice)
    _finish(summary, manifest_rows, time.perf_counter() - start, work_seconds, config)
    if resume.todo and summary.ok == 0 and summary.skipped == 0:
        first = next(r["error"] for r in manifest_rows if r["status"] == "failed")
        raise SegmentError(f"no case of {config.archive} could be segmented ({summary.failed} failed; first: {first})")
    check_failed_fraction(summary.failed, summary.cases, config.max_failed_fraction,
                          f"{config.out / MANIFEST_FILE} (status 'failed')")
    return summary


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


def _segment(resume: ResumePlan, selected: SelectedModel, config: SegmentConfig,
             summary: SegmentSummary) -> tuple[dict[str, dict[str, Any]], float]:
    """Every case's row (the skipped ones and those segmented now) and the seconds the
    pipeline ran (0 when there was nothing to do: then no cluster is touched)."""
    rows = dict(resume.skipped)
    if not resume.todo:
        return rows, 0.0
    from anunet_platform.segment.pipeline import segment_cases  # imports Ray Data's side only when needed

    init_ray()
    work_start = time.perf_counter()  # from here on: slices/s of the pipeline itself
    plan, finished = segment_cases(resume.todo, selected, config)
    summary.actors = plan.num_actors
    for done, record in enumerate(finished, start=1):
        rows[record["case_id"]] = record
        logger.info("[%d/%d] %s: %s (%.1f s)", done, len(resume.todo), record["case_id"], _outcome(record), record["seconds"])
    return rows, time.perf_counter() - work_start


def _outcome(record: Mapping[str, Any]) -> str:
    if record["status"] == "ok":
        return f"ok, {record['slices']} slices, {record['organ_ml']:.1f} mL"
    return f"failed: {record['error']}"


def _finish(summary: SegmentSummary, rows: Sequence[Mapping[str, Any]], seconds: float, work_seconds: float,
            config: SegmentConfig) -> None:
    """Complete the summary, write ``OUT/summary.json`` and log the closing lines."""
    summary.count(rows)
    summary.max_failed_fraction = config.max_failed_fraction
    summary.failed_fraction = summary.failed / summary.cases if summary.cases else 0.0
    summary.seconds = seconds
    summary.slices_per_second = summary.slices / work_seconds if summary.slices and work_seconds > 0 else 0.0
    write_json_atomic(config.out / SEGMENT_SUMMARY_FILE, asdict(summary))
    logger.info("%s", summary.line())
    if summary.failed:
        over = summary.failed_fraction > summary.max_failed_fraction
        logger.info("%d case(s) failed (%.1f%%, %s --max-failed-fraction %g); reasons in %s (status 'failed')",
                    summary.failed, 100 * summary.failed_fraction, "above" if over else "within",
                    summary.max_failed_fraction, config.out / MANIFEST_FILE)
