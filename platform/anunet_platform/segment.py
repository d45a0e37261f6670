"""Nightly batch segmentation of a scan archive with Ray Data, at an automatically chosen depth.

    discover cases (names only) -> skip those done with the same model version
    -> Ray Data, streaming, one row per case:
         read + preprocess (tasks; the same code as ingest)
      -> ANU-Net at the chosen depth (an actor pool: the model is loaded once per actor;
         CPU or GPU actors; slices in batches of ``batch_size``)
      -> restore the source geometry, threshold at 0.5, write the mask, the preview and the
         case's record (tasks; every write atomic)
    -> OUT/manifest.parquet (one row per case) and OUT/summary.json

Output layout (DESIGN.md)::

    OUT/masks/{case_id}.nii.gz      uint8 0/1, the source scan's exact shape and affine
    OUT/previews/{case_id}.png      a few axial slices with the mask outline
    OUT/records/{case_id}.json      the case's manifest row, written when the case is done:
                                    what a rerun reads to skip finished cases
    OUT/manifest.parquet            case_id, source, status (ok/failed/skipped), error, depth,
                                    model_version, organ_voxels, organ_ml, seconds, + slices,
                                    depth_reason
    OUT/summary.json                counts, slices/s, the depth choice and its reason

A case is *done* when its record says ``ok``, its mask exists, and the record's model version,
preprocessing version and source signature (file names, sizes, modification times) equal
this run's: then it is ``skipped`` (the row keeps the earlier result). A killed run leaves
records for the finished cases only, so the rerun does the rest. A scan that cannot be read
or segmented is a ``failed`` row with a one-line reason; the other cases go on.

Memory: the archive is streamed (one row per case, Ray Data's backpressure bounds the
volumes in flight); the driver only holds the small result rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from anunet_core import ANUNet, optimize_for_inference
from anunet_core.archives import Case, discover_cases, load_case
from anunet_core.atomic import write_atomic
from anunet_core.preprocessing import PREPROCESSING_VERSION, SliceGeometry, preprocess_volume, restore_mask
from anunet_core.preview import write_preview
from anunet_core.volumes import voxel_volume_ml, write_mask
from anunet_platform import registry
from anunet_platform.cluster import cluster_shape, init_ray
from anunet_platform.evaluate import MANIFEST_FILE, prediction_path  # the layout evaluate reads
from anunet_platform.ingest import case_error
from anunet_platform.precision import autocast
from anunet_platform.selection import DepthChoice, DepthPolicy, candidates_from_registry, choose_depth

logger = logging.getLogger(__name__)

PREVIEWS_DIR, RECORDS_DIR, SUMMARY_FILE = "previews", "records", "summary.json"
THRESHOLD = 0.5
_SLICE_DTYPE = np.float16  # as ingest stores training slices: the model sees the same values

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
    ]
)


class SegmentError(ValueError):
    """The job cannot run or produced nothing (bad archive, model, output folder)."""


# ----------------------------------------------------------------------------------------------
# Configuration and the pure policies (tested without Ray)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentConfig:
    """The segment job's settings; field names follow ``jobs/segment.py``'s flags."""

    archive: Path
    out: Path
    model: str
    depth: str | int = "auto"
    max_dice_drop: float = 0.01
    latency_budget_ms: float | None = None
    alias: str = registry.PRODUCTION
    layout: str = "auto"
    batch_size: int = 16
    use_gpu: bool = False
    num_actors: int | None = None
    cpus_per_actor: float | None = None
    previews: bool = True
    recompute: bool = False
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "archive", Path(self.archive))
        object.__setattr__(self, "out", Path(self.out))
        if self.batch_size < 1:
            raise SegmentError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_actors is not None and self.num_actors < 1:
            raise SegmentError(f"num_actors must be >= 1, got {self.num_actors}")
        if self.cpus_per_actor is not None and not self.cpus_per_actor > 0:
            raise SegmentError(f"cpus_per_actor must be > 0, got {self.cpus_per_actor}")


@dataclass(frozen=True)
class ActorPlan:
    """How the model actor pool is laid out: ``num_actors`` actors, each reserving ``cpus``
    logical CPUs and ``gpus`` GPUs and running torch with ``threads`` threads."""

    num_actors: int
    cpus: float
    gpus: float
    threads: int


IO_RESERVE_SMALL, IO_RESERVE = 0.5, 1.0  # logical CPUs left for reading and writing


def plan_actors(
    node_cpus: float,
    cluster_cpus: float,
    cluster_gpus: float,
    use_gpu: bool,
    num_actors: int | None = None,
    cpus_per_actor: float | None = None,
    cases: int | None = None,
) -> ActorPlan:
    """The actor pool for a cluster whose largest node has ``node_cpus`` CPUs.

    GPU: one GPU and one CPU per actor, one actor per GPU by default. CPU: the reading and
    writing tasks keep ``IO_RESERVE`` CPUs (half a CPU on nodes of fewer than 4), and by
    default every other CPU runs one single-threaded actor. Measured on 2 cores
    (``benchmarks/bench_segment.py``): two 1-thread actors segment 1.4x (L1) to 1.6x (L4) faster
    than one 2-thread actor, because a reading task that preempts one thread of a
    multi-threaded forward stalls the other at the next barrier. ``cpus_per_actor`` > 1 gives
    fewer, multi-threaded actors (less memory: one model copy each). Explicit
    ``num_actors``/``cpus_per_actor`` win. A default pool never has more actors than ``cases``
    (the scans to segment: each is one row, and an idle actor only costs its start-up).
    :class:`SegmentError` when the request cannot fit.
    """
    plan = _plan_actors(node_cpus, cluster_cpus, cluster_gpus, use_gpu, num_actors, cpus_per_actor)
    if num_actors is None and cases is not None and 0 < cases < plan.num_actors:
        plan = replace(plan, num_actors=cases)
    return plan


def _plan_actors(node_cpus, cluster_cpus, cluster_gpus, use_gpu, num_actors, cpus_per_actor) -> ActorPlan:
    if use_gpu:
        if cluster_gpus < 1:
            raise SegmentError("--use-gpu: the Ray cluster has no GPU (ray.cluster_resources() shows none)")
        actors = num_actors or int(cluster_gpus)
        if actors > cluster_gpus:
            raise SegmentError(f"--num-actors {actors} needs {actors} GPUs; the cluster has {cluster_gpus:g}")
        cpus = float(cpus_per_actor or 1.0)
        return ActorPlan(actors, cpus, 1.0, max(1, math.ceil(cpus)))
    if node_cpus <= 0 or cluster_cpus <= 0:
        raise SegmentError("the Ray cluster has no CPU")
    reserve = IO_RESERVE if node_cpus >= 4 else IO_RESERVE_SMALL
    available = max(cluster_cpus - reserve, 0.5)
    if cpus_per_actor is None:
        actors = num_actors or max(1, int(available + 0.5))  # one per CPU; 1.5 CPUs -> 2 actors
        cpus = min(1.0, available / actors)
    else:
        cpus = float(cpus_per_actor)
        if cpus > node_cpus:
            raise SegmentError(f"--cpus-per-actor {cpus:g} exceeds the largest node's {node_cpus:g} CPUs")
        actors = num_actors or max(1, int(available // cpus))
    if actors * cpus > cluster_cpus:
        raise SegmentError(
            f"{actors} actors x {cpus:g} CPUs exceed the cluster's {cluster_cpus:g} CPUs; lower --num-actors or --cpus-per-actor"
        )
    return ActorPlan(actors, cpus, 0.0, max(1, math.ceil(cpus)))


def image_signature(case: Case) -> str:
    """SHA-256 of the image's file names, sizes and modification times: cheap (no pixel is
    read) and changes when a scan is replaced. Labels are not part of it."""
    files = sorted(p for p in case.image.iterdir() if p.is_file()) if case.image.is_dir() else [case.image]
    digest = hashlib.sha256()
    for path in files:
        try:
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path.name}\0missing\n".encode())
    return digest.hexdigest()


def is_done(record: Mapping[str, Any] | None, model_version: str, signature: str, mask: Path) -> bool:
    """Whether a case's earlier ``record`` makes this run's work on it unnecessary: it was
    segmented (``ok``) by the same model version and preprocessing, from the same image
    files, and its mask is still there."""
    return (
        record is not None
        and record.get("status") == "ok"
        and record.get("model_version") == model_version
        and record.get("preprocessing_version") == PREPROCESSING_VERSION
        and record.get("signature") == signature
        and mask.is_file()
    )


def model_uri(name: str, version: str) -> str:
    """The manifest's ``model_version``: ``models:/<name>/<version>``, loadable by MLflow."""
    return f"models:/{name}/{version}"


