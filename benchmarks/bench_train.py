"""Training throughput: the platform's overhead and data-parallel scaling, side by side in one run.

1. a plain PyTorch loop in this process (same model, loss, augmentation, precision policy,
   channels_last, batch size, data already decoded in memory) against Ray Train with one
   worker given the same CPUs: the platform's overhead (target <= 15 %);
2. Ray Train with 2 workers against 1 worker on the same cores (DDP over gloo).

Rates are training slices per second of the last epoch (warm), measured over the training
loop only (validation excluded) in both cases.

    python benchmarks/bench_train.py [--epochs 3] [--size 128] [--cases 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from benchkit import cpu_name, plain_training

from anunet_core.synthetic import make_archive
from anunet_platform.ingest import IngestConfig, run_ingest
from anunet_platform.train import TrainConfig, build_trainer


def ray_train_rate(dataset: Path, storage: Path, epochs: int, batch_size: int, workers: int, cpus_per_worker: int) -> float:
    config = TrainConfig(
        data=dataset, epochs=epochs, num_workers=workers, cpus_per_worker=cpus_per_worker, batch_size=batch_size,
        run_name=f"bench-w{workers}", storage_path=storage, cache_data=True, max_failures=0,
    )
    result = build_trainer(config).fit()
    if result.error:
        raise result.error
    return float(result.metrics["train_slices_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per configuration; the last one is timed (default 3)")
    parser.add_argument("--size", type=int, default=128, help="slice side (default 128)")
    parser.add_argument("--cases", type=int, default=8, help="synthetic cases (default 8)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per step per worker (default 8)")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_archive(work / "archive", cases=args.cases, modality="CT", fmt="nifti", seed=2, shape=(96, 96, 32))
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
        run_ingest(IngestConfig(source=work / "archive", out=work / "ds", organ="liver", modality="CT", size=args.size))

        plain = plain_training(work / "ds", args.epochs, args.batch_size, threads=cpus, validate=False).slices_per_s
        one = ray_train_rate(work / "ds", work / "rr", args.epochs, args.batch_size, workers=1, cpus_per_worker=cpus)
        two = ray_train_rate(work / "ds", work / "rr", args.epochs, args.batch_size, workers=2, cpus_per_worker=max(1, cpus // 2))
        ray.shutdown()

    print(f"CPU: {cpu_name()}")
    print(f"training benchmark: ANU-Net at {args.size}x{args.size}, batch {args.batch_size}/worker, {cpus} CPUs, "
          f"last of {args.epochs} epochs (slices/s)")
    print(f"  plain PyTorch loop, 1 process, {cpus} threads: {plain:7.2f}")
    print(f"  Ray Train, 1 worker x {cpus} CPUs:             {one:7.2f}   overhead {100 * (1 - one / plain):+.1f} % vs plain")
    print(f"  Ray Train, 2 workers x {max(1, cpus // 2)} CPU(s):           {two:7.2f}   2 workers / 1 worker: {two / one:.2f}x")


if __name__ == "__main__":
    main()
