"""Resuming: which cases an earlier run already finished, and the per-case records that say so.

A case's record (``OUT/records/{case_id}.json``) holds its manifest rows, one per organ, and
the output formats written. An organ of a case is *done* when its row says ``ok`` and names
this run's model version, preprocessing version, post-processing setting and source signature
(file names, sizes, modification times). A case is skipped when every organ of this run is
done, its mask files exist and say (in their headers) that these models made them, and the
record's formats include this run's (a DICOM SEG asked for now and not then redoes the case).
Otherwise the whole case is redone: a label map settles overlaps between organs from their
probabilities, so an organ whose model changed is segmented beside the others again. A killed
run leaves records for the finished cases only, so the rerun does the rest. No Ray here: the
decision is tested on plain files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anunet_core.archives import ArchiveInventory, Case
from anunet_core.io import write_atomic
from anunet_core.preprocessing import PREPROCESSING_VERSION
from anunet_platform.contracts import record_path
from anunet_platform.segment.outputs import OrganOutput, masks_made_by

__all__ = [
    "ResumePlan",
    "image_signature",
    "is_done",
    "organ_done",
    "plan_resume",
    "read_record",
    "record_rows",
    "write_record",
]


def image_signature(case: Case) -> str:
    """SHA-256 of the image's file names, sizes and modification times: cheap (no pixel is
    read) and changes when a scan is replaced. Labels are not part of it."""
    files = sorted(p for p in case.image.iterdir() if p.is_file()) if case.image.is_dir() else [case.image]
    digest = hashlib.sha256()
    for path in files:
        name = os.fsencode(path.name)  # the name's bytes: any name works, UTF-8 or not
        try:
            stat = path.stat()
            digest.update(name + f"\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(name + b"\0missing\n")
    return digest.hexdigest()


def organ_done(row: Mapping[str, Any] | None, organ: OrganOutput, signature: str) -> bool:
    """Whether an earlier manifest ``row`` of one organ is this run's result for it: ``ok``, and
    the same model version, preprocessing, post-processing setting, exit rule (adaptive depth,
    or none) and source files."""
    return (
        row is not None
        and row.get("status") == "ok"
        and row.get("organ", organ.organ) == organ.organ
        and row.get("model_version") == organ.model_version
        and row.get("preprocessing_version") == PREPROCESSING_VERSION
        and row.get("postprocess", "off") == ("on" if organ.postprocess else "off")
        and row.get("exit_rule") == organ.exit_rule
        and row.get("signature") == signature
    )


def record_rows(record: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The manifest rows a record holds (a record of one row, written before several organs
    existed, is that row)."""
    if record is None:
        return []
    rows = record.get("rows")
    return [dict(r) for r in rows] if isinstance(rows, list) else [dict(record)]


def is_done(record: Mapping[str, Any] | None, organs: Sequence[OrganOutput], signature: str, out: Path,
            case_id: str, formats: Sequence[str] = ("nifti",)) -> bool:
    """Whether the case's earlier ``record`` makes this run's work on it unnecessary: every one
    of this run's ``organs`` is done (:func:`organ_done`), the record covers no other organ, it
    wrote every one of ``formats``, and the mask files are there naming these models."""
    rows = record_rows(record)
    by_organ = {r.get("organ") or organs[0].organ: r for r in rows}
    return (
        bool(rows)
        and sorted(by_organ) == sorted(o.organ for o in organs)
        and all(organ_done(by_organ[o.organ], o, signature) for o in organs)
        and set(formats) <= set(record.get("formats", ["nifti"]))  # type: ignore[union-attr]
        and masks_made_by(out, case_id, organs)
    )


def write_record(rows: Sequence[Mapping[str, Any]], out: Path, formats: Sequence[str] = ("nifti",)) -> Path:
    """``OUT/records/{case_id}.json`` of one case's manifest ``rows`` (one per organ),
    atomically: written last, when the case is done."""
    case_id = rows[0]["case_id"]
    record = {"case_id": case_id, "formats": list(formats), "rows": [dict(r) for r in rows]}
    path = record_path(out, case_id)
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(record, sort_keys=True) + "\n"))


def read_record(out: Path, case_id: str) -> dict[str, Any] | None:
    """The case's earlier record, or None (none, or unreadable: then the case is redone)."""
    try:
        record = json.loads(record_path(out, case_id).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


@dataclass
class ResumePlan:
    """This run's work: ``skipped`` (case id -> the earlier rows, status ``skipped``) and the
    ``todo`` rows the pipeline segments (the case, its ``source``, ``signature``, ``seconds``)."""

    skipped: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    todo: list[dict[str, Any]] = field(default_factory=list)


def plan_resume(inventory: ArchiveInventory, out: Path, organs: Sequence[OrganOutput], recompute: bool = False,
                formats: Sequence[str] = ("nifti",)) -> ResumePlan:
    """Split the ``inventory``'s cases into those done by an earlier run into ``out`` and those
    to segment (every case when ``recompute``)."""
    plan = ResumePlan()
    for case in inventory.cases:
        source = inventory.source(case.image)
        files = inventory.case_files.get(case.case_id, 0)
        signature = image_signature(case)
        record = None if recompute else read_record(out, case.case_id)
        if is_done(record, organs, signature, out, case.case_id, formats):
            rows = record_rows(record)
            plan.skipped[case.case_id] = [
                dict(r, status="skipped", seconds=0.0, source=source, files=files if n == 0 else 0)
                for n, r in enumerate(sorted(rows, key=lambda r: r.get("label_value") or 0))
            ]
        else:
            plan.todo.append(case.to_dict() | {"source": source, "signature": signature, "seconds": 0.0, "files": files,
                                               "pseudonymized": inventory.tokens is not None})
    return plan