# ----------------------------------------------------------------------------------------------
# The chosen model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectedModel:
    """The registered depth the job runs: its registry entry, the choice and the weights."""

    organ: str
    modality: str
    registered: registry.RegisteredDepth
    choice: DepthChoice
    input_size: int
    config: dict[str, Any] = field(repr=False)
    state_dict: dict[str, np.ndarray] = field(repr=False)

    @property
    def depth(self) -> int:
        return self.choice.depth

    @property
    def model_version(self) -> str:
        return model_uri(self.registered.name, self.registered.version)


def select_model(config: SegmentConfig) -> SelectedModel:
    """Resolve ``--model``, apply the depth policy to the registry's tags and load that depth.

    The per-depth versions come from :func:`registry.production_depths` (the alias, else the
    newest versions with a warning). The choice and its reason are logged.
    """
    organ, modality, named_depth = registry.parse_model_family(config.model)
    depth_flag = config.depth
    if named_depth is not None:
        if str(depth_flag).lower() not in ("auto", str(named_depth)):
            raise SegmentError(f"--model {config.model} names depth {named_depth} but --depth is {depth_flag}")
        depth_flag = named_depth
    policy = DepthPolicy.from_flags(depth_flag, config.max_dice_drop, config.latency_budget_ms)
    depths = registry.production_depths(organ, modality, alias=config.alias, uri=config.tracking_uri)
    if policy.depth is not None:
        if policy.depth not in depths:
            raise SegmentError(
                f"--depth {policy.depth}: {registry.registered_model_name(organ, modality, policy.depth)} is not registered"
            )
        choice = choose_depth(candidates_from_registry({policy.depth: depths[policy.depth]}), policy)
    else:
        choice = choose_depth(candidates_from_registry(depths), policy)
    chosen = depths[choice.depth]
    network, _ = registry.load_registered(chosen.name, version=chosen.version, uri=config.tracking_uri)
    input_size = int(chosen.tags.get("input_size", "0") or 0)
    if input_size < 16:
        raise SegmentError(f"{chosen.name} version {chosen.version} has no input_size tag (registered elsewhere?)")
    logger.info("depth L%d (%s v%s): %s", choice.depth, chosen.name, chosen.version, choice.reason)
    return SelectedModel(
        organ=organ,
        modality=modality,
        registered=chosen,
        choice=choice,
        input_size=input_size,
        config={"in_channels": network.in_channels, "filters": list(network.filters), "depth": network.depth},
        state_dict={k: v.detach().cpu().numpy() for k, v in network.state_dict().items()},
    )


