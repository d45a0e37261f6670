"""Tuning overhead, side by side in one run: N one-epoch trials under Ray Tune + Ray Train
against N sequential plain trainings of the same size, and the concurrency observed.

Each trial is what ``jobs/tune.py`` runs: a TorchTrainer (1 worker, 1 CPU) started by a Tune
trial, its dataset streamed from Parquet (``stream``) or decoded once into the object store
(``cache``, ``--cache-data``), validation of every depth, a checkpoint, MLflow logging. A plain
training is one process, the slices already in memory, the same model, loss, augmentation,
batch and validation, with the same thread count as a trial's worker. The difference per trial
is what Tune plus Train cost (worker start-up, the input pipeline, checkpoints, bookkeeping).

    python benchmarks/bench_tune.py [--trials 8] [--size 64] [--cases 6] [--modes stream,cache]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchkit import cpu_name, plain_training

from anunet_core.synthetic import make_archive
from anunet_platform.ingest import IngestConfig, run_ingest
from anunet_platform.tune import SearchConfig, run_tuning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="trials, and plain trainings (default 8)")
    parser.add_argument("--size", type=int, default=64, help="slice side (default 64)")
    parser.add_argument("--cases", type=int, default=6, help="synthetic cases (default 6)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per step (default 8)")
    parser.add_argument("--modes", default="stream,cache", help="trial input: stream, cache or both (default both)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    cpus = os.cpu_count() or 1

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        make_archive(work / "archive", cases=args.cases, modality="CT", fmt="nifti", seed=3, shape=(96, 96, 24))
        ray.init(num_cpus=cpus, logging_level="ERROR")  # with the dashboard: tuning needs the state API
        run_ingest(IngestConfig(source=work / "archive", out=work / "ds", organ="liver", modality="CT", size=args.size))
        tuned = {}
        for mode in modes:
            config = SearchConfig(data=work / "ds", num_samples=args.trials, epochs=1, batch_size=args.batch_size,
                                  cache_data=mode == "cache", name=f"bench-{mode}", storage_path=work / "ray_results")
            start = time.perf_counter()
            outcome = run_tuning(config)
            tuned[mode] = (time.perf_counter() - start, outcome.report)
        ray.shutdown()

        plain = [plain_training(work / "ds", 1, args.batch_size, threads=1) for _ in range(args.trials)]
        plain_all = plain_training(work / "ds", 1, args.batch_size, threads=cpus)
        slices = sum(1 for _ in (work / "ds" / "train").glob("*.parquet"))

    plain_s = sum(p.seconds for p in plain)
    print(f"\nCPU: {cpu_name()}, {cpus} CPUs")
    print(f"tuning benchmark: {args.trials} one-epoch trials of ANU-Net at {args.size}x{args.size}, batch {args.batch_size}, "
          f"{slices} training cases; every trial 1 worker x 1 CPU (+1 CPU for its input pipeline)")
    print(f"  {args.trials} sequential plain trainings, 1 thread each: {plain_s:7.1f} s "
          f"({plain_s / args.trials:.1f} s each, {statistics.median(p.slices_per_s for p in plain):.2f} slices/s)")
    print(f"  one plain training on all {cpus} threads:            {plain_all.seconds:7.1f} s ({plain_all.slices_per_s:.2f} slices/s)")
    for mode, (seconds, report) in tuned.items():
        durations = [r.ended - r.started for r in report.rows if r.started is not None]
        print(
            f"  Ray Tune + Train, {mode:6}: {seconds:7.1f} s wall = {seconds / plain_s:.2f}x the plain trainings; "
            f"{(seconds - plain_s) / args.trials:+.1f} s per trial; median trial {statistics.median(durations):.1f} s "
            f"({statistics.median(durations) / (plain_s / args.trials):.2f}x a plain training); "
            f"concurrent trials: limit {report.max_concurrent_trials}, max observed {report.observed_concurrency}"
        )


if __name__ == "__main__":
    main()
