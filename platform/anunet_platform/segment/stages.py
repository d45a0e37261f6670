"""One case, stage by stage: each runs in a Ray task or actor, and none raises for bad input.

    read_case       (task)   read the scan once, preprocess it exactly as ingest does
    SliceSegmenter  (actor)  every organ's network at its chosen depth, loaded once per actor
    write_case      (task)   back to the source geometry: the label map (overlaps go to the
                             more probable organ), post-processing, statistics, masks, the
                             DICOM SEG, the preview and the case's record
    CaseSegmenter   (actor)  CPU runs: all three in the actor, one case after the other

GPU runs read and write in tasks beside the actors, so the GPU never waits for the CPU work.
On CPU the network already keeps every core busy, so reading and writing cost the same CPU
time wherever they run; in the actor they cost no more: no transfer of the slices and
probabilities through the object store, and no worker processes of their own to start.

Between stages a case is one row; slices and probabilities travel as float16 bytes
(:func:`~anunet_platform.contracts.encode_slices`), as ingest stores training slices, so the
models see the same values they were trained on. The scan's own intensities travel too (int16
when they are whole numbers that fit, as CT's HU are, else float32), for the organ
statistics; and, when a DICOM SEG is asked for, the source slices' headers (JSON, no pixels),
which only the SEG receives. A failure is the row's one-line ``error``, which the later stages
pass on; the case then becomes ``failed`` manifest rows, one per organ.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anunet_core import optimize_for_inference
from anunet_core.adaptive import SliceRecord, segment_adaptive, segment_fixed
from anunet_core.baselines import network_from_config, network_gflops
from anunet_core.exit_rule import ExitRule
from anunet_core.archives import Case, load_case, redact
from anunet_core.errors import one_line
from anunet_core.io import DEFAULT_MAX_VOXELS, SliceGeometry, voxel_volume_ml, write_mask
from anunet_core.io.dicom_seg import SegSegment, decode_source_headers, encode_source_headers, write_dicom_seg
from anunet_core.postprocessing import postprocess_organ
from anunet_core.preprocessing import PREPROCESSING_VERSION, preprocess_label, preprocess_volume, restore_label_map
from anunet_core.preview import write_preview
from anunet_core.statistics import organ_statistics
from anunet_core.vocabulary import MAX_DEPTH
from anunet_platform.contracts import (
    SLICE_DTYPE,
    decode_slices_bytes,
    dicom_seg_path,
    encode_slices,
    organ_mask_path,
    prediction_path,
    preview_path,
)
from anunet_platform.precision import autocast
from anunet_platform.qc import QcFeatures, QcThresholds, assess, volume_z
from anunet_platform.segment.outputs import OrganOutput, label_map_description
from anunet_platform.segment.resume import write_record

__all__ = [
    "IO_NICENESS",
    "THRESHOLD",
    "CaseContext",
    "CaseSegmenter",
    "SliceSegmenter",
    "decode_intensities",
    "encode_intensities",
    "head_fields",
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


def encode_intensities(array: np.ndarray) -> tuple[bytes, str]:
    """A scan's voxels ``(I, J, K)`` as ``(bytes, dtype)``: int16 when every value is a whole
    number within int16 (CT in HU: half the bytes, exactly), else float32."""
    array = np.asarray(array)
    if array.size and np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all():
        low, high = float(array.min()), float(array.max())
        if -32768.0 <= low and high <= 32767.0:
            as_int = array.astype(np.int16)
            if np.array_equal(as_int, array):
                return as_int.tobytes(), "<i2"
    return np.ascontiguousarray(array, dtype="<f4").tobytes(), "<f4"


def decode_intensities(data: bytes, dtype: str, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`encode_intensities`: a read-only ``(I, J, K)`` array."""
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(tuple(int(s) for s in shape))


# ----------------------------------------------------------------------------------------------
# Stage 1: read and preprocess
# ----------------------------------------------------------------------------------------------