# ----------------------------------------------------------------------------------------------
# One case, stage by stage (each runs in a Ray task or actor; none raises for bad input)
# ----------------------------------------------------------------------------------------------


def _error_of(value: Any) -> str | None:
    """A row's ``error`` field as a string or None (Ray Data turns a None into NaN or '')."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return None
    return str(value) or None


def read_case(row: dict[str, Any], organ: str, modality: str, size: int) -> dict[str, Any]:
    """Stage 1: read the scan and preprocess it exactly as ingest does.

    Adds ``slices`` (float16 bytes of ``(K, size, size)``), ``num_slices``, ``geometry`` (JSON
    of :class:`SliceGeometry`) and ``error`` (None, or the one-line reason)."""
    start = time.perf_counter()
    out = dict(row, slices=b"", num_slices=0, geometry="", error="")  # "": a string column, never NaN
    try:
        volume, _ = load_case(Case.from_dict(row), organ=organ, modality=modality, with_label=False)
        slices, geometry = preprocess_volume(volume, size=size)
        out.update(
            slices=slices.astype(_SLICE_DTYPE).tobytes(),
            num_slices=int(slices.shape[0]),
            geometry=json.dumps(geometry.to_dict()),
        )
    except Exception as exc:  # noqa: BLE001 - any failure of one case is that case's failed row
        out["error"] = case_error(exc)
    out["seconds"] = float(row.get("seconds", 0.0)) + time.perf_counter() - start
    return out


class SliceSegmenter:
    """Stage 2, a Ray Data actor: the chosen depth's network, loaded once per actor.

    Called with batches of case rows; each case's ``(K, size, size)`` slices run through the
    network in chunks of ``batch_size`` and come back as ``probs``: float16 bytes of the
    deepest head's sigmoid, ``(K, size, size)``. Rows that already failed pass through.
    """

    def __init__(self, weights, config: dict[str, Any], size: int, batch_size: int, use_gpu: bool, threads: int) -> None:
        import ray

        if not isinstance(weights, dict):  # [ObjectRef]: the driver's one copy in the object store
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
        probs = np.empty(slices.shape, dtype=_SLICE_DTYPE)
        with autocast(self.device):
            for start in range(0, slices.shape[0], self.batch_size):
                chunk = torch.from_numpy(slices[start : start + self.batch_size]).to(self.device, torch.float32)
                logits = self.net(chunk[:, None])[-1]
                probs[start : start + chunk.shape[0]] = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
        return probs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results, seconds, errors = [], [], []
        for i in range(len(batch["case_id"])):
            start = time.perf_counter()
            error, probs = _error_of(batch["error"][i]), b""
            if error is None:
                try:
                    k = int(batch["num_slices"][i])
                    slices = np.frombuffer(batch["slices"][i], dtype=_SLICE_DTYPE).reshape(k, self.size, self.size)
                    probs = self.segment(slices.astype(np.float32)).tobytes()
                except Exception as exc:  # noqa: BLE001 - the case fails, the actor goes on
                    error = case_error(exc)
            results.append(probs)
            errors.append(error)
            seconds.append(float(batch["seconds"][i]) + time.perf_counter() - start)
        out = {key: value for key, value in batch.items() if key != "slices"}
        out.update(probs=np.array(results, dtype=object), error=np.array([e or "" for e in errors], dtype=object))
        out["seconds"] = np.array(seconds, dtype=np.float64)
        out["slices"] = batch["slices"]  # the preview needs them
        return out


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
        geometry = SliceGeometry.from_dict(json.loads(row["geometry"]))
        k = int(row["num_slices"])
        probs = np.frombuffer(row["probs"], dtype=_SLICE_DTYPE).reshape(k, ctx.size, ctx.size)
        mask = restore_mask(probs.astype(np.float32), geometry, threshold=THRESHOLD)
        write_mask(mask, geometry, prediction_path(ctx.out, row["case_id"]))
        if ctx.previews:
            slices = np.frombuffer(row["slices"], dtype=_SLICE_DTYPE).reshape(k, ctx.size, ctx.size)
            write_preview(ctx.out / PREVIEWS_DIR / f"{row['case_id']}.png", slices, probs > THRESHOLD)
        voxels = int(mask.sum(dtype=np.int64))
        record.update(
            status="ok", organ_voxels=voxels, organ_ml=voxels * voxel_volume_ml(geometry.affine), slices=k
        )
    except Exception as exc:  # noqa: BLE001 - the case fails, the job goes on
        record.update(status="failed", error=error or case_error(exc))
    record["seconds"] = float(row.get("seconds", 0.0)) + time.perf_counter() - start
    write_record(record, ctx.out)
    return record


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
        "signature": row["signature"],
        "preprocessing_version": PREPROCESSING_VERSION,
    }


def write_record(record: Mapping[str, Any], out: Path) -> None:
    path = out / RECORDS_DIR / f"{record['case_id']}.json"
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(dict(record), sort_keys=True) + "\n"))


def read_record(out: Path, case_id: str) -> dict[str, Any] | None:
    """The case's earlier record, or None (none, or unreadable: then the case is redone)."""
    path = out / RECORDS_DIR / f"{case_id}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------


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
    slices: int = 0
    seconds: float = 0.0
    slices_per_second: float = 0.0
    actors: int = 0
    device: str = "cpu"

    def line(self) -> str:
        return (
            f"segment: {self.ok} ok, {self.failed} failed, {self.skipped} skipped of {self.cases} cases; "
            f"{self.slices} slices in {self.seconds:.1f} s ({self.slices_per_second:.1f} slices/s) "
            f"with L{self.depth} {self.model_version}"
        )


