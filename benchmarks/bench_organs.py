"""Three organs in one segment run against three single-organ runs over the same archive.

A several-organ run reads and preprocesses each scan once and runs the three networks on the
same slices; three single-organ runs read, preprocess and write everything three times (and
start three pools of model actors). Measured side by side in one run, on this machine:

1. In one warm Ray session (``run_segmentation`` calls, as jobs submitted to a running
   cluster), per depth: the wall time of one run with three ``--model``s against the sum of
   three runs with one each. Target: <= 0.6x.
2. As a nightly scheduler runs them: ``jobs/segment.py`` in fresh processes, each starting its
   own local Ray (L1): one three-organ job against three one-organ jobs.

Also printed: the bare forward of the three networks on the same preprocessed slices (one
process, all cores), so that the share of the model in each run is visible: the saving can
only come from what is not the model. The models are freshly initialised ANU-Nets registered
as anunet-{liver,spleen,kidney}-ct-L1..L4 in a throwaway SQLite MLflow store (speed does not
depend on the weights).

    python benchmarks/bench_organs.py [--cases 4] [--size 256] [--depths 1,2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
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
from anunet_platform.precision import autocast
from anunet_platform.segment import SegmentConfig, run_segmentation
from benchkit import cpu_name, register_untrained

SHAPE = (256, 256, 48)  # voxels per scan; 48 axial slices
SPACING = (1.5, 1.5, 2.5)
ORGANS = ("liver", "spleen", "kidney")
FAMILIES = tuple(f"anunet-{organ}-ct" for organ in ORGANS)
JOB = Path(__file__).resolve().parents[1] / "jobs" / "segment.py"


def bare_forward_seconds(archive: Path, depth: int, size: int, batch_size: int) -> tuple[int, float]:
    """The three registered networks' fast path on the archive's preprocessed slices (read and
    preprocessed beforehand, not timed): (slices, seconds for the three)."""
    nets = [optimize_for_inference(registry.load_registered(registry.registered_model_name(o, "CT", depth))[0], depth)
            for o in ORGANS]
    torch.set_num_threads(psutil.cpu_count(logical=True))
    volumes = [preprocess_volume(load_case(c, "liver", "CT", with_label=False)[0], size)[0] for c in discover_cases(archive)]
    slices = torch.from_numpy(np.concatenate(volumes)).half().float()[:, None]
    with autocast(torch.device("cpu")):
        nets[0](slices[:batch_size])  # warm-up
        start = time.perf_counter()
        for net in nets:
            for i in range(0, len(slices), batch_size):
                torch.sigmoid(net(slices[i : i + batch_size])[-1].float())
        seconds = time.perf_counter() - start
    return len(slices), seconds


def timed_run(archive: Path, out: Path, models: tuple[str, ...], depth: int, uri: str, batch_size: int) -> float:
    start = time.perf_counter()
    summary = run_segmentation(SegmentConfig(archive=archive, out=out, model=models, depth=depth, tracking_uri=uri,
                                             batch_size=batch_size))
    assert summary.failed == 0 and summary.ok == summary.cases, summary
    return time.perf_counter() - start


def timed_job(archive: Path, out: Path, models: tuple[str, ...], uri: str, batch_size: int) -> float:
    args = [a for m in models for a in ("--model", m)]
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, RAY_ADDRESS="")
    start = time.perf_counter()
    subprocess.run([sys.executable, str(JOB), "--archive", str(archive), "--out", str(out), *args, "--depth", "1",
                    "--batch-size", str(batch_size)], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=4, help="scans in the archive (default 4)")
    parser.add_argument("--size", type=int, default=256, help="model input side (default 256)")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per forward (default 16)")
    parser.add_argument("--depths", default="1,2", help="depths measured in the warm session (default 1,2)")
    parser.add_argument("--no-fresh", action="store_true", help="skip the fresh-process jobs")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]

    import ray

    print(f"organs benchmark on {cpu_name()}, {psutil.cpu_count()} CPUs: {args.cases} synthetic CT scans of "
          f"{SHAPE} voxels, model input {args.size}x{args.size}, batch {args.batch_size}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        archive = work / "archive"
        make_archive(archive, cases=args.cases, modality="CT", fmt="nifti", seed=1, shape=SHAPE, spacing=SPACING)
        make_archive(work / "warm", cases=1, modality="CT", fmt="nifti", seed=9, shape=(64, 64, 8))
        register_untrained(uri, args.size, ORGANS, "bench-organs")

        rows = []
        ray.init(logging_level="ERROR")
        timed_run(work / "warm", work / "warm-out", FAMILIES, 1, uri, args.batch_size)  # workers and imports warm
        for depth in depths:
            slices, bare = bare_forward_seconds(archive, depth, args.size, args.batch_size)
            singles = [timed_run(archive, work / f"L{depth}-{family}", (family,), depth, uri, args.batch_size)
                       for family in FAMILIES]
            together = timed_run(archive, work / f"L{depth}-three", FAMILIES, depth, uri, args.batch_size)
            rows.append((depth, slices, bare, singles, together))
        ray.shutdown()

        fresh = None
        if not args.no_fresh:
            singles = [timed_job(archive, work / f"fresh-{family}", (family,), uri, args.batch_size) for family in FAMILIES]
            together = timed_job(archive, work / "fresh-three", FAMILIES, uri, args.batch_size)
            fresh = (singles, together)

    print(f"{'depth':>5} {'slices':>6} {'3 forwards (s)':>15} {'3 single runs (s)':>18} {'1 run of 3 (s)':>15} "
          f"{'ratio':>6}   (target <= 0.60)")
    for depth, slices, bare, singles, together in rows:
        print(f"{'L' + str(depth):>5} {slices:>6} {bare:>15.1f} {sum(singles):>18.1f} {together:>15.1f} "
              f"{together / sum(singles):>6.2f}   singles: {', '.join(f'{s:.1f}' for s in singles)}; "
              f"the model's share of the run of 3: {bare / together:.0%}")
    if fresh:
        singles, together = fresh
        print(f"fresh processes (jobs/segment.py, local Ray each, L1): 3 jobs {sum(singles):.1f} s "
              f"({', '.join(f'{s:.1f}' for s in singles)}), 1 job of 3 organs {together:.1f} s: "
              f"ratio {together / sum(singles):.2f}")


if __name__ == "__main__":
    main()