def read_case(row: dict[str, Any], organ: str, modality: str, size: int,
              max_voxels: int | None = DEFAULT_MAX_VOXELS, dicom_headers: bool = False) -> dict[str, Any]:
    """Stage 1: read the scan once and preprocess it exactly as ingest does (a scan whose
    header claims more than ``max_voxels`` fails before anything is loaded).

    Adds ``slices`` (float16 bytes of ``(K, size, size)``), ``num_slices``, ``geometry`` (JSON
    of :class:`SliceGeometry`), ``intensities`` and ``intensity_dtype`` (the scan's voxels,
    :func:`encode_intensities`), ``dicom_headers`` (with ``dicom_headers``: the JSON of a DICOM
    series' slice headers, else "") and ``error`` ("", or the one-line reason). ``organ`` is
    any organ of the run (the reader checks it; no label is read)."""
    start = time.perf_counter()
    out = dict(row, slices=b"", num_slices=0, geometry="", intensities=b"", intensity_dtype="", dicom_headers="",
               error="")  # "": a string column, never NaN
    try:
        volume, _ = load_case(Case.from_dict(row), organ=organ, modality=modality, with_label=False,
                              max_voxels=max_voxels)
        slices, geometry = preprocess_volume(volume, size=size)
        intensities, dtype = encode_intensities(volume.array)
        out.update(
            slices=encode_slices(slices),
            num_slices=int(slices.shape[0]),
            geometry=json.dumps(geometry.to_dict()),
            intensities=intensities,
            intensity_dtype=dtype,
        )
        if dicom_headers and volume.dicom_headers:
            out["dicom_headers"] = encode_source_headers(volume.dicom_headers)
    except Exception as exc:  # noqa: BLE001 - any failure of one case is that case's failed row
        out["error"] = one_line(exc)
        if row.get("pseudonymized"):  # the reason names files: never the patient's folder
            out["error"] = redact(out["error"], Case.from_dict(row))
    out["read_seconds"] = time.perf_counter() - start
    out["seconds"] = float(row.get("seconds", 0.0)) + out["read_seconds"]
    return out


# ----------------------------------------------------------------------------------------------
# Stage 2: the networks
# ----------------------------------------------------------------------------------------------


