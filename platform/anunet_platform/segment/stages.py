"""One case, stage by stage: each runs in a Ray task or actor, and none raises for bad input.

    read_case       (task)   read the scan, preprocess it exactly as ingest does
    SliceSegmenter  (actor)  the chosen depth's network, loaded once per actor
    write_case      (task)   restore the source geometry, threshold, write mask + preview + record

Between stages a case is one row; slices and probabilities travel as float16 bytes
(:func:`~anunet_platform.contracts.encode_slices`), as ingest stores training slices, so
the model sees the same values it was trained on. A failure is the row's one-line ``error``,
which the later stages pass on; the case then becomes a ``failed`` manifest row.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anunet_core import ANUNet, optimize_for_inference
from anunet_core.archives import Case, load_case, redact
from anunet_core.errors import one_line
from anunet_core.io import DEFAULT_MAX_VOXELS, SliceGeometry, voxel_volume_ml, write_mask
from anunet_core.preprocessing import PREPROCESSING_VERSION, preprocess_volume, restore_mask
from anunet_core.preview import write_preview
from anunet_platform.contracts import (
    SLICE_DTYPE,
    decode_slices_bytes,
    encode_slices,
    prediction_path,
    preview_path,
)
from anunet_platform.precision import autocast
from anunet_platform.segment.resume import write_record

__all__ = [
    "IO_NICENESS",
    "THRESHOLD",
    "CaseContext",
    "SliceSegmenter",
    "read_case",
    "read_stage",
    "write_case",
    "write_lost_case",
    "write_stage",
]

THRESHOLD = 0.5
IO_NICENESS = 10  # read/write tasks run at this Unix niceness: the model's threads come first


def _error_of(value: Any) -> str | None:
    """A row's ``error`` field as a string or None (Ray Data turns a None into NaN or '')."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return None
    return str(value) or None


# ----------------------------------------------------------------------------------------------
# Stage 1: read and preprocess
# ----------------------------------------------------------------------------------------------


def read_case(row: dict[str, Any], organ: str, modality: str, size: int,
              max_voxels: int | None = DEFAULT_MAX_VOXELS) -> dict[str, Any]:
    """Stage 1: read the scan and preprocess it exactly as ingest does (a scan whose header
    claims more than ``max_voxels`` fails before anything is loaded).

    Adds ``slices`` (float16 bytes of ``(K, size, size)``), ``num_slices``, ``geometry`` (JSON
    of :class:`SliceGeometry`) and ``error`` ("", or the one-line reason)."""
    start = time.perf_counter()
    out = dict(row, slices=b"", num_slices=0, geometry="", error="")  # "": a string column, never NaN
    try:
        volume, _ = load_case(Case.from_dict(row), organ=organ, modality=modality, with_label=False,
                              max_voxels=max_voxels)
        slices, geometry = preprocess_volume(volume, size=size)
        out.update(
            slices=encode_slices(slices),
            num_slices=int(slices.shape[0]),
            geometry=json.dumps(geometry.to_dict()),
        )
    except Exception as exc:  # noqa: BLE001 - any failure of one case is that case's failed row
        out["error"] = one_line(exc)
        if row.get("pseudonymized"):  # the reason names files: never the patient's folder
            out["error"] = redact(out["error"], Case.from_dict(row))
    out["seconds"] = float(row.get("seconds", 0.0)) + time.perf_counter() - start
    return out


# ----------------------------------------------------------------------------------------------
# Stage 2: the network
# ----------------------------------------------------------------------------------------------