def write_manifest(rows: Iterable[Mapping[str, Any]], out: Path, choice: DepthChoice) -> Path:
    """``OUT/manifest.parquet``: the rows sorted by case id, the depth choice in its metadata."""
    rows = sorted(rows, key=lambda r: r["case_id"])
    columns = {name: [r.get(name) for r in rows] for name in MANIFEST_SCHEMA.names}
    schema = MANIFEST_SCHEMA.with_metadata({"depth": str(choice.depth), "depth_reason": choice.reason})
    table = pa.table(columns, schema=schema)
    return write_atomic(out / MANIFEST_FILE, lambda tmp: pq.write_table(table, tmp))


def run_segmentation(config: SegmentConfig) -> SegmentSummary:
    """Segment ``config.archive`` into ``config.out``; print progress and the summary.

    Connects to the Ray cluster in ``RAY_ADDRESS`` or starts a local one (only when there is
    work: a rerun with every case done touches no cluster). Raises :class:`SegmentError` (a
    ``ValueError``) for a bad archive, model or output folder, and when every case failed.
    """
    start = time.perf_counter()
    if not config.archive.is_dir():
        raise SegmentError(f"--archive {config.archive} is not a folder")
    if config.out.exists() and not config.out.is_dir():
        raise SegmentError(f"--out {config.out} exists and is not a folder")
    cases = discover_cases(config.archive, layout=config.layout, require_labels=False)
    selected = select_model(config)
    choice = selected.choice
    print(f"depth: L{choice.depth} ({selected.model_version}): {choice.reason}", flush=True)
    config.out.mkdir(parents=True, exist_ok=True)

    rows: dict[str, dict[str, Any]] = {}
    todo: list[dict[str, Any]] = []
    for case in cases:
        source = os.path.relpath(case.image, config.archive)
        signature = image_signature(case)
        record = None if config.recompute else read_record(config.out, case.case_id)
        if is_done(record, selected.model_version, signature, prediction_path(config.out, case.case_id)):
            rows[case.case_id] = dict(record, status="skipped", seconds=0.0, source=source)
        else:
            todo.append(case.to_dict() | {"source": source, "signature": signature, "seconds": 0.0})
    summary = SegmentSummary(
        archive=str(config.archive), out=str(config.out), model=config.model,
        model_version=selected.model_version, depth=choice.depth, depth_reason=choice.reason,
        cases=len(cases), skipped=len(rows), device="cuda" if config.use_gpu else "cpu",
    )
    print(f"{len(cases)} cases in {config.archive}: {len(todo)} to segment, {len(rows)} already done", flush=True)

    work_seconds = 0.0
    if todo:
        init_ray()
        work_start = time.perf_counter()  # from here on: slices/s of the pipeline itself
        for record in _segment_cases(todo, selected, config, summary):
            rows[record["case_id"]] = record
            done = sum(r["status"] != "skipped" for r in rows.values())
            what = (
                f"ok, {record['slices']} slices, {record['organ_ml']:.1f} mL"
                if record["status"] == "ok" else f"failed: {record['error']}"
            )
            print(f"[{done}/{len(todo)}] {record['case_id']}: {what} ({record['seconds']:.1f} s)", flush=True)
        work_seconds = time.perf_counter() - work_start

    manifest_rows = [rows[c.case_id] for c in cases if c.case_id in rows]
    write_manifest(manifest_rows, config.out, choice)
    summary.ok = sum(r["status"] == "ok" for r in manifest_rows)
    summary.failed = sum(r["status"] == "failed" for r in manifest_rows)
    summary.slices = sum(int(r["slices"] or 0) for r in manifest_rows if r["status"] == "ok")
    summary.seconds = time.perf_counter() - start
    summary.slices_per_second = summary.slices / work_seconds if summary.slices and work_seconds > 0 else 0.0
    write_atomic(
        config.out / SUMMARY_FILE, lambda tmp: tmp.write_text(json.dumps(asdict(summary), indent=2) + "\n")
    )
    print(summary.line(), flush=True)
    if summary.failed:
        print(f"{summary.failed} case(s) failed; reasons in {config.out / MANIFEST_FILE} (status 'failed')", flush=True)
    if todo and summary.ok == 0 and summary.skipped == 0:
        first = next(r["error"] for r in manifest_rows if r["status"] == "failed")
        raise SegmentError(f"no case of {config.archive} could be segmented ({summary.failed} failed; first: {first})")
    return summary