class SliceSegmenter:
    """Stage 2, a Ray Data actor: every organ's network at its chosen depth, loaded once per actor.

    Called with batches of case rows; each case's ``(K, size, size)`` slices run through each
    network in chunks of ``batch_size`` and come back as ``probs``: float16 bytes of
    ``(O, K, size, size)``, each organ's final head's sigmoid, in the order of ``configs``, and
    ``heads``: JSON of each organ's :func:`head_fields` (the depth each slice stopped at, the
    GFLOP it cost and the heads' agreement: QC at no extra inference). A fixed depth runs the
    pruned network once (all its heads come out of one forward); a config with an ``exit_rule``
    (``--depth adaptive``) starts every slice at L1 and deepens only the slices whose heads
    disagree (:func:`~anunet_core.adaptive.segment_adaptive`).

    Rows that already failed pass through. ``weights`` is the list of the organs' state dicts
    of numpy arrays (one dict alone for one organ), or ``[ObjectRef]`` of it; ``configs`` their
    :func:`~anunet_core.baselines.network_config` (ANU-Net or a baseline) plus ``exit_rule`` (tags, or None) (one dict alone
    for one organ).
    """

    def __init__(self, weights, config, size: int, batch_size: int, use_gpu: bool, threads: int) -> None:
        if isinstance(weights, list) and weights and not isinstance(weights[0], dict):
            import ray  # [ObjectRef]: the driver's one copy in the object store

            weights = ray.get(weights[0])
        weights = [weights] if isinstance(weights, dict) else list(weights)
        configs = [config] if isinstance(config, dict) else list(config)
        self.device = torch.device("cuda" if use_gpu else "cpu")
        if not use_gpu:
            torch.set_num_threads(threads)
        self.nets, self.rules, self.gflops = [], [], []
        for state, cfg in zip(weights, configs, strict=True):
            network = network_from_config(cfg)
            network.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
            self.gflops.append(network_gflops(network, size, size))
            self.nets.append(optimize_for_inference(network.eval(), network.depth).to(self.device))
            self.rules.append(ExitRule.from_tags(cfg["exit_rule"]) if cfg.get("exit_rule") else None)
        self.size, self.batch_size = size, batch_size
        self.ready_at = time.time()  # wall clock: the job measures its actors' start-up from it

    def segment(self, slices: np.ndarray) -> tuple[np.ndarray, list[SliceRecord]]:
        """``(K, size, size)`` float slices -> float16 probabilities ``(O, K, size, size)``
        (``(K, size, size)`` with one organ) and each organ's :class:`~anunet_core.adaptive.SliceRecord`."""
        probs = np.empty((len(self.nets), *slices.shape), dtype=SLICE_DTYPE)
        records = []
        x = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None].to(self.device)
        with autocast(self.device):
            for o, (net, rule, gflops) in enumerate(zip(self.nets, self.rules, self.gflops)):
                if rule is None:
                    record = segment_fixed(net, x, net.depth, self.batch_size, gflops)
                else:
                    record = segment_adaptive(net, x, rule, self.batch_size, gflops)
                probs[o] = record.probs
                records.append(record)
        return (probs[0] if len(self.nets) == 1 else probs), records

    def _case(self, slices: bytes, num_slices: int, error: str | None) -> tuple[bytes, str, str | None]:
        """One case's ``(probs bytes, heads JSON, error)``: the error passes on, a new one is caught."""
        if error is not None:
            return b"", "", error
        try:
            decoded = decode_slices_bytes(slices, num_slices, self.size)
            probs, records = self.segment(decoded.astype(np.float32))
            heads = json.dumps([head_fields(r, rule is not None and rule.exits_by_agreement, net.depth)
                                for r, rule, net in zip(records, self.rules, self.nets)])
            return encode_slices(probs), heads, None
        except Exception as exc:  # noqa: BLE001 - the case fails, the actor goes on
            return b"", "", one_line(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results, heads, seconds, errors = [], [], [], []
        for i in range(len(batch["case_id"])):
            start = time.perf_counter()
            probs, case_heads, error = self._case(batch["slices"][i], int(batch["num_slices"][i]),
                                                  _error_of(batch["error"][i]))
            results.append(probs)
            heads.append(case_heads)
            errors.append(error or "")
            seconds.append(float(batch["seconds"][i]) + time.perf_counter() - start)
        out = dict(batch)  # "slices" stays: the preview needs them
        out.update(probs=np.array(results, dtype=object), heads=np.array(heads, dtype=object),
                   error=np.array(errors, dtype=object))
        out["segment_seconds"] = np.array(seconds, dtype=np.float64) - batch["seconds"]
        out["seconds"] = np.array(seconds, dtype=np.float64)
        out["actor_ready_at"] = np.full(len(seconds), self.ready_at, dtype=np.float64)
        return out


class CaseSegmenter(SliceSegmenter):
    """Stages 1-3 in one actor, for CPU runs: each case is read, segmented and written by the
    actor that segments it (one case per call, a Ray Data ``map`` over the case rows).

    ``read`` holds :func:`read_case`'s keyword arguments (organ, modality, size, max_voxels,
    dicom_headers); ``ctx`` is the write stage's :class:`CaseContext`. Returns what
    :func:`write_stage` returns, so the driver reads both paths alike.
    """

    def __init__(self, weights, config, size: int, batch_size: int, threads: int, read: Mapping[str, Any],
                 ctx: CaseContext) -> None:
        super().__init__(weights, config, size, batch_size, use_gpu=False, threads=threads)
        self.read, self.ctx = dict(read), ctx

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        case = read_case(row, **self.read)
        start = time.perf_counter()
        probs, heads, error = self._case(case["slices"], case["num_slices"], _error_of(case["error"]))
        segment_seconds = time.perf_counter() - start
        case.update(probs=probs, heads=heads, error=error or "", seconds=case["seconds"] + segment_seconds,
                    segment_seconds=segment_seconds, actor_ready_at=self.ready_at)
        return _written(case, self.ctx)


def head_fields(record: SliceRecord, deep_share: bool, max_depth: int) -> dict[str, Any]:
    """The manifest fields of one organ's :class:`~anunet_core.adaptive.SliceRecord`: the depth
    histogram (slices that stopped at L1..L4), GFLOP per slice, head agreement, uncertain
    pixel fraction and (``deep_share``: adaptive depth whose rule exits by agreement) the share
    of slices that needed the deepest depth. Where only empty slices may exit early, that share
    is the share of organ slices, which says nothing about how hard the case was: None."""
    slices = max(len(record.exit_depth), 1)
    histogram = record.depth_histogram(MAX_DEPTH)
    return {
        "depth_histogram": histogram,
        "gflop_per_slice": float(record.gflop) / slices,
        "head_agreement": float(record.head_agreement),
        "uncertain_fraction": float(record.uncertain_pixels) / max(record.probs.size, 1),
        "deep_slice_fraction": histogram[max_depth - 1] / slices if deep_share else None,
    }


# ----------------------------------------------------------------------------------------------
# Stage 3: back to the scan's geometry, and written
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseContext:
    """What stage 3 needs besides the row: where to write, what to write and what produced it
    (``organs`` in label-map order; one organ: the layout of a one-model run)."""

    out: Path
    organs: tuple[OrganOutput, ...]
    size: int
    previews: bool
    formats: tuple[str, ...] = ("nifti",)

    @property
    def several(self) -> bool:
        return len(self.organs) > 1


def write_case(row: dict[str, Any], ctx: CaseContext) -> list[dict[str, Any]]:
    """Stage 3: restore the source geometry, settle overlaps, post-process, write masks, the
    DICOM SEG, the preview and the record.

    Returns the case's manifest rows, one per organ (and writes them as ``records/{case_id}.json``)."""
    start = time.perf_counter()
    rows = _base_rows(row, ctx)
    error = _error_of(row.get("error"))
    try:
        if error:
            raise ValueError(error)
        for organ_row, written in zip(rows, _write_outputs(row, ctx), strict=True):
            organ_row.update(written, status="ok")
    except Exception as exc:  # noqa: BLE001 - the case fails, the job goes on
        rows = _base_rows(row, ctx)
        for organ_row in rows:
            organ_row.update(status="failed", error=error or one_line(exc))
        _remove_outputs(ctx, row["case_id"])
    seconds = float(row.get("seconds", 0.0)) + time.perf_counter() - start
    for organ_row in rows:
        organ_row["seconds"] = seconds
    write_record(rows, ctx.out, ctx.formats)
    return rows


def write_lost_case(row: dict[str, Any], ctx: CaseContext, attempts: int) -> list[dict[str, Any]]:
    """The ``failed`` rows (and record) of a case that never came back from the pipeline: the
    worker process working on it died on each of its ``attempts``."""
    rows = _base_rows(row, ctx)
    for organ_row in rows:
        organ_row["error"] = (
            f"its worker process died {attempts} times (out of memory, or a crash in a native library); "
            "see the Ray worker logs"
        )
    _remove_outputs(ctx, row["case_id"])
    write_record(rows, ctx.out, ctx.formats)
    return rows


def _remove_outputs(ctx: CaseContext, case_id: str) -> None:
    """A failed case keeps no output from an earlier run: nobody may mistake them for this
    run's result."""
    paths = [prediction_path(ctx.out, case_id), preview_path(ctx.out, case_id), dicom_seg_path(ctx.out, case_id)]
    paths += [organ_mask_path(ctx.out, case_id, o.organ) for o in ctx.organs]
    for path in paths:
        path.unlink(missing_ok=True)


def _write_outputs(row: Mapping[str, Any], ctx: CaseContext) -> list[dict[str, Any]]:
    """The outputs of one segmented case; returns each organ's manifest fields."""
    case_id = row["case_id"]
    geometry = SliceGeometry.from_dict(json.loads(row["geometry"]))
    k, organs = int(row["num_slices"]), ctx.organs
    probs = decode_slices_bytes(row["probs"], len(organs) * k, ctx.size).reshape(len(organs), k, ctx.size, ctx.size)
    values = [o.label_value for o in organs]
    label_map, overlap, lost = restore_label_map(probs, geometry, values, threshold=THRESHOLD)
    voxel_ml = voxel_volume_ml(geometry.affine)
    intensities = decode_intensities(row["intensities"], row["intensity_dtype"], geometry.original_shape)
    heads = json.loads(row["heads"]) if row.get("heads") else [{} for _ in organs]
    fields = []
    for o, organ in enumerate(organs):
        mask = label_map == organ.label_value
        removed = 0
        if organ.postprocess:
            result = postprocess_organ(mask, organ.organ, voxel_ml)
            removed = int(result.removed_voxels)
            if removed:
                label_map[mask & (result.mask == 0)] = 0
                mask = result.mask.astype(bool)
        voxels = int(np.count_nonzero(mask))
        stats = organ_statistics(mask, intensities, geometry.affine, organ.organ, geometry.modality)
        fields.append({
            "organ_voxels": voxels, "organ_ml": voxels * voxel_ml, "slices": k, "removed_voxels": removed,
            "overlap_voxels": int(overlap[o]), "overlap_lost_voxels": int(lost[o]),
            **_statistics_fields(stats), **heads[o], **_qc_fields(heads[o], voxels * voxel_ml, stats.touches_border, organ),
        })
    _write_masks(label_map, geometry, case_id, ctx)
    if ctx.previews:
        slices = decode_slices_bytes(row["slices"], k, ctx.size)
        label_slices = preprocess_label(label_map, geometry)  # exactly what was written, in the model's view
        write_preview(preview_path(ctx.out, case_id), slices, label_slices, {o.label_value: o.organ for o in organs})
    if "dicom-seg" in ctx.formats:
        seg = _write_dicom_seg(label_map, row, ctx)
        for organ_fields in fields:
            organ_fields.update(seg)
    return fields


def _qc_fields(heads: Mapping[str, Any], organ_ml: float, touches_border: bool, organ: OrganOutput) -> dict[str, Any]:
    """``volume_z``, ``qc_score``, ``needs_review`` and ``qc_reasons`` of one organ of a case
    (:func:`~anunet_platform.qc.assess` against the version's calibrated thresholds)."""
    volumes = organ.volume_tags
    z = None
    if "organ_ml_mean" in volumes and "organ_ml_std" in volumes:
        z = volume_z(organ_ml, float(volumes["organ_ml_mean"]), float(volumes["organ_ml_std"]))
    if "head_agreement" not in heads:
        return {"volume_z": z}
    features = QcFeatures(head_agreement=heads["head_agreement"], uncertain_fraction=heads["uncertain_fraction"],
                          volume_z=z, touches_border=bool(touches_border),
                          deep_slice_fraction=heads.get("deep_slice_fraction"))
    verdict = assess(features, QcThresholds.from_tags(organ.qc_tags))
    return {"volume_z": z, "qc_score": float(verdict.qc_score), "needs_review": bool(verdict.needs_review),
            "qc_reasons": "; ".join(verdict.reasons) or None}


def _statistics_fields(stats) -> dict[str, Any]:
    """The manifest's statistics columns of an :class:`~anunet_core.statistics.OrganStatistics`."""
    def xyz(value):
        return None if value is None else [float(v) for v in value]

    return {
        "mean_intensity": stats.mean_intensity, "std_intensity": stats.std_intensity,
        "intensity_unit": stats.intensity_unit, "bbox_min_mm": xyz(stats.bbox_min_mm),
        "bbox_max_mm": xyz(stats.bbox_max_mm), "centroid_mm": xyz(stats.centroid_mm),
        "touches_border": bool(stats.touches_border), "border_sides": ",".join(stats.border_sides) or None,
    }


def _write_masks(label_map: np.ndarray, geometry: SliceGeometry, case_id: str, ctx: CaseContext) -> None:
    """One organ: its 0/1 mask naming its model. Several: the label map (its header holds the
    labels and the models) and each organ's 0/1 mask beside it. Each mask names the model that
    made it: ``is_done`` trusts no mask another model left behind."""
    if not ctx.several:
        write_mask((label_map > 0).astype(np.uint8), geometry, prediction_path(ctx.out, case_id),
                   description=ctx.organs[0].model_version)
        return
    for organ in ctx.organs:
        write_mask((label_map == organ.label_value).astype(np.uint8), geometry,
                   organ_mask_path(ctx.out, case_id, organ.organ), description=organ.model_version)
    write_mask(label_map, geometry, prediction_path(ctx.out, case_id), description=label_map_description(ctx.organs))


def _write_dicom_seg(label_map: np.ndarray, row: Mapping[str, Any], ctx: CaseContext) -> dict[str, Any]:
    """``dicom_seg`` (OUT-relative path) and ``dicom_seg_error`` of a case: a case that is no
    DICOM series gets neither; a SEG that cannot be written is the reason (the masks stand)."""
    path = dicom_seg_path(ctx.out, row["case_id"])
    headers = row.get("dicom_headers") or ""
    if not headers:
        path.unlink(missing_ok=True)
        return {"dicom_seg": None, "dicom_seg_error": None}
    segments = [SegSegment(organ=o.organ, label_value=o.label_value, algorithm_name=o.model_name,
                           algorithm_version=o.version) for o in ctx.organs]
    try:
        write_dicom_seg(label_map, decode_source_headers(headers), segments, path)
    except Exception as exc:  # noqa: BLE001 - the SEG fails alone: the case keeps its NIfTI masks
        path.unlink(missing_ok=True)
        reason = one_line(exc)
        if row.get("pseudonymized"):  # a reason may name a slice's file: never the patient's folder
            reason = redact(reason, Case.from_dict(row))
        return {"dicom_seg": None, "dicom_seg_error": reason}
    return {"dicom_seg": path.relative_to(ctx.out).as_posix(), "dicom_seg_error": None}


def _base_rows(row: Mapping[str, Any], ctx: CaseContext) -> list[dict[str, Any]]:
    """The case's ``failed`` rows, one per organ, before anything is known (the archive files
    are counted on the first organ's row only: the manifest's ``files`` sums to the archive)."""
    return [
        {
            "case_id": row["case_id"],
            "source": row["source"],
            "status": "failed",
            "error": None,
            "depth": organ.depth,
            "model_version": organ.model_version,
            "organ_voxels": None,
            "organ_ml": None,
            "seconds": 0.0,
            "slices": None,
            "depth_reason": organ.depth_reason,
            "files": int(row.get("files", 1)) if n == 0 else 0,
            "organ": organ.organ,
            "label_value": organ.label_value,
            "postprocess": "on" if organ.postprocess else "off",
            "postprocess_reason": organ.postprocess_reason,
            "signature": row["signature"],
            "preprocessing_version": PREPROCESSING_VERSION,
            "exit_rule": organ.exit_rule,
        }
        for n, organ in enumerate(ctx.organs)
    ]


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


def read_stage(row: dict[str, Any], organ: str, modality: str, size: int, max_voxels: int | None,
               dicom_headers: bool = False) -> dict[str, Any]:
    """:func:`read_case` at the I/O niceness (the Ray task)."""
    _yield_cpu_to_the_model()
    return read_case(row, organ, modality, size, max_voxels, dicom_headers)


def write_stage(row: dict[str, Any], ctx: CaseContext) -> dict[str, Any]:
    """:func:`write_case` at the I/O niceness (the Ray task): see :func:`_written`."""
    _yield_cpu_to_the_model()
    return _written(row, ctx)


def _written(row: dict[str, Any], ctx: CaseContext) -> dict[str, Any]:
    """Write the case; the row the driver gets: the case id, its manifest rows as JSON (one
    column, so Ray Data never retypes a value), the seconds each stage took on it
    (``read_seconds``, ``segment_seconds``, ``write_seconds``) and when its actor was ready
    (``actor_ready_at``, wall clock; NaN if the case never reached an actor)."""
    start = time.perf_counter()
    rows = write_case(row, ctx)
    return {
        "case_id": row["case_id"], "rows": json.dumps(rows),
        "read_seconds": _seconds(row.get("read_seconds")), "segment_seconds": _seconds(row.get("segment_seconds")),
        "write_seconds": time.perf_counter() - start, "actor_ready_at": _seconds(row.get("actor_ready_at"), math.nan),
    }


def _seconds(value: Any, default: float = 0.0) -> float:
    return default if value is None else float(value)
