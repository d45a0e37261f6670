"""Distributed training of ANU-Net (or any network of the paper's comparison, ``--arch``) with Ray Train (TorchTrainer, DDP).

Stages:

    Parquet slice dataset (ingest) -> Ray Data: decode rows to (S, S) arrays
    -> TorchTrainer workers: get_dataset_shard(...).iter_torch_batches -> augment
    -> ANU-Net + HybridLoss (all four deep-supervision heads; a baseline's one output, or
       UNet++'s four), Adam + cosine schedule, bf16 autocast where it is fast (GPU; AMX CPUs),
       DDP (gloo on CPU, NCCL on GPU)
    -> every epoch: validation Dice/IoU/precision/recall of every depth L1-L4 from the one
       model (a network with one output: L4 only; counts all-reduced over workers)
       -> ray.train.report(metrics, checkpoint)

Fault tolerance: a failed worker group restarts from the latest checkpoint
(``FailureConfig(max_failures)``), and running again with the same ``run_name`` and storage
resumes the run where it stopped. Only rank 0 writes to MLflow (into a run the driver opened,
so a resumed run keeps logging into the same MLflow run, through ``registry.tracking``); the
other workers never touch the store.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anunet_core import HybridLoss
from anunet_core.augmentation import AugmentationConfig, augment_batch
from anunet_core.baselines import build_network, network_gflops, output_depths
from anunet_core.metrics import ConfusionCounts, dice, iou, precision, recall
from anunet_core.vocabulary import DEPTHS, validate_arch
from anunet_platform import registry
from anunet_platform.cluster import cluster_shape, init_ray, warn_if_ephemeral
from anunet_platform.contracts import DatasetSummary, read_slices, read_summary, split_files
from anunet_platform.calibration import (
    DEFAULT_ADAPTIVE_MAX_DICE_DROP,
    registration_tags,
    score_validation,
    training_volumes,
    validation_rows,
)
from anunet_platform.logs import configure_job_logging
from anunet_platform.precision import autocast, bf16_is_fast

logger = logging.getLogger(__name__)

VALIDATION_CASES_ARTIFACT = "validation_cases.json"  # per case and depth: volume Dice without/with post-processing
TRAINING_SPLITS = ("train", "val")  # of the dataset's contracts.SPLITS: what training reads
CHECKPOINT_FILES = ("model.pt", "optimizer.pt", "scheduler.pt", "state.json")
# TrainConfig fields that are not parameters of the model (where and how it is stored and named)
NOT_PARAMS = ("tracking_uri", "mlflow_run_id", "storage_path", "run_name")


@dataclass(frozen=True)
class TrainConfig:
    """A training run. ``jobs/train.py`` flags map onto these fields.

    Attributes:
        data: dataset folder written by ``jobs/ingest.py``.
        epochs: passes over the training split.
        arch: the network (:data:`~anunet_core.vocabulary.ARCHS`): ``anunet`` (the paper's), or one
            of its baselines ``unet``, ``r2unet``, ``unetpp``, ``attunet``, ``attr2unet``
            (:mod:`anunet_core.baselines`), trained the same way.
        num_workers: Ray Train workers (DDP ranks).
        use_gpu: one GPU per worker, NCCL, bf16 autocast.
        cpus_per_worker: CPUs each worker reserves (and its torch threads).
        alpha, gamma: the hybrid loss's class balance and focusing exponent.
        learning_rate: Adam's peak learning rate (cosine decay over the epochs).
        batch_size: slices per worker per step.
        augment: random affine + intensity jitter on training slices.
        seed: model init, shuffling and augmentation.
        run_name: the Ray Train run (and MLflow run) name; the same name resumes.
        storage_path: where Ray Train keeps checkpoints (shared storage on a cluster).
        max_failures: worker-group restarts from the latest checkpoint before giving up.
        experiment: MLflow experiment name.
        tracking_uri: MLflow store (default: registry.tracking_uri()).
        mlflow_run_id: log into this existing MLflow run (the driver opens one if None).
        register: after training, register one model per depth in MLflow.
        cache_data: decode the splits once into the object store before training (for
            datasets that fit in memory: the workers then get every CPU, no input pipeline
            runs beside them); otherwise they stream from Parquet every epoch.
        adaptive_max_dice_drop: at registration, the exit rule of ``segment --depth adaptive``
            is calibrated on the validation cases so that their expected volume Dice stays
            within this of the deepest head's (:mod:`anunet_platform.calibration`).
    """

    data: Path
    epochs: int
    arch: str = "anunet"
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1
    alpha: float = 0.5
    gamma: float = 2.0
    learning_rate: float = 1e-3
    batch_size: int = 8
    augment: bool = True
    seed: int = 0
    run_name: str | None = None
    storage_path: Path | None = None
    max_failures: int = 2
    experiment: str = "anunet"
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    register: bool = False
    cache_data: bool = False
    adaptive_max_dice_drop: float = DEFAULT_ADAPTIVE_MAX_DICE_DROP

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        try:
            object.__setattr__(self, "arch", validate_arch(self.arch))
        except ValueError as exc:
            raise ValueError(f"--arch: {exc}") from None
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.num_workers < 1:
            raise ValueError(f"--num-workers must be >= 1, got {self.num_workers}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}")
        if self.gamma < 0:
            raise ValueError(f"--gamma must be >= 0, got {self.gamma}")
        if not 0.0 <= self.adaptive_max_dice_drop <= 1.0:
            raise ValueError(f"--adaptive-max-dice-drop must be in [0, 1] (a Dice difference), got {self.adaptive_max_dice_drop}")
        if self.learning_rate <= 0 or self.batch_size < 1:
            raise ValueError(f"--learning-rate must be > 0 and --batch-size >= 1, got {self.learning_rate}, {self.batch_size}")


@dataclass
class TrainResult:
    """What a finished run leaves: the metrics per depth of its best validated epoch (the one
    registered) and where those weights are."""

    run_name: str
    checkpoint_path: str
    metrics: dict[str, float]
    mlflow_run_id: str | None
    epochs_done: int
    best_epoch: int = 0
    registered: list[dict[str, Any]] = field(default_factory=list)

    def depth_metrics(self) -> dict[int, dict[str, float]]:
        """``{depth: {"val_dice": .., "val_iou": .., "val_precision": .., "val_recall": ..}}`` of
        every depth the network has (a network with one output: depth 4 only)."""
        return {
            d: {f"val_{k}": self.metrics[f"val_{k}_L{d}"] for k in ("dice", "iou", "precision", "recall")}
            for d in DEPTHS if f"val_dice_L{d}" in self.metrics
        }


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def check_dataset(data: Path) -> DatasetSummary:
    """The dataset's summary, once it is known to have both splits (``DatasetError`` otherwise)."""
    summary = read_summary(data)  # a clear error for a folder that is not a dataset
    for split in TRAINING_SPLITS:
        split_files(data, split)
    return summary


BLOCK_SLICES = 256
"""Slices per read task of the streamed splits: whole case shards are grouped until they hold this
many, and a training group's rows are shuffled together (the block-level shuffle). 256 slices at
256 px are 48 MiB, below Ray Data's 128 MiB block limit."""
PREFETCH_BATCHES = 4
"""Batches ``iter_torch_batches`` formats ahead of the training step, in its own thread."""


def slice_datasource(files: list[str], shuffle: bool, seed: int = 0, block_slices: int = BLOCK_SLICES):
    """A Ray Data datasource of the slices of case shards ``files`` (``SliceDatasource`` below),
    for ``ray.data.read_datasource``."""
    return _slice_datasource_class()(files, shuffle, seed, block_slices)


@functools.cache
def _slice_datasource_class() -> type:
    """The datasource class, defined on first use: importing this module imports no Ray."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockAccessor, BlockMetadata

    class SliceDatasource(Datasource):
        """One split's slices, read straight from its Parquet shards with pyarrow, decoded from
        Arrow's buffers (:func:`~anunet_platform.contracts.read_slices`) into ``image``
        float16 and ``mask`` uint8 ``(S, S)`` tensor columns.

        Each read task reads a group of whole case shards holding about ``block_slices``
        slices. With ``shuffle`` the order of the shards is drawn anew for every execution
        (every epoch: Ray Data counts a dataset's executions, ``DataContext._execution_idx``),
        and each group's rows are permuted together: a file-order plus block-level shuffle,
        seeded by ``(seed, execution)``, so the same seed gives the same order and another
        epoch another one (a worker group restarted from a checkpoint gets new datasets, whose
        count starts at 0 again). Which rank gets which block follows the read tasks' completion
        (Ray Train's ``streaming_split``); each rank's share is equal and the ranks together read
        every slice once, but for the at most ``world_size - 1`` slices the equal split leaves out. It replaces ``read_parquet`` (which starts 32 footer-reading actors
        at every execution: several seconds per epoch on a small node) and the local shuffle
        buffer of ``iter_torch_batches`` (which copies every row into and out of its buffer).
        """

        def __init__(self, files: list[str], shuffle: bool, seed: int = 0, block_slices: int = BLOCK_SLICES):
            import pyarrow.parquet as pq

            if block_slices < 1:
                raise ValueError(f"block_slices must be >= 1, got {block_slices}")
            self._files = list(files)
            self._rows = [pq.ParquetFile(f).metadata.num_rows for f in self._files]  # the footers only
            self._shuffle, self._seed, self._block_slices = shuffle, seed, block_slices
            # decoded bytes of one slice (float16 image + uint8 mask), from the first shard's size
            first = next((f for f, n in zip(self._files, self._rows) if n), None)  # read one shard's sizes, not all
            size = int(pq.read_table(first, columns=["size"]).column("size")[0].as_py()) if first else 0
            self._bytes_per_slice = 3 * size**2

        def get_name(self) -> str:
            return "ReadSlices"

        def estimate_inmemory_data_size(self) -> int:
            return sum(self._rows) * self._bytes_per_slice

        def file_order(self, execution: int) -> list[int]:
            """The shards' order in execution ``execution`` (the epoch)."""
            if not self._shuffle:
                return list(range(len(self._files)))
            return np.random.default_rng((self._seed, execution)).permutation(len(self._files)).tolist()

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list:
            execution = data_context._execution_idx if data_context is not None else 0
            groups, group, rows = [], [], 0
            for k in self.file_order(execution):
                if self._rows[k] == 0:
                    continue
                group.append(k)
                rows += self._rows[k]
                if rows >= self._block_slices:
                    groups.append(group)
                    group, rows = [], 0
            if group:
                groups.append(group)
            tasks = []
            for number, group in enumerate(groups):
                paths = [self._files[k] for k in group]
                rows = sum(self._rows[k] for k in group)
                seed = (self._seed, execution, number) if self._shuffle else None
                metadata = BlockMetadata(num_rows=rows, size_bytes=int(rows * self._bytes_per_slice), exec_stats=None,
                                         input_files=tuple(paths))
                tasks.append(ReadTask(lambda paths=paths, seed=seed: [BlockAccessor.batch_to_block(read_slices(paths, seed))],
                                      metadata, per_task_row_limit=per_task_row_limit))
            return tasks

    return SliceDatasource


def load_datasets(data: Path, cache: bool = False, seed: int = 0, block_slices: int = BLOCK_SLICES) -> dict[str, Any]:
    """The train and val splits as Ray Datasets of decoded slices (``image`` float16 and ``mask``
    uint8, ``(S, S)`` each): ``train`` shuffled per epoch (:class:`SliceDatasource`), ``val``
    in file order; materialized in the object store if ``cache``."""
    import ray

    read_summary(data)
    datasets = {}
    for split in TRAINING_SPLITS:
        source = slice_datasource(split_files(data, split), shuffle=split == "train", seed=seed, block_slices=block_slices)
        # one block per read task: Ray would otherwise split them into ~200 blocks of a few slices
        ds = ray.data.read_datasource(source, override_num_blocks=1)
        datasets[split] = ds.materialize() if cache else ds
    return datasets


def training_batches(shard, config: TrainConfig, epoch: int, device: torch.device, generator: torch.Generator | None = None):
    """This rank's training batches of one epoch: ``(images, masks)``, both ``(B, 1, S, S)``
    float32 on ``device``, augmented there (on a GPU worker the augmentation runs on the GPU,
    after the uint8/float16 batch has crossed: half the bytes of float32). The streamed split
    comes shuffled (:func:`slice_datasource`); a cached one (``cache_data``: its blocks are
    fixed) is shuffled here by Ray's local buffer, seeded per epoch. ``PREFETCH_BATCHES``
    batches are formatted ahead in a thread."""
    generator = generator if generator is not None else torch.Generator().manual_seed(config.seed * 1_000_003 + epoch * 1009)
    shuffle = {"local_shuffle_buffer_size": 4 * config.batch_size, "local_shuffle_seed": config.seed + epoch} if config.cache_data else {}
    augmentation = AugmentationConfig()
    for batch in shard.iter_torch_batches(
        batch_size=config.batch_size, prefetch_batches=PREFETCH_BATCHES, device=device,
        pin_memory=device.type == "cuda", drop_last=False, **shuffle,
    ):
        images = batch["image"].float().unsqueeze(1)
        masks = batch["mask"].float().unsqueeze(1)
        if config.augment:
            images, masks = augment_batch(images, masks, generator, augmentation)
        yield images, masks


# ----------------------------------------------------------------------------------------------
# Checkpoints and validation metrics
# ----------------------------------------------------------------------------------------------


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def save_checkpoint(directory: Path, model, optimizer, scheduler, state: dict) -> None:
    torch.save(unwrap(model).state_dict(), directory / "model.pt")
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    (directory / "state.json").write_text(json.dumps(state))


def load_model_weights(checkpoint_dir: Path, arch: str | None = None) -> torch.nn.Module:
    """The trained network of a checkpoint folder (tensors only: ``weights_only=True``); its
    architecture from the checkpoint's ``state.json`` unless ``arch`` is given (checkpoints
    written before ``--arch`` existed are ANU-Net's)."""
    if arch is None:
        state_file = Path(checkpoint_dir) / "state.json"
        arch = json.loads(state_file.read_text()).get("arch", "anunet") if state_file.is_file() else "anunet"
    model = build_network(arch)
    model.load_state_dict(torch.load(Path(checkpoint_dir) / "model.pt", map_location="cpu", weights_only=True))
    return model.eval()


def validation_counts(model: torch.nn.Module, batches, device: torch.device, use_bf16: bool) -> list[ConfusionCounts]:
    """Confusion counts of every head (every output) over this worker's validation shard."""
    totals = [ConfusionCounts(*(torch.zeros((), dtype=torch.int64),) * 3) for _ in output_depths(unwrap(model))]
    model.eval()
    with torch.no_grad():
        for batch in batches:
            images = batch["image"].to(device).float().unsqueeze(1).contiguous(memory_format=torch.channels_last)
            target = batch["mask"].to(device).unsqueeze(1)
            with autocast(device, use_bf16):
                outputs = unwrap(model)(images)
            for d, logits in enumerate(outputs):
                pred = logits.float() > 0
                truth = target > 0
                totals[d] = totals[d] + ConfusionCounts(
                    (pred & truth).sum().cpu(), (pred & ~truth).sum().cpu(), (~pred & truth).sum().cpu()
                )
    return totals


def all_reduce_counts(counts: list[ConfusionCounts], device: torch.device) -> list[ConfusionCounts]:
    """The counts summed over every rank (DDP all-reduce; the counts themselves on one worker)."""
    flat = torch.stack([torch.stack([c.tp, c.fp, c.fn]) for c in counts]).to(device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(flat)
    flat = flat.cpu()
    return [ConfusionCounts(row[0], row[1], row[2]) for row in flat]


def depth_metrics(counts: list[ConfusionCounts], depths: tuple[int, ...] = DEPTHS) -> dict[str, float]:
    """``val_{dice,iou,precision,recall}_L{d}`` of every depth in ``depths`` (one per element of
    ``counts``: :func:`~anunet_core.baselines.output_depths`), and ``val_dice`` of the deepest."""
    metrics = {}
    for d, c in zip(depths, counts, strict=True):
        metrics[f"val_dice_L{d}"] = float(dice(c))
        metrics[f"val_iou_L{d}"] = float(iou(c))
        metrics[f"val_precision_L{d}"] = float(precision(c))
        metrics[f"val_recall_L{d}"] = float(recall(c))
    metrics["val_dice"] = metrics[f"val_dice_L{depths[-1]}"]  # the deepest head: what Tune optimises
    return metrics


# ----------------------------------------------------------------------------------------------
# The training loop (runs on every worker)
# ----------------------------------------------------------------------------------------------


@dataclass
class Worker:
    """One DDP rank's training state: its config and place, the model, loss and optimiser, and
    where MLflow logging goes (rank 0 of a run with an MLflow run only)."""

    config: TrainConfig
    rank: int
    world_size: int
    device: torch.device
    use_bf16: bool
    model: torch.nn.Module
    loss_fn: HybridLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    start_epoch: int = 0
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None


def setup_worker(loop_config: dict) -> Worker:
    """This rank's model (identical initial weights on every rank, wrapped for DDP), loss,
    optimiser and schedule, resumed from Ray Train's latest checkpoint when there is one."""
    import ray.train
    import ray.train.torch

    config = TrainConfig(**loop_config["train_config"])
    context = ray.train.get_context()
    torch.set_num_threads(max(1, config.cpus_per_worker))
    device = ray.train.torch.get_device()
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model = ray.train.torch.prepare_model(build_network(config.arch).to(memory_format=torch.channels_last))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    worker = Worker(
        config=config, rank=context.get_world_rank(), world_size=context.get_world_size(), device=device,
        use_bf16=bf16_is_fast(device), model=model, loss_fn=HybridLoss(alpha=config.alpha, gamma=config.gamma),
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs, eta_min=config.learning_rate / 20
        ),
    )
    if worker.rank == 0 and loop_config.get("mlflow_run_id"):
        worker.mlflow_run_id, worker.tracking_uri = loop_config["mlflow_run_id"], loop_config["tracking_uri"]
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            worker.start_epoch = restore_checkpoint(worker, Path(directory))
    return worker


def restore_checkpoint(worker: Worker, directory: Path) -> int:
    """Load model, optimiser and schedule from a checkpoint folder; returns the next epoch."""
    load = lambda name: torch.load(directory / name, map_location=worker.device, weights_only=True)  # noqa: E731
    unwrap(worker.model).load_state_dict(load("model.pt"))
    worker.optimizer.load_state_dict(load("optimizer.pt"))
    worker.scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))
    return json.loads((directory / "state.json").read_text())["epoch"] + 1


def train_one_epoch(worker: Worker, shard, epoch: int) -> tuple[float, int]:
    """One pass over this rank's training shard (augmented, clipped, bf16 where fast); returns
    ``(mean training loss, slices seen)``. The learning-rate schedule steps once afterwards."""
    config, device = worker.config, worker.device
    worker.model.train()
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch * 1009 + worker.rank)
    losses, slices = [], 0
    for images, masks in training_batches(shard, config, epoch, device, generator):
        images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, worker.use_bf16):
            outputs = worker.model(images)
        loss = worker.loss_fn(outputs, masks)
        worker.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(worker.model.parameters(), max_norm=5.0)
        worker.optimizer.step()
        losses.append(loss.item())
        slices += len(images)
    worker.scheduler.step()
    return (float(np.mean(losses)) if losses else float("nan")), slices


