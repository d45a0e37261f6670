"""What several benchmarks share: the CPU's name, peak memory of a job's whole process tree,
a plain single-process PyTorch training (the yardstick the platform is measured against), and
untrained models registered for the segment benchmarks."""

from __future__ import annotations

import platform
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


def cpu_name() -> str:
    """The processor's model name and whether it has bf16 matrix units (AMX, AVX512-BF16)."""
    name = platform.processor() or "unknown CPU"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", "unknown CPU", platform.machine()):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    units = [u for u, flag in (("AMX-BF16", "amx_bf16"), ("AVX512-BF16", "avx512_bf16"), ("AVX512", "avx512f")) if flag in flags]
    return f"{name} ({', '.join(units) if units else 'no AVX512/AMX'})"


def matmul_peak_gflops(dtype, threads: int, size: int = 2048, rounds: int = 5) -> float:
    """This CPU's matrix-multiply rate in GFLOP/s for ``dtype`` (torch.float32 or bfloat16) on
    ``threads`` threads: the best of ``rounds`` square ``size x size`` products, after a warm-up.
    The yardstick a network's achieved rate is measured against, in the same run."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def run_with_peak_rss(command: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Run ``command``; return its stdout and the peak resident memory (bytes) of its process
    tree (the driver, and the raylet and workers of a local Ray it starts), sampled every 0.1 s.
    A non-zero exit raises ``RuntimeError``."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed with exit code {process.returncode}")
    return stdout, peak


@dataclass(frozen=True)
class PlainTraining:
    seconds: float  # model construction, every epoch and the validation of every depth
    slices_per_s: float  # training slices per second of the last epoch (warm)


def plain_training(dataset: Path, epochs: int, batch_size: int, threads: int, validate: bool = True, seed: int = 0) -> PlainTraining:
    """A plain single-process PyTorch training of ANU-Net on an ingested dataset: the same model,
    hybrid loss, augmentation, precision policy, channels_last and batch size as a Ray Train
    worker, the slices already decoded in memory; with ``validate``, the validation split is
    scored at every depth after each epoch, as a worker does."""
    _, seconds, rate = _plain_loop(dataset, epochs, batch_size, threads, validate, seed)
    return PlainTraining(seconds, rate)


def train_plain(dataset: Path, epochs: int, batch_size: int, threads: int, seed: int = 0):
    """The network :func:`plain_training` trains (eval mode), for benchmarks that need a trained
    model but not Ray Train's machinery."""
    model, _, _ = _plain_loop(dataset, epochs, batch_size, threads, validate=False, seed=seed)
    return model.eval()


def _plain_loop(dataset: Path, epochs: int, batch_size: int, threads: int, validate: bool, seed: int):
    import pyarrow.parquet as pq
    import torch

    from anunet_core import ANUNet, HybridLoss
    from anunet_core.augmentation import AugmentationConfig, augment_batch
    from anunet_platform.contracts import decode_slices
    from anunet_platform.precision import autocast

    torch.set_num_threads(threads)
    images, masks = decode_slices(pq.read_table(sorted((dataset / "train").glob("*.parquet"))))
    images, masks = torch.from_numpy(images).unsqueeze(1), torch.from_numpy(masks).float().unsqueeze(1)
    val_images, val_masks = decode_slices(pq.read_table(sorted((dataset / "val").glob("*.parquet"))))
    val_images = torch.from_numpy(val_images).unsqueeze(1).contiguous(memory_format=torch.channels_last)
    start = time.perf_counter()
    torch.manual_seed(seed)
    device = torch.device("cpu")
    model = ANUNet().to(memory_format=torch.channels_last)
    loss_fn, optimizer = HybridLoss(), torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    rate = 0.0
    for _ in range(epochs):
        model.train()
        epoch_start, order = time.perf_counter(), torch.randperm(len(images), generator=generator)
        for begin in range(0, len(order), batch_size):
            index = order[begin : begin + batch_size]
            x, y = augment_batch(images[index], masks[index], generator, AugmentationConfig())
            with autocast(device):
                outputs = model(x.contiguous(memory_format=torch.channels_last))
            loss = loss_fn(outputs, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
            optimizer.step()
        rate = len(images) / (time.perf_counter() - epoch_start)
        if validate:
            model.eval()
            with torch.no_grad(), autocast(device):
                for begin in range(0, len(val_images), 2 * batch_size):
                    model(val_images[begin : begin + 2 * batch_size])  # all four heads, as a worker scores them
    return model, time.perf_counter() - start, rate


def register_untrained(uri: str, size: int, organs: Sequence[str] = ("liver",), experiment: str = "bench") -> None:
    """Register every depth of a seeded, untrained ANU-Net as anunet-{organ}-ct-L1..L4 per organ
    (one run each, promoted to ``production``): speed does not depend on the weights."""
    import mlflow
    import torch

    from anunet_core import ANUNet
    from anunet_platform import registry

    for seed, organ in enumerate(organs):
        torch.manual_seed(seed)
        model = ANUNet().eval()
        run_id = mlflow.MlflowClient(uri).create_run(registry.ensure_experiment(experiment, uri)).info.run_id
        metrics = {d: {"val_dice": 0.80 + 0.01 * d, "val_iou": 0.70 + 0.01 * d} for d in registry.DEPTHS}
        registry.register_depths(model, run_id=run_id, organ=organ, modality="CT", metrics=metrics, alpha=0.5,
                                 gamma=2.0, dataset_checksum="bench", input_size=size, uri=uri)
        registry.promote(run_id, uri=uri)


def demo_workdir(workdir: Path) -> tuple[Path, str]:
    """``(workdir, MLflow URI)`` of a demo run (``jobs/demo.py --workdir``), running the demo
    first when ``workdir`` holds none: the trained, registered models benchmarks compare."""
    from anunet_platform import registry
    from anunet_platform.demo import DemoConfig, run_demo

    workdir = Path(workdir).resolve()
    if not (workdir / "dataset").is_dir():
        print(f"no demo in {workdir}: running it first")
        run_demo(DemoConfig(workdir=workdir))
    return workdir, registry.tracking_uri(workspace=workdir)