class SliceSegmenter:
    """Stage 2, a Ray Data actor: the chosen depth's network, loaded once per actor.

    Called with batches of case rows; each case's ``(K, size, size)`` slices run through the
    network in chunks of ``batch_size`` and come back as ``probs``: float16 bytes of the
    deepest head's sigmoid, ``(K, size, size)``. Rows that already failed pass through.
    ``weights`` is the state dict of numpy arrays, or ``[ObjectRef]`` of it.
    """

    def __init__(self, weights, config: dict[str, Any], size: int, batch_size: int, use_gpu: bool, threads: int) -> None:
        if not isinstance(weights, dict):  # [ObjectRef]: the driver's one copy in the object store
            import ray

            weights = ray.get(weights[0])
        self.device = torch.device("cuda" if use_gpu else "cpu")
        if not use_gpu:
            torch.set_num_threads(threads)
        network = ANUNet(in_channels=config["in_channels"], filters=config["filters"], depth=config["depth"])
        network.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
        self.net = optimize_for_inference(network.eval(), network.depth).to(self.device)
        self.size, self.batch_size = size, batch_size

    def segment(self, slices: np.ndarray) -> np.ndarray:
        """``(K, size, size)`` float slices -> float16 probabilities of the same shape."""
        probs = np.empty(slices.shape, dtype=SLICE_DTYPE)
        with autocast(self.device):
            for start in range(0, slices.shape[0], self.batch_size):
                chunk = torch.from_numpy(slices[start : start + self.batch_size]).to(self.device, torch.float32)
                logits = self.net(chunk[:, None])[-1]
                probs[start : start + chunk.shape[0]] = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
        return probs

    def _case(self, slices: bytes, num_slices: int, error: str | None) -> tuple[bytes, str | None]:
        """One case's ``(probs bytes, error)``: the error passes on, a new one is caught."""
        if error is not None:
            return b"", error
        try:
            decoded = decode_slices_bytes(slices, num_slices, self.size)
            return encode_slices(self.segment(decoded.astype(np.float32))), None
        except Exception as exc:  # noqa: BLE001 - the case fails, the actor goes on
            return b"", one_line(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results, seconds, errors = [], [], []
        for i in range(len(batch["case_id"])):
            start = time.perf_counter()
            probs, error = self._case(batch["slices"][i], int(batch["num_slices"][i]), _error_of(batch["error"][i]))
            results.append(probs)
            errors.append(error or "")
            seconds.append(float(batch["seconds"][i]) + time.perf_counter() - start)
        out = dict(batch)  # "slices" stays: the preview needs them
        out.update(probs=np.array(results, dtype=object), error=np.array(errors, dtype=object))
        out["seconds"] = np.array(seconds, dtype=np.float64)
        return out


# ----------------------------------------------------------------------------------------------
# Stage 3: back to the scan's geometry, and written
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseContext:
    """What stage 3 needs besides the row: where to write and what produced it."""

    out: Path
    depth: int
    model_version: str
    depth_reason: str
    size: int
    previews: bool


def write_case(row: dict[str, Any], ctx: CaseContext) -> dict[str, Any]:
    """Stage 3: restore the source geometry, threshold, write mask + preview + record.

    Returns the case's manifest row (and writes it as ``records/{case_id}.json``)."""
    start = time.perf_counter()
    record = _base_row(row, ctx)
    error = _error_of(row.get("error"))
    try:
        if error:
            raise ValueError(error)
        record.update(_write_outputs(row, ctx), status="ok")
    except Exception as exc:  # noqa: BLE001 - the case fails, the job goes on
        record.update(status="failed", error=error or one_line(exc))
        _remove_outputs(ctx.out, row["case_id"])
    record["seconds"] = float(row.get("seconds", 0.0)) + time.perf_counter() - start
    write_record(record, ctx.out)
    return record


def write_lost_case(row: dict[str, Any], ctx: CaseContext, attempts: int) -> dict[str, Any]:
    """The ``failed`` row (and record) of a case that never came back from the pipeline: the
    worker process working on it died on each of its ``attempts``."""
    record = _base_row(row, ctx)
    record["error"] = (
        f"its worker process died {attempts} times (out of memory, or a crash in a native library); "
        "see the Ray worker logs"
    )
    _remove_outputs(ctx.out, row["case_id"])
    write_record(record, ctx.out)
    return record


def _remove_outputs(out: Path, case_id: str) -> None:
    """A failed case keeps no mask or preview from an earlier run: nobody may mistake them
    for this run's result."""
    for path in (prediction_path(out, case_id), preview_path(out, case_id)):
        path.unlink(missing_ok=True)


def _write_outputs(row: Mapping[str, Any], ctx: CaseContext) -> dict[str, Any]:
    """Mask (and preview) of one segmented case; returns its ``organ_voxels``, ``organ_ml``, ``slices``."""
    geometry = SliceGeometry.from_dict(json.loads(row["geometry"]))
    k = int(row["num_slices"])
    probs = decode_slices_bytes(row["probs"], k, ctx.size)
    mask = restore_mask(probs.astype(np.float32), geometry, threshold=THRESHOLD)
    # the mask names the model that made it: is_done trusts no mask another model left behind
    write_mask(mask, geometry, prediction_path(ctx.out, row["case_id"]), description=ctx.model_version)
    if ctx.previews:
        slices = decode_slices_bytes(row["slices"], k, ctx.size)
        write_preview(preview_path(ctx.out, row["case_id"]), slices, probs > THRESHOLD)
    voxels = int(mask.sum(dtype=np.int64))
    return {"organ_voxels": voxels, "organ_ml": voxels * voxel_volume_ml(geometry.affine), "slices": k}


def _base_row(row: Mapping[str, Any], ctx: CaseContext) -> dict[str, Any]:
    return {
        "case_id": row["case_id"],
        "source": row["source"],
        "status": "failed",
        "error": None,
        "depth": ctx.depth,
        "model_version": ctx.model_version,
        "organ_voxels": None,
        "organ_ml": None,
        "seconds": 0.0,
        "slices": None,
        "depth_reason": ctx.depth_reason,
        "files": int(row.get("files", 1)),
        "signature": row["signature"],
        "preprocessing_version": PREPROCESSING_VERSION,
    }


# ----------------------------------------------------------------------------------------------
# The stages as Ray runs them: reading and writing yield the CPU to the model
# ----------------------------------------------------------------------------------------------

_NICED = False


def _yield_cpu_to_the_model() -> None:
    """Lower this worker process's CPU priority (once; it holds for the process's later tasks,
    which are this job's reading and writing). On a node where the actors' torch threads use
    every core, a read that preempts one thread stalls all of them at the next barrier; at
    niceness 10 reading waits for the gaps instead."""
    global _NICED
    if not _NICED:
        try:
            os.nice(IO_NICENESS)
        except OSError:  # not permitted: run at normal priority
            pass
        _NICED = True


def read_stage(row: dict[str, Any], organ: str, modality: str, size: int, max_voxels: int | None) -> dict[str, Any]:
    """:func:`read_case` at the I/O niceness (the Ray task)."""
    _yield_cpu_to_the_model()
    return read_case(row, organ, modality, size, max_voxels)


def write_stage(row: dict[str, Any], ctx: CaseContext) -> dict[str, Any]:
    """:func:`write_case` at the I/O niceness (the Ray task)."""
    _yield_cpu_to_the_model()
    return write_case(row, ctx)
