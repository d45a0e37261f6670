"""The demo: the whole chain on synthetic data, locally, in a few minutes on 2 CPU cores.

Stages, each the same platform call a user's job makes:

    make_archive (synthetic CT) -> run_ingest (Ray Data, Parquet split by patient)
    -> run_training (Ray Train, register=True: one MLflow model per depth, alias candidate)
    -> promote (alias production) -> a per-depth report in the paper's Table 6 form
    -> run_segmentation of new scans (the nightly job, depth auto) -> run_evaluate of its masks

Everything lands under ``--workdir``: ``archive/``, ``dataset/``, ``ray_results/``,
``incoming/`` (the new scans), ``segmentations/`` (masks, previews, manifest, evaluation) and
the MLflow store ``mlflow.db`` (unless ``MLFLOW_TRACKING_URI`` points elsewhere).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anunet_core.io import write_json_atomic
from anunet_core.synthetic import make_archive
from anunet_platform import registry
from anunet_platform.cluster import cluster_shape, init_ray
from anunet_platform.evaluate import run_evaluate, summarize
from anunet_platform.ingest import IngestConfig, run_ingest
from anunet_platform.segment import SegmentConfig, run_segmentation
from anunet_platform.train import TrainConfig, run_training

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes chosen so the chain runs in minutes on a laptop (the contract size is 256)."""

    workdir: Path = Path("anunet-demo")
    cases: int = 10
    volume_shape: tuple[int, int, int] = (96, 96, 32)
    size: int = 128
    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 2e-3
    seed: int = 0
    incoming_cases: int = 3  # new scans for the nightly job (another seed: patients never seen)


@dataclass
class DepthReport:
    depth: int
    model: str
    version: str
    params: int
    val_dice: float
    val_iou: float
    latency_ms_per_slice: float


@dataclass
class DemoReport:
    workdir: str
    dataset_checksum: str
    mlflow_run_id: str
    tracking_uri: str
    epochs: int
    depths: list[DepthReport] = field(default_factory=list)
    segment_depth: int = 0
    segment_reason: str = ""
    segmented_cases: int = 0
    segment_slices_per_second: float = 0.0
    incoming_dice: float | None = None
    seconds: float = 0.0

    def table(self) -> str:
        rows = [f"{'depth':>5} {'registered model':<22} {'v':>3} {'params (M)':>11} {'val Dice':>9} {'val IoU':>8} {'latency (ms/slice)':>19}"]
        for d in self.depths:
            rows.append(
                f"{'L' + str(d.depth):>5} {d.model:<22} {d.version:>3} {d.params / 1e6:>11.4f} {d.val_dice:>9.4f} "
                f"{d.val_iou:>8.4f} {d.latency_ms_per_slice:>19.2f}"
            )
        return "\n".join(rows)


def run_demo(config: DemoConfig) -> DemoReport:
    start = time.perf_counter()
    workdir = config.workdir.resolve()
    archive, dataset = workdir / "archive", workdir / "dataset"
    incoming, segmentations = workdir / "incoming", workdir / "segmentations"
    tracking = registry.tracking_uri(workspace=workdir)

    logger.info("[1/5] synthetic CT archive: %d cases -> %s", config.cases, archive)
    if not any(archive.glob("case_*")):
        make_archive(archive, cases=config.cases, modality="CT", fmt="nifti", seed=config.seed, shape=config.volume_shape)

    logger.info("[2/5] ingest with Ray Data -> %s", dataset)
    summary = run_ingest(
        IngestConfig(source=archive, out=dataset, organ="liver", modality="CT", size=config.size, seed=config.seed, overwrite=True)
    )

    init_ray()
    node_cpus = int(cluster_shape()[0]) or 1  # the whole largest node: a pod's CPUs, not the host's
    logger.info("[3/5] train with Ray Train for %d epochs and register every depth", config.epochs)
    result = run_training(
        TrainConfig(
            data=dataset, epochs=config.epochs, num_workers=1, cpus_per_worker=node_cpus,
            batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed,
            storage_path=workdir / "ray_results", tracking_uri=tracking, register=True, cache_data=True,
            experiment="anunet-demo",
        )
    )

    logger.info("[4/5] promote the run's four versions to production")
    registry.promote(result.mlflow_run_id, uri=tracking)
    report = DemoReport(str(workdir), summary.checksum, result.mlflow_run_id, tracking, result.epochs_done)
    for depth, version in sorted(registry.production_depths("liver", "CT", uri=tracking).items()):
        report.depths.append(
            DepthReport(
                depth=depth, model=version.name, version=version.version, params=version.params,
                val_dice=float(version.tags["val_dice"]), val_iou=float(version.tags["val_iou"]),
                latency_ms_per_slice=version.latency_ms_per_slice,
            )
        )

    logger.info("[5/5] segment %d new scans with the nightly job (depth auto) and score them", config.incoming_cases)
    if not any(incoming.glob("case_*")):
        make_archive(
            incoming, cases=config.incoming_cases, modality="CT", fmt="nifti", seed=config.seed + 1000,
            shape=config.volume_shape,
        )
    segmented = run_segmentation(
        SegmentConfig(archive=incoming, out=segmentations, model="anunet-liver-ct", tracking_uri=tracking)
    )
    scores = summarize(run_evaluate(segmentations, incoming, organ="liver", modality="CT"))
    report.segment_depth, report.segment_reason = segmented.depth, segmented.depth_reason
    report.segmented_cases = segmented.ok + segmented.skipped
    report.segment_slices_per_second = segmented.slices_per_second
    report.incoming_dice = scores["dice"]
    report.seconds = time.perf_counter() - start
    write_json_atomic(workdir / "report.json", asdict(report))
    _log_where_to_look(report, dataset, segmentations)
    return report


def _log_where_to_look(report: DemoReport, dataset: Path, segmentations: Path) -> None:
    """The closing lines: the per-depth table, the nightly job's result, and where things are."""
    workdir, tracking = Path(report.workdir), report.tracking_uri
    dice = "n/a" if report.incoming_dice is None else f"{report.incoming_dice:.4f}"
    db = tracking.removeprefix("sqlite:///")
    sqlite = tracking.startswith("sqlite")
    lines = [
        "",
        report.table(),
        (
            f"\nnightly job on {report.segmented_cases} new scans: L{report.segment_depth} ({report.segment_reason}); "
            f"mean Dice {dice}"
        ),
        f"\ndone in {report.seconds:.0f} s. Where to look:",
        f"  MLflow UI:   mlflow ui --backend-store-uri {tracking}" if sqlite else f"  MLflow:      {tracking}",
        f"  dataset:     {dataset} (summary.json, errors.json)",
        f"  checkpoints: {workdir / 'ray_results'}",
        f"  masks:       {segmentations / 'masks'} (previews/, manifest.parquet, evaluation.csv beside)",
        f"  report:      {workdir / 'report.json'}" + ("" if not sqlite else f"   (MLflow store {db})"),
    ]
    for line in lines:
        logger.info("%s", line)