IO_NICENESS = 10  # read/write tasks run at this Unix niceness: the model's threads come first


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


_NICED = False


def _read_stage(row: dict[str, Any], organ: str, modality: str, size: int) -> dict[str, Any]:
    _yield_cpu_to_the_model()
    return read_case(row, organ, modality, size)


def _write_stage(row: dict[str, Any], ctx: CaseContext) -> dict[str, Any]:
    _yield_cpu_to_the_model()
    return write_case(row, ctx)


def _segment_cases(todo: list[dict[str, Any]], selected: SelectedModel, config: SegmentConfig,
                   summary: SegmentSummary):
    """The Ray Data pipeline over the cases to do; yields each finished case's row."""
    import ray

    plan = plan_actors(*cluster_shape(), config.use_gpu, config.num_actors, config.cpus_per_actor, cases=len(todo))
    summary.actors = plan.num_actors
    logger.info(
        "segment: %d actors x (%g CPU, %g GPU, %d threads), batch %d slices",
        plan.num_actors, plan.cpus, plan.gpus, plan.threads, config.batch_size,
    )
    ctx = CaseContext(
        out=config.out, depth=selected.depth, model_version=selected.model_version,
        depth_reason=selected.choice.reason, size=selected.input_size, previews=config.previews,
    )
    io_cpus = IO_RESERVE_SMALL / 2  # reading and writing: light next to the network
    weights = ray.put(selected.state_dict)
    dataset = ray.data.from_items(todo, override_num_blocks=len(todo))
    dataset = dataset.map(
        _read_stage, fn_kwargs={"organ": selected.organ, "modality": selected.modality, "size": selected.input_size},
        num_cpus=io_cpus,
    )
    dataset = dataset.map_batches(
        SliceSegmenter,
        fn_constructor_kwargs={
            # wrapped in a list: a nested reference, so a restarted actor fetches it again
            # rather than needing its constructor arguments kept (ray-project/ray#53727)
            "weights": [weights], "config": selected.config, "size": selected.input_size,
            "batch_size": config.batch_size, "use_gpu": config.use_gpu, "threads": plan.threads,
        },
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.num_actors),
        udf_modifying_row_count=False,
        num_cpus=plan.cpus,
        num_gpus=plan.gpus,
    )
    dataset = dataset.map(_write_stage, fn_kwargs={"ctx": ctx}, num_cpus=io_cpus)
    yield from dataset.iter_rows()
