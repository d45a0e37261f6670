"""Nightly segmentation speed and memory, measured side by side in one run.

1. For each depth: slices/s of the whole segment job (Ray Data over the case rows; on CPU each
   actor reads, segments and writes its own cases; Ray already running, as on a cluster)
   against the bare model forward on the same preprocessed slices in one process (the same
   fast path, precision and batch size, all cores, nothing else). Target: the job at >= 85%
   of the bare forward at every depth, for N scans and for 4N (``--large-depths``: 4N scans
   at depth 4 take many minutes on 2 cores, and the job's overhead per scan is the same at
   every depth while the forward grows, so L1 is the hard case).
   Also printed: the job's fixed cost (the time it takes for a one-scan archive of 8 slices:
   actor start, model load, first kernels) and where each job's time went: the seconds until
   the last actor had loaded its models, and per actor the seconds spent reading,
   segmenting and writing (the summary's ``stage_seconds``); the rest is Ray's own time
   (scheduling, a last case on one actor while the others wait).
2. Peak resident memory of the whole job process tree (driver, raylet, workers, actors),
   sampled every 0.1 s, for an archive of N scans and one of 4N, each job in a fresh process
   starting its own local Ray (its rate there includes starting Ray): streaming keeps it flat.

The model is a freshly initialised ANU-Net registered per depth in a throwaway SQLite MLflow
store (speed does not depend on the weights).

    python benchmarks/bench_segment.py [--cases 8] [--size 256] [--batch-size 16] [--large-depths 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from anunet_core import optimize_for_inference
from anunet_core.archives import discover_cases, load_case
from anunet_core.preprocessing import preprocess_volume
from anunet_core.synthetic import make_archive
from anunet_platform import registry
from anunet_platform.precision import autocast, bf16_is_fast
from anunet_platform.segment import SegmentConfig, run_segmentation
from benchkit import cpu_name, matmul_peak_gflops, register_untrained, run_with_peak_rss

SHAPE = (256, 256, 48)  # voxels per scan; 48 axial slices
SPACING = (1.5, 1.5, 2.5)
JOB = Path(__file__).resolve().parents[1] / "jobs" / "segment.py"


def bare_forward_rate(archive: Path, depth: int, size: int, batch_size: int) -> tuple[int, float]:
    """The registered depth's fast path on the archive's preprocessed slices (read and
    preprocessed beforehand, not timed), in batches: (slices, slices/s)."""
    network, _ = registry.load_registered(registry.registered_model_name("liver", "CT", depth))
    net = optimize_for_inference(network, depth)
    torch.set_num_threads(psutil.cpu_count(logical=True))
    volumes = [preprocess_volume(load_case(c, "liver", "CT", with_label=False)[0], size)[0] for c in discover_cases(archive)]
    slices = torch.from_numpy(np.concatenate(volumes)).half().float()[:, None]  # as the job: float16 slices
    device = torch.device("cpu")
    with autocast(device):
        net(slices[:batch_size])  # warm-up: oneDNN primitives for this shape
        start = time.perf_counter()
        for i in range(0, len(slices), batch_size):
            torch.sigmoid(net(slices[i : i + batch_size])[-1].float())
        seconds = time.perf_counter() - start
    return len(slices), len(slices) / seconds


def job_peak_memory(archive: Path, out: Path, uri: str, batch_size: int) -> tuple[dict, int]:
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, RAY_ADDRESS="")
    stdout, peak = run_with_peak_rss(
        [sys.executable, str(JOB), "--archive", str(archive), "--out", str(out), "--model", "anunet-liver-ct",
         "--depth", "1", "--batch-size", str(batch_size)],
        env=env,
    )
    return json.loads((out / "summary.json").read_text()), peak


def breakdown(summary) -> str:
    """Where a job's time went: until its actors were ready, then per actor reading,
    segmenting and writing, and the rest."""
    wall = summary.slices / summary.slices_per_second
    per_actor = {k: v / max(summary.actors, 1) for k, v in summary.stage_seconds.items()}
    ready = summary.actors_ready_seconds or 0.0
    rest = wall - ready - sum(per_actor.values())
    return (f"{wall:6.1f} s = actors ready {ready:4.1f} + per actor: read {per_actor['read']:5.1f}, "
            f"segment {per_actor['segment']:6.1f}, write {per_actor['write']:5.1f}, rest {rest:5.1f}  "
            f"({summary.actors} actors)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=8, help="N: scans of the small archive (default 8)")
    parser.add_argument("--size", type=int, default=256, help="model input side (default 256)")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per forward (default 16)")
    parser.add_argument("--depths", default="1,2,3,4", help="depths to measure on N scans (default 1,2,3,4)")
    parser.add_argument("--large-depths", default="1", help="depths to measure on 4N scans as well (default 1)")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    large_depths = [int(d) for d in args.large_depths.split(",") if d]

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        small, large, warm = work / "small", work / "large", work / "warm"
        make_archive(warm, cases=1, modality="CT", fmt="nifti", seed=9, shape=(64, 64, 8))
        make_archive(small, cases=args.cases, modality="CT", fmt="nifti", seed=1, shape=SHAPE, spacing=SPACING)
        make_archive(large, cases=4 * args.cases, modality="CT", fmt="nifti", seed=1, shape=SHAPE, spacing=SPACING)
        register_untrained(uri, args.size, experiment="bench-segment")

        cores = psutil.cpu_count(logical=True)
        peak_dtype = torch.bfloat16 if bf16_is_fast(torch.device("cpu")) else torch.float32
        peaks = [matmul_peak_gflops(peak_dtype, cores)]  # this CPU's own limit, at the start and at the end
        rows = []
        ray.init(logging_level="ERROR")
        for depth in depths:
            slices, bare_before = bare_forward_rate(small, depth, args.size, args.batch_size)
            common = dict(model="anunet-liver-ct", depth=depth, batch_size=args.batch_size, tracking_uri=uri)
            # a one-scan archive of 8 slices: the job's fixed cost (actor start, model load, first
            # kernels), also what the main runs then pay again
            one = run_segmentation(SegmentConfig(archive=warm, out=work / f"warm-L{depth}", **common))
            for n, archive in ((args.cases, small), (4 * args.cases, large)):
                if n != args.cases and depth not in large_depths:
                    continue
                summary = run_segmentation(SegmentConfig(archive=archive, out=work / f"out-L{depth}-{n}", **common))
                assert summary.ok == n and summary.slices == slices * n // args.cases, summary
                # the bare forward again right after the job: on a shared host the same forward
                # varies by 2x between minutes, so each job is judged against the faster of the
                # two measurements around it (the harder bar), and both are printed
                _, bare_after = bare_forward_rate(small, depth, args.size, args.batch_size)
                rows.append((depth, n, summary.slices, (bare_before, bare_after), summary, one.slices / one.slices_per_second))
                bare_before = bare_after
        ray.shutdown()
        peaks.append(matmul_peak_gflops(peak_dtype, cores))

        (small_summary, peak_small) = job_peak_memory(small, work / "mem-small", uri, args.batch_size)
        (large_summary, peak_large) = job_peak_memory(large, work / "mem-large", uri, args.batch_size)
        assert small_summary["ok"] == args.cases and large_summary["ok"] == 4 * args.cases

    print(f"segment benchmark on {cpu_name()}: synthetic CT scans of {SHAPE} voxels, model input "
          f"{args.size}x{args.size}, batch {args.batch_size}, {psutil.cpu_count()} CPUs, bf16 autocast where fast")
    print(f"this CPU's {str(peak_dtype).removeprefix('torch.')} matmul peak on {cores} threads: {peaks[0]:.0f} GFLOP/s "
          f"before the jobs, {peaks[1]:.0f} after (the machine's own drift over the run)")
    print(f"{'depth':>5} {'scans':>5} {'slices':>6} {'bare before/after':>17} {'segment job':>12} {'job / bare':>10} "
          f"{'fixed cost (s)':>14}   (slices/s; job / the faster bare run; target >= 85%)")
    for depth, n, slices, (before, after), summary, fixed in rows:
        job = summary.slices_per_second
        print(f"{'L' + str(depth):>5} {n:>5} {slices:>6} {before:>8.2f}/{after:<8.2f} {job:>12.2f} "
              f"{job / max(before, after):>10.0%} {fixed:>14.1f}")
    print("where each job's time went:")
    for depth, n, _, _, summary, _ in rows:
        print(f"  L{depth} {n:>3} scans: {breakdown(summary)}")
    l1_bare = next((max(bare) for depth, _, _, bare, *_ in rows if depth == 1), None)
    if l1_bare:
        for n, result in ((args.cases, small_summary), (4 * args.cases, large_summary)):
            rate = result["slices_per_second"]
            print(f"L1 end to end in a fresh process (Ray starting too), {n} scans ({result['slices']} slices): "
                  f"{rate:.2f} slices/s = {rate / l1_bare:.0%} of the bare forward")
    print(f"peak memory of the job's process tree (L1): N={args.cases} scans: {peak_small / 2**20:.0f} MiB, "
          f"4N={4 * args.cases}: {peak_large / 2**20:.0f} MiB  (4N / N = {peak_large / peak_small:.2f}x)")


if __name__ == "__main__":
    main()
