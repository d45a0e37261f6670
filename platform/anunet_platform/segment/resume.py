"""Resuming: which cases an earlier run already finished, and the per-case records that say so.

A case is *done* when its record (``OUT/records/{case_id}.json``) says ``ok``, its mask
exists and names this run's model version in its header, and the record's model version,
preprocessing version and source signature (file names, sizes, modification times) equal this
run's: then it is ``skipped`` (the row keeps the
earlier result). A killed run leaves records for the finished cases only, so the rerun does
the rest. No Ray here: the decision is tested on plain files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anunet_core.archives import ArchiveInventory, Case
from anunet_core.io import read_mask_description, write_atomic
from anunet_core.preprocessing import PREPROCESSING_VERSION
from anunet_platform.contracts import prediction_path, record_path

__all__ = ["ResumePlan", "image_signature", "is_done", "plan_resume", "read_record", "write_record"]


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


def is_done(record: Mapping[str, Any] | None, model_version: str, signature: str, mask: Path) -> bool:
    """Whether a case's earlier ``record`` makes this run's work on it unnecessary: it was
    segmented (``ok``) by the same model version and preprocessing, from the same image
    files, and its mask is still there and says (in its header) that this model made it."""
    return (
        record is not None
        and record.get("status") == "ok"
        and record.get("model_version") == model_version
        and record.get("preprocessing_version") == PREPROCESSING_VERSION
        and record.get("signature") == signature
        and _mask_model(mask) == model_version
    )


def _mask_model(mask: Path) -> str | None:
    """The model version a mask's header names (None: no mask, or not one of ours)."""
    try:
        return read_mask_description(mask) if mask.is_file() else None
    except ValueError:  # unreadable: redo the case
        return None


def write_record(record: Mapping[str, Any], out: Path) -> Path:
    """``OUT/records/{case_id}.json``, atomically: written last, when the case is done."""
    path = record_path(out, record["case_id"])
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(dict(record), sort_keys=True) + "\n"))


def read_record(out: Path, case_id: str) -> dict[str, Any] | None:
    """The case's earlier record, or None (none, or unreadable: then the case is redone)."""
    try:
        return json.loads(record_path(out, case_id).read_text())
    except (OSError, ValueError):
        return None


@dataclass
class ResumePlan:
    """This run's work: ``skipped`` rows (case id -> the earlier row, status ``skipped``) and
    the ``todo`` rows the pipeline segments (the case, its ``source``, ``signature``, ``seconds``)."""

    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    todo: list[dict[str, Any]] = field(default_factory=list)


def plan_resume(inventory: ArchiveInventory, out: Path, model_version: str, recompute: bool = False) -> ResumePlan:
    """Split the ``inventory``'s cases into those done by an earlier run into ``out`` and those
    to segment (every case when ``recompute``)."""
    plan = ResumePlan()
    for case in inventory.cases:
        source = inventory.source(case.image)
        files = inventory.case_files.get(case.case_id, 0)
        signature = image_signature(case)
        record = None if recompute else read_record(out, case.case_id)
        if is_done(record, model_version, signature, prediction_path(out, case.case_id)):
            plan.skipped[case.case_id] = dict(record, status="skipped", seconds=0.0, source=source, files=files)
        else:
            plan.todo.append(case.to_dict() | {"source": source, "signature": signature, "seconds": 0.0, "files": files,
                                               "pseudonymized": inventory.tokens is not None})
    return plan