def validate(worker: Worker, shard) -> dict[str, float]:
    """Validation metrics of every depth over the whole validation split (counts of all ranks)."""
    batches = shard.iter_torch_batches(batch_size=2 * worker.config.batch_size, prefetch_batches=PREFETCH_BATCHES)
    counts = validation_counts(worker.model, batches, worker.device, worker.use_bf16)
    return depth_metrics(all_reduce_counts(counts, worker.device), output_depths(unwrap(worker.model)))


def report_epoch(worker: Worker, epoch: int, metrics: dict[str, float]) -> None:
    """Rank 0 logs the epoch (stdout, MLflow) and checkpoints it; every rank reports to Ray Train."""
    import ray.train

    if worker.rank == 0:
        logger.info(
            "epoch %d/%d: loss %.4f, %.1f slices/s, val Dice L1-L4 %s", epoch + 1, worker.config.epochs,
            metrics["train_loss"], metrics["train_slices_per_s"],
            " ".join(f"{metrics[f'val_dice_L{d}']:.3f}" if f"val_dice_L{d}" in metrics else "-" for d in DEPTHS),
        )
    if worker.mlflow_run_id is not None:
        registry.tracking.log_epoch_metrics(worker.mlflow_run_id, metrics, epoch, uri=worker.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if worker.rank == 0:
            state = {"epoch": epoch, "metrics": metrics, "arch": worker.config.arch}
            save_checkpoint(Path(tmp), worker.model, worker.optimizer, worker.scheduler, state)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def train_func(loop_config: dict) -> None:
    """``train_loop_per_worker``: one DDP rank, epoch after epoch: train, validate, report."""
    import ray.train

    configure_job_logging(worker=True)  # a worker process: its INFO lines reach the driver through stdout
    worker = setup_worker(loop_config)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(worker.start_epoch, worker.config.epochs):
        started = time.perf_counter()
        train_loss, slices = train_one_epoch(worker, train_shard, epoch)
        metrics = validate(worker, val_shard) | {
            "epoch": epoch,
            "train_loss": train_loss,
            "learning_rate": worker.scheduler.get_last_lr()[0],
            "train_slices_per_s": slices * worker.world_size / (time.perf_counter() - started),
            "resumed_from_epoch": worker.start_epoch,  # 0 for a fresh run; > 0 after a restart or rerun
        }
        report_epoch(worker, epoch, metrics)


# ----------------------------------------------------------------------------------------------
# The driver side
# ----------------------------------------------------------------------------------------------


def default_run_name(config: TrainConfig, dataset_checksum: str) -> str:
    """Deterministic: the same data and settings give the same name, so a rerun resumes."""
    return f"{config.arch}-{dataset_checksum[:8]}-a{config.alpha:g}-g{config.gamma:g}-lr{config.learning_rate:g}-e{config.epochs}-w{config.num_workers}-s{config.seed}"


def default_storage_path() -> Path:
    """``ANUNET_STORAGE``, else ``./anunet-workspace/ray_results`` (absolute)."""
    if "ANUNET_STORAGE" in os.environ:
        return Path(os.environ["ANUNET_STORAGE"]).resolve()
    path = Path("anunet-workspace/ray_results").resolve()
    warn_if_ephemeral(path, "checkpoint storage", "--storage-path or ANUNET_STORAGE to shared storage")
    return path


def build_trainer(config: TrainConfig, datasets: dict | None = None, callbacks: list | None = None):
    """The ``TorchTrainer`` of a run (not started)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    run_name = config.run_name
    if run_name is None:
        raise ValueError("build_trainer needs config.run_name (see default_run_name)")
    storage = Path(config.storage_path) if config.storage_path else default_storage_path()
    storage.mkdir(parents=True, exist_ok=True)
    loop_config = {
        "train_config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "mlflow_run_id": config.mlflow_run_id,
        "tracking_uri": config.tracking_uri,
    }
    return TorchTrainer(
        train_func,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker} | ({"GPU": 1} if config.use_gpu else {}),
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            # keep the 2 best by validation Dice; Ray always keeps the latest as well (for resume)
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="val_dice", checkpoint_score_order="max"
            ),
            callbacks=callbacks,
        ),
        datasets=datasets if datasets is not None else load_datasets(config.data, cache=config.cache_data, seed=config.seed),
    )


def prepare_run(config: TrainConfig, summary: DatasetSummary) -> TrainConfig:
    """``config`` with its tracking store (checked), run name and MLflow run filled in: the
    MLflow run of the run name is reopened when it exists (a resumed run), else created with
    the run's parameters."""
    tracking = config.tracking_uri or registry.tracking_uri()
    registry.check_tracking_server(tracking)
    registry.current_uri(tracking)
    run_name = config.run_name or default_run_name(config, summary.checksum)
    config = replace(config, run_name=run_name, tracking_uri=tracking)
    if config.mlflow_run_id is None:
        params = {k: v for k, v in asdict(config).items() if k not in NOT_PARAMS}
        params |= {"organ": summary.organ, "modality": summary.modality, "input_size": summary.size,
                   "dataset": summary.checksum}
        run_id = registry.tracking.start_training_run(config.experiment, run_name, summary.checksum, params, uri=tracking)
        config = replace(config, mlflow_run_id=run_id)
    return config


def best_result(result, config: TrainConfig) -> TrainResult:
    """The finished run's best validated epoch (the deepest head's Dice), not merely the last:
    with small batches the BatchNorm statistics of one epoch can be a bad draw."""
    best = result.get_best_checkpoint(metric="val_dice", mode="max") or result.checkpoint
    state = json.loads((Path(best.path) / "state.json").read_text())
    latest = json.loads((Path(result.checkpoint.path) / "state.json").read_text())
    return TrainResult(
        run_name=config.run_name,
        checkpoint_path=str(Path(best.path)),
        metrics=state["metrics"],
        mlflow_run_id=config.mlflow_run_id,
        epochs_done=latest["epoch"] + 1,
        best_epoch=state["epoch"] + 1,
    )


def cpus_per_run(num_workers: int, cpus_per_worker: int, streams_data: bool = True) -> int:
    """CPUs a training run holds at once: its workers', plus, when it streams its data from
    Parquet, one for the Ray Data input pipeline that reads and decodes the slices beside them
    (with none left, the workers wait for data forever). A run with ``cache_data`` decodes the
    splits before its workers start and needs no more than theirs."""
    return num_workers * cpus_per_worker + (1 if streams_data else 0)


def check_worker_layout(config: TrainConfig, node_cpus: float, cluster_cpus: float, cluster_gpus: float) -> None:
    """Refuse a worker layout the cluster cannot run (it would hang, not fail): a worker larger
    than the largest node, workers that leave no CPU for the input pipeline, or missing GPUs.
    The numbers are the connected cluster's now (``cluster.cluster_shape``)."""
    workers, cpus = config.num_workers, config.cpus_per_worker
    if cpus > node_cpus:
        raise ValueError(f"--cpus-per-worker {cpus}: the largest node has {node_cpus:g} CPUs, and a worker runs on one node")
    need = cpus_per_run(workers, cpus, streams_data=not config.cache_data)
    if cluster_cpus < need:
        pipeline = "" if config.cache_data else " and 1 CPU for the input pipeline"
        raise ValueError(
            f"{workers} worker(s) x {cpus} CPU(s){pipeline} need {need} CPUs; the cluster has {cluster_cpus:g}, so "
            f"training would wait forever: lower --num-workers or --cpus-per-worker"
            + ("" if config.cache_data else " (or pass --cache-data if the dataset fits in memory)")
        )
    if config.use_gpu and cluster_gpus < workers:
        raise ValueError(f"--use-gpu with {workers} worker(s) needs {workers} GPUs; the cluster has {cluster_gpus:g}")


def run_training(config: TrainConfig) -> TrainResult:
    """Train (or resume) a run on the Ray cluster; with ``register``, register every depth.

    A worker layout the cluster cannot run is refused before anything starts."""
    summary = check_dataset(config.data)
    init_ray()
    check_worker_layout(config, *cluster_shape())
    config = prepare_run(config, summary)
    logger.info("training %s on %d worker(s), MLflow run %s", config.run_name, config.num_workers, config.mlflow_run_id)
    result = build_trainer(config).fit()
    if result.error:
        raise result.error
    train_result = best_result(result, config)
    registry.tracking.log_checkpoint(config.mlflow_run_id, Path(train_result.checkpoint_path), uri=config.tracking_uri)
    if config.register:
        train_result.registered = register_result(train_result, config, summary)
    logger.info("%s", format_depth_table(train_result))
    return train_result


def register_result(result: TrainResult, config: TrainConfig, summary: DatasetSummary) -> list[dict[str, Any]]:
    """Register every depth of the run's best weights, with the post-processing decision of its
    validation cases, the exit rule of adaptive depth and the QC thresholds
    (:mod:`anunet_platform.calibration`; the per-case Dice are logged to the run as
    ``validation_cases.json``)."""
    model = load_model_weights(Path(result.checkpoint_path), config.arch)
    cases = score_validation(model, config.data, summary.organ, summary.empty_slice_fraction)
    measured = registration_tags(cases, training_volumes(config.data), network_gflops(model, summary.size, summary.size),
                                 config.adaptive_max_dice_drop, depths=output_depths(model))
    for depth, tags in measured.tags.items():
        logger.info("L%d post-processing: %s", depth, tags["postprocess_reason"])
    if measured.exit_calibration is not None:
        logger.info("adaptive depth: %s (%s)", measured.exit_calibration.rule.describe(), measured.exit_calibration.reason)
    metrics = {d: m | measured.metrics.get(d, {}) for d, m in result.depth_metrics().items()}
    registry.tracking.log_json(config.mlflow_run_id, VALIDATION_CASES_ARTIFACT,
                               {f"L{d}": rows for d, rows in validation_rows(cases, output_depths(model)).items()},
                               uri=config.tracking_uri)
    registered = registry.register_depths(
        model, run_id=config.mlflow_run_id, organ=summary.organ, modality=summary.modality, metrics=metrics,
        alpha=config.alpha, gamma=config.gamma, dataset_checksum=summary.checksum, input_size=summary.size,
        uri=config.tracking_uri, extra_tags=measured.tags,
    )
    return [asdict(r) for r in registered]


def format_depth_table(result: TrainResult) -> str:
    """The run's best validation metrics per depth, as a plain-text table."""
    rows = [f"run {result.run_name}: {result.epochs_done} epochs, best validation at epoch {result.best_epoch}",
            f"{'depth':>5} {'val Dice':>9} {'val IoU':>8} {'precision':>10} {'recall':>7}"]
    for d, m in result.depth_metrics().items():
        rows.append(f"{'L' + str(d):>5} {m['val_dice']:>9.4f} {m['val_iou']:>8.4f} {m['val_precision']:>10.4f} {m['val_recall']:>7.4f}")
    return "\n".join(rows)
