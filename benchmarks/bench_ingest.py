"""Ingest speed and memory, measured side by side in one run.

1. slices/s of ``run_ingest`` (Ray Data, all cores, writing Parquet) against the bare loop in
   one process (``load_case`` -> ``preprocess_volume``/``preprocess_label`` -> slice
   selection, no writing) on the same synthetic archive, with Ray already running and its
   workers warm (steady state: what a large archive sees);
2. the same ingest cold, in a fresh process that starts its own local Ray (what a small
   archive sees: Ray start and worker imports are a fixed cost of several seconds);
3. peak resident memory of the whole ingest process tree (driver, raylet, workers), sampled
   every 0.1 s, for an archive of N cases and one of 4N: streaming keeps it flat.

    python benchmarks/bench_ingest.py [--cases 6] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from anunet_core.archives import discover_cases, load_case
from anunet_core.preprocessing import preprocess_label, preprocess_volume
from anunet_core.synthetic import make_archive
from anunet_platform.ingest import select_slices
from benchkit import run_with_peak_rss

SHAPE = (256, 256, 96)  # voxels; with SPACING a 384 x 384 x 240 mm field of view
SPACING = (1.5, 1.5, 2.5)

INGEST_CHILD = """
import json, sys, time
from anunet_platform.ingest import IngestConfig, run_ingest
start = time.perf_counter()
summary = run_ingest(IngestConfig(source=sys.argv[1], out=sys.argv[2], organ="liver", modality="CT", size=int(sys.argv[3])))
slices = sum(s["slices"] for s in summary.splits.values())
print("RESULT " + json.dumps({"seconds": time.perf_counter() - start, "slices": slices}))
"""


def bare_loop(archive: Path, size: int) -> tuple[int, float]:
    """Read + preprocess every case in this process; returns (slices kept, seconds)."""
    start = time.perf_counter()
    kept = 0
    for i, case in enumerate(discover_cases(archive)):
        volume, mask = load_case(case, organ="liver", modality="CT")
        images, geometry = preprocess_volume(volume, size=size)
        masks = preprocess_label(mask, geometry)
        kept += len(select_slices(masks, 0.25, np.random.default_rng(i)))
        del images
    return kept, time.perf_counter() - start


def ingest_in_subprocess(archive: Path, out: Path, size: int) -> tuple[dict, float]:
    """Run ingest in a fresh process; returns its result and the peak RSS (bytes) of its tree."""
    stdout, peak = run_with_peak_rss([sys.executable, "-c", INGEST_CHILD, str(archive), str(out), str(size)])
    line = next(l for l in stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=6, help="N: cases of the small archive (default 6)")
    parser.add_argument("--size", type=int, default=256, help="slice side (default 256)")
    args = parser.parse_args()

    import ray

    from anunet_platform.ingest import IngestConfig, run_ingest

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        warm, small, large = work / "warm", work / "small", work / "large"
        make_archive(warm, cases=2, modality="CT", fmt="nifti", seed=9, shape=SHAPE, spacing=SPACING)
        make_archive(small, cases=args.cases, modality="CT", fmt="nifti", seed=1, shape=SHAPE, spacing=SPACING)
        make_archive(large, cases=4 * args.cases, modality="CT", fmt="nifti", seed=1, shape=SHAPE, spacing=SPACING)

        bare_slices, bare_seconds = bare_loop(small, args.size)

        ray.init(logging_level="ERROR")

        def ingest(source: Path, out: Path) -> tuple[int, float]:
            start = time.perf_counter()
            summary = run_ingest(IngestConfig(source=source, out=out, organ="liver", modality="CT", size=args.size))
            return sum(s["slices"] for s in summary.splits.values()), time.perf_counter() - start

        ingest(warm, work / "ds-warm")  # starts and warms the workers
        warm_slices, warm_seconds = ingest(small, work / "ds-steady")
        ray.shutdown()

        result_small, peak_small = ingest_in_subprocess(small, work / "ds-small", args.size)
        result_large, peak_large = ingest_in_subprocess(large, work / "ds-large", args.size)

    bare_rate = bare_slices / bare_seconds
    steady_rate = warm_slices / warm_seconds
    cold_rate = result_small["slices"] / result_small["seconds"]
    print(f"ingest benchmark: {args.cases} and {4 * args.cases} synthetic CT cases of {SHAPE} voxels, "
          f"slices {args.size}x{args.size}, {psutil.cpu_count()} CPUs")
    print(f"  bare read+preprocess loop (1 process, no writing): {bare_rate:7.1f} slices/s ({bare_slices} slices)")
    print(f"  run_ingest, Ray Data, warm workers:                {steady_rate:7.1f} slices/s "
          f"({warm_slices} slices written to Parquet)  -> {steady_rate / bare_rate:.2f}x the bare loop")
    print(f"  run_ingest cold (fresh process + Ray start), N:    {cold_rate:7.1f} slices/s")
    print(f"  run_ingest cold, 4N:                               "
          f"{result_large['slices'] / result_large['seconds']:7.1f} slices/s")
    print(f"  peak memory of the ingest process tree: N={args.cases}: {peak_small / 2**20:.0f} MiB, "
          f"4N={4 * args.cases}: {peak_large / 2**20:.0f} MiB  (4N / N = {peak_large / peak_small:.2f}x)")


if __name__ == "__main__":
    main()
