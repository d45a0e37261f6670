"""The demo: the whole chain on synthetic data, locally, in a few minutes on 2 CPU cores.

Stages: synthetic CT archive -> Ray Data ingest (Parquet, split by patient) -> a short
training run of ANU-Net with the hybrid loss -> validation Dice of every depth from the one
model, parameters and measured latency per depth (the paper's Table 6 form) -> where to look.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from anunet_core import ANUNet, HybridLoss, count_parameters, optimize_for_inference, prune
from anunet_core.metrics import confusion_counts, dice
from anunet_core.synthetic import make_archive
from anunet_platform.ingest import IngestConfig, decode_slices, run_ingest
from anunet_platform.precision import autocast


@dataclass(frozen=True)
class DemoConfig:
    """Sizes chosen so the chain runs in minutes on a laptop (the contract size is 256)."""

    workdir: Path = Path("anunet-demo")
    cases: int = 8
    volume_shape: tuple[int, int, int] = (96, 96, 32)
    size: int = 128
    epochs: int = 10
    batch_size: int = 8
    learning_rate: float = 2e-3
    seed: int = 0


@dataclass
class DepthReport:
    depth: int
    params: int
    val_dice: float
    latency_ms_per_slice: float


@dataclass
class DemoReport:
    workdir: str
    dataset_checksum: str
    train_slices: int
    val_slices: int
    epochs: int
    losses: list[float] = field(default_factory=list)
    depths: list[DepthReport] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        rows = [f"{'depth':>5} {'params (M)':>11} {'val Dice':>9} {'latency (ms/slice)':>19}"]
        for d in self.depths:
            rows.append(f"{'L' + str(d.depth):>5} {d.params / 1e6:>11.4f} {d.val_dice:>9.4f} {d.latency_ms_per_slice:>19.2f}")
        return "\n".join(rows)


def load_split(dataset: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and masks of one split as ``(N, 1, S, S)`` float32 tensors."""
    files = sorted((dataset / split).glob("*.parquet"))
    if not files:
        raise ValueError(f"the dataset {dataset} has no {split} slices")
    images, masks = decode_slices(pq.read_table(files))
    return torch.from_numpy(images)[:, None], torch.from_numpy(masks.astype(np.float32))[:, None]


def validation_dice(model: ANUNet, images: torch.Tensor, masks: torch.Tensor, batch_size: int) -> list[float]:
    """Volume-pooled Dice of every depth's head over the validation slices."""
    model.eval()
    totals = [None] * model.depth
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            outputs = model(images[start : start + batch_size])
            target = masks[start : start + batch_size]
            for d, logits in enumerate(outputs):
                counts = confusion_counts(logits > 0, target, per="volume")
                totals[d] = counts if totals[d] is None else totals[d] + counts
    return [float(dice(c)) for c in totals]


def latency_ms_per_slice(model: ANUNet, depth: int, size: int, batch: int = 4, rounds: int = 3) -> float:
    fast = optimize_for_inference(model, depth)
    x = torch.randn(batch, 1, size, size)
    fast(x)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fast(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times)) / batch


def run_demo(config: DemoConfig) -> DemoReport:
    start = time.perf_counter()
    workdir = config.workdir.resolve()
    archive, dataset = workdir / "archive", workdir / "dataset"
    print(f"[1/4] synthetic CT archive: {config.cases} cases -> {archive}", flush=True)
    if not any(archive.glob("case_*")):
        make_archive(archive, cases=config.cases, modality="CT", fmt="nifti", seed=config.seed, shape=config.volume_shape)

    print(f"[2/4] ingest with Ray Data -> {dataset}", flush=True)
    summary = run_ingest(
        IngestConfig(source=archive, out=dataset, organ="liver", modality="CT", size=config.size, seed=config.seed, overwrite=True)
    )

    print(f"[3/4] train ANU-Net for {config.epochs} epochs", flush=True)
    torch.manual_seed(config.seed)
    train_x, train_y = load_split(dataset, "train")
    val_x, val_y = load_split(dataset, "val")
    cpu = torch.device("cpu")
    model = ANUNet().to(memory_format=torch.channels_last)  # oneDNN's preferred layout
    loss_fn = HybridLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    steps_per_epoch = -(-len(train_x) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(config.seed)
    report = DemoReport(str(workdir), summary.checksum, len(train_x), len(val_x), config.epochs)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        epoch_loss = []
        for begin in range(0, len(order), config.batch_size):
            index = order[begin : begin + config.batch_size]
            with autocast(cpu):
                logits = model(train_x[index].contiguous(memory_format=torch.channels_last))
            loss = loss_fn(logits, train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            epoch_loss.append(loss.item())
        report.losses.append(float(np.mean(epoch_loss)))
        scores = validation_dice(model, val_x, val_y, config.batch_size)
        print(f"  epoch {epoch + 1}: loss {report.losses[-1]:.4f}  val Dice L1-L4 " + " ".join(f"{s:.3f}" for s in scores), flush=True)

    print("[4/4] per-depth report", flush=True)
    workdir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), workdir / "anunet.pt")
    for depth in range(1, 5):
        report.depths.append(
            DepthReport(depth, count_parameters(prune(model, depth)), scores[depth - 1],
                        latency_ms_per_slice(model, depth, config.size))
        )
    report.seconds = time.perf_counter() - start
    (workdir / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(report.table())
    print(f"\ndone in {report.seconds:.0f} s. Dataset: {dataset} (summary.json); "
          f"model weights: {workdir / 'anunet.pt'}; report: {workdir / 'report.json'}")
    return report
