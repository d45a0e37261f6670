"""Input pipeline throughput: slices per second delivered to the training loop from Parquet, with
and without augmentation, no model; side by side in one run, and per CPU.

1. yardstick: a bare pyarrow read + decode in this process, one thread (one CPU): the
   ``decode_batch`` of the old pipeline (a Python ``bytes`` per row) and ``decode_table``
   (straight from Arrow's buffers);
2. before: the old streaming path: ``read_parquet`` -> ``map_batches(decode_batch)`` ->
   ``iter_torch_batches`` with a local shuffle buffer of 4 batches (prefetch 1);
3. after: ``train.load_datasets`` -> ``train.training_batches`` (the training loop's own
   iterator: file-order plus block-level shuffle, ``PREFETCH_BATCHES``);
4. materialized: the same splits decoded into the object store (``--cache-data``).

The Ray paths are consumed through ``streaming_split(1)``, as a Ray Train worker's shard is, on
a local Ray of ``--cpus`` CPUs; their rate is that of the last of ``--epochs`` epochs (warm).
Every path runs once per round, the rounds interleaved, and the medians are reported. Per CPU:
slices per CPU second, the CPU time of every process involved (this one, and the local Ray's),
so that another job on the machine does not count. Augmentation runs
on this CPU with one torch thread (the consumer's); on a GPU worker it runs on the GPU.

Then the demand: the GFLOP of one training slice at depth 4 (3x the forward) against 40 % of an
H200's dense bf16 rate gives the slices/s one GPU consumes, and the per-CPU rate of the new path
is projected to the 8 CPUs of a GPU worker in ``k8s/raycluster.yaml`` (a projection: slices per
CPU second times 8, which assumes the read tasks spread over the 8 CPUs, measured on ``--cpus``).

    python benchmarks/bench_input.py [--data DATASET] [--cases 48] [--size 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from benchkit import cpu_name

from anunet_core.augmentation import AugmentationConfig, augment_batch
from anunet_platform.contracts import decode_batch, decode_table, split_files
from anunet_platform.train import PREFETCH_BATCHES, TrainConfig, load_datasets, training_batches

H200_BF16_TFLOPS = 990.0  # dense bf16, no sparsity
MFU = 0.40  # the share of it a well-fed training step reaches
GPU_WORKER_CPUS = 8  # k8s/raycluster.yaml, group gpu: 8 CPUs and 1 GPU per pod


class TreeCPU:
    """CPU seconds (user + system) spent by this process and all its descendants (the local
    Ray's raylet, GCS, workers, actors) between ``start`` and ``stop``, sampled every 0.05 s so
    that processes which end in between (Ray's footer-reading actors) still count; what a
    path costs in CPU whatever else the machine runs."""

    def __init__(self) -> None:
        import psutil

        self._root = psutil.Process(os.getpid())
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> dict[int, float]:
        import psutil

        times = {}
        for p in [self._root, *self._root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                times[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return times

    def _loop(self) -> None:
        while not self._done.wait(0.05):
            self._last.update(self._sample())

    def start(self) -> None:
        self._first = self._sample()
        self._last = dict(self._first)
        self._done.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        self._last.update(self._sample())
        return sum(t - self._first.get(pid, 0.0) for pid, t in self._last.items())


def make_dataset(work: Path, cases: int, size: int, cpus: int) -> Path:
    import ray

    from anunet_core.synthetic import make_archive
    from anunet_platform.ingest import IngestConfig, run_ingest

    make_archive(work / "archive", cases=cases, modality="CT", fmt="nifti", seed=2, shape=(96, 96, 160))
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
    try:
        run_ingest(IngestConfig(source=work / "archive", out=work / "ds", organ="liver", modality="CT", size=size))
    finally:
        ray.shutdown()
    return work / "ds"


def bare_read(files: list[str], decode) -> int:
    """Read and decode every shard in this thread; the slices decoded."""
    n = 0
    for f in files:
        table = pq.read_table(f, columns=["image", "mask", "size"], use_threads=False)
        if decode is decode_batch:
            out = decode_batch({c: table.column(c).to_numpy(zero_copy_only=False) for c in ("image", "mask", "size")})
        else:
            out = decode(table)
        n += len(out["image"])
    return n


def bare_rate(files: list[str], decode) -> tuple[float, float, float, float]:
    """The second of two :func:`bare_read` passes (the files in the page cache), as
    :func:`epoch_rate` reports it: ``(slices/s, 0, slices/s, slices per CPU second)``."""
    bare_read(files, decode)
    started, cpu = time.perf_counter(), time.process_time()
    n = bare_read(files, decode)
    rate = n / (time.perf_counter() - started)
    return rate, 0.0, rate, n / (time.process_time() - cpu)


def old_train_dataset(files: list[str]):
    """The training split as the old ``load_datasets`` built it."""
    import ray

    return ray.data.read_parquet(files).select_columns(["image", "mask", "size"]).map_batches(decode_batch, batch_format="numpy")


def old_batches(shard, config: TrainConfig, epoch: int, generator: torch.Generator):
    """The old training loop's batches (CPU tensors, augmented on the CPU)."""
    for batch in shard.iter_torch_batches(batch_size=config.batch_size, local_shuffle_buffer_size=4 * config.batch_size,
                                          local_shuffle_seed=config.seed + epoch, drop_last=False):
        images, masks = batch["image"].float().unsqueeze(1), batch["mask"].float().unsqueeze(1)
        if config.augment:
            images, masks = augment_batch(images, masks, generator, AugmentationConfig())
        yield images, masks


def epoch_rate(ds, batches, config: TrainConfig, epochs: int) -> tuple[float, float, float, float]:
    """``(slices/s, seconds to the first batch, slices/s after the first batch, slices per CPU
    second)`` of the last of ``epochs`` passes over ``ds`` through one streaming split (as a Ray
    Train worker reads its shard): a whole epoch, its start (plan, launch, first read task), its
    steady rate, and what it cost in CPU (every process of the local Ray, and this one)."""
    (shard,) = ds.streaming_split(1, equal=True)
    result = (0.0, 0.0, 0.0, 0.0)
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(epoch)
        cpu = TreeCPU()
        cpu.start()
        started, first, n, n_first = time.perf_counter(), None, 0, 0
        for images, _ in batches(shard, config, epoch, generator):
            if first is None:
                first, n_first = time.perf_counter(), len(images)
            n += len(images)
        end = time.perf_counter()
        result = (n / (end - started), first - started, (n - n_first) / max(end - first, 1e-9), n / cpu.stop())
    return result


def augmentation_rate(batch_size: int, size: int, seconds: float = 3.0) -> tuple[float, float]:
    """``(augment_batch slices/s, its CPU noise draw alone slices/s)`` on one thread."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 1, size, size, generator=generator)
    masks = (images > 0.5).float()
    rates = []
    for work in (lambda: augment_batch(images, masks, generator, AugmentationConfig()),
                 lambda: torch.randn(images.shape, generator=generator)):
        work()
        started, n = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            work()
            n += batch_size
        rates.append(n / (time.perf_counter() - started))
    return rates[0], rates[1]


def h200_slices_per_s(size: int) -> tuple[float, float]:
    """``(training GFLOP per slice at depth 4, slices/s one H200 consumes at MFU)``."""
    from anunet_core import ANUNet
    from anunet_core.baselines import network_gflops

    train_gflop = 3 * network_gflops(ANUNet(), size, size)[4]  # forward + backward (2x the forward)
    return train_gflop, MFU * H200_BF16_TFLOPS * 1e3 / train_gflop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an ingested dataset (default: make a synthetic one)")
    parser.add_argument("--cases", type=int, default=48, help="synthetic cases when no --data (default 48: ~2,200 training slices)")
    parser.add_argument("--size", type=int, default=256, help="synthetic slice side (default 256)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="slices per batch (default 32)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per Ray path; the last one is timed (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported (default 3)")
    args = parser.parse_args()

    import ray

    torch.set_num_threads(1)
    print(f"CPU: {cpu_name()}; local Ray of {args.cpus} CPUs; batch {args.batch_size}; prefetch {PREFETCH_BATCHES}")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_dataset(Path(tmp), args.cases, args.size, args.cpus)
        files = split_files(data, "train")
        size = int(pq.read_table(files[0], columns=["size"]).column("size")[0].as_py())
        slices = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        print(f"dataset: {data}: {slices} training slices in {len(files)} shards at {size} px")
        plain = TrainConfig(data=data, epochs=1, batch_size=args.batch_size, augment=False)
        augmented = TrainConfig(data=data, epochs=1, batch_size=args.batch_size, augment=True)
        cached = TrainConfig(data=data, epochs=1, batch_size=args.batch_size, augment=False, cache_data=True)
        cached_aug = TrainConfig(data=data, epochs=1, batch_size=args.batch_size, augment=True, cache_data=True)
        cpu = torch.device("cpu")
        new = lambda shard, config, epoch, generator: training_batches(shard, config, epoch, cpu, generator)  # noqa: E731

        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
        ray.data.DataContext.get_current().enable_progress_bars = False
        results: dict[str, list[tuple]] = {}
        try:
            materialized = load_datasets(data, cache=True)["train"]
            paths = {
                "yardstick: pyarrow + decode_batch (1 thread)": lambda: bare_rate(files, decode_batch),
                "yardstick: pyarrow + decode_table (1 thread)": lambda: bare_rate(files, decode_table),
                "before: read_parquet + local shuffle buffer": lambda: epoch_rate(old_train_dataset(files), old_batches, plain, args.epochs),
                "before, augmented on the CPU": lambda: epoch_rate(old_train_dataset(files), old_batches, augmented, args.epochs),
                "after: slice datasource, block shuffle": lambda: epoch_rate(load_datasets(data)["train"], new, plain, args.epochs),
                "after, augmented on the CPU": lambda: epoch_rate(load_datasets(data)["train"], new, augmented, args.epochs),
                "materialized (--cache-data), local buffer": lambda: epoch_rate(materialized, new, cached, args.epochs),
                "materialized, augmented on the CPU": lambda: epoch_rate(materialized, new, cached_aug, args.epochs),
            }
            for round_ in range(args.rounds):
                for name, measure in paths.items():
                    results.setdefault(name, []).append(measure())
                print(f"round {round_ + 1}/{args.rounds} (slices/s per epoch): " + ", ".join(f"{v[-1][0]:.0f}" for v in results.values()), flush=True)
        finally:
            ray.shutdown()

    aug_rate, noise_rate = augmentation_rate(args.batch_size, size)
    def median(name: str, k: int) -> float:
        values = [r[k] for r in results[name] if r[k] is not None]
        return statistics.median(values) if values else float("nan")

    yard = median("yardstick: pyarrow + decode_batch (1 thread)", 3)
    print(f"\n{'path (medians of ' + str(args.rounds) + ' rounds)':<46} {'epoch/s':>8} {'1st batch':>9} {'steady/s':>9} "
          f"{'per CPU-s':>9} {'vs yardstick':>12}")
    for name in results:
        epoch, first, steady, per_cpu = (median(name, k) for k in range(4))
        print(f"{name:<46} {epoch:>8.0f} {first:>8.2f}s {steady:>9.0f} {per_cpu:>9.0f} {per_cpu / yard:>11.2f}x")
    print("(epoch/s: a whole epoch, its start included; steady/s: after the first batch; per CPU-s: slices per CPU second "
          "of every process involved, the whole epoch; vs yardstick: per CPU-s over pyarrow + decode_batch's)")
    print(f"augment_batch alone, 1 thread: {aug_rate:.0f} slices/s; of it, the noise it draws on the CPU generator: "
          f"{noise_rate:.0f} slices/s (a GPU worker pays this on its CPU)")
    before = median("before: read_parquet + local shuffle buffer", 3)
    after = median("after: slice datasource, block shuffle", 3)
    print(f"\nper CPU second, input only, whole epochs of {slices} slices: before {before:.0f}, after {after:.0f} "
          f"({after / before:.1f}x); epoch rate on {args.cpus} CPUs: before "
          f"{median('before: read_parquet + local shuffle buffer', 0):.0f}, after "
          f"{median('after: slice datasource, block shuffle', 0):.0f} slices/s")
    print(f"after / yardstick per CPU second: {after / yard:.2f} (pyarrow + decode_batch), "
          f"{after / median('yardstick: pyarrow + decode_table (1 thread)', 3):.2f} (pyarrow + decode_table)")
    gflop, need = h200_slices_per_s(size)
    print(f"H200 demand at depth 4, {size} px: {gflop:.0f} GFLOP per training slice, {MFU:.0%} of {H200_BF16_TFLOPS:.0f} "
          f"TFLOP/s bf16 -> {need:.0f} slices/s")
    print(f"projection (slices per CPU second x CPUs, not measured): {GPU_WORKER_CPUS} CPUs x {after:.0f} = {GPU_WORKER_CPUS * after:.0f} "
          f"slices/s after ({GPU_WORKER_CPUS * after / need:.1f}x the demand), {GPU_WORKER_CPUS * before:.0f} before "
          f"({GPU_WORKER_CPUS * before / need:.2f}x)")


if __name__ == "__main__":
    main()
