"""The restructure's cost, measured side by side in one run: this tree against a baseline commit.

Issue 10 moved every concept into one place (``anunet_core.io``, ``anunet_core.archives``,
``anunet_core.synthetic``, ``anunet_platform.contracts``, the ``registry`` and ``segment``
packages). Behaviour is unchanged; this checks that speed is too, on what the jobs do with
those modules:

1. **job start-up**: ``import anunet_platform.cli`` (every job's first line) in a fresh
   process;
2. **discovery**: ``discover_cases`` over archives in every layout (names and 132-byte
   headers only);
3. **case loading**: ``load_case`` of every case (NIfTI and DICOM reading, label alignment,
   CHAOS PNG decoding: now Pillow instead of the hand-written decoder);
4. **the real CT series**: ``read_dicom_series`` of the 512 x 512 x 20 JPEG 2000 series in
   ../shared/data/real (the split DICOM reader), when it is there.

Each workload runs in fresh processes, alternating the two trees, ``--repeats`` times; the
table shows the median seconds and the ratio this tree / baseline (below 1: faster). The
baseline is checked out with ``git worktree`` into a temporary folder; both trees run with
this virtual environment's packages.

    python benchmarks/bench_structure.py [--baseline f82c1bd] [--repeats 5] [--cases 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchkit import cpu_name

REPO = Path(__file__).resolve().parents[1]
REAL_CT = REPO / ".." / "shared" / "data" / "real" / "totalseg-ct-dicom" / "dicom"

# Run inside a fresh interpreter with one tree first on sys.path; prints JSON seconds.
CHILD = r"""
import json, sys, time
tree, workload, arg = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path[:0] = [tree, tree + "/platform"]
start = time.perf_counter()
if workload == "import_cli":
    import anunet_platform.cli
    assert anunet_platform.cli.__file__.startswith(tree), anunet_platform.cli.__file__
    print(json.dumps({"seconds": time.perf_counter() - start}))
    raise SystemExit
from anunet_core.archives import discover_cases, load_case
import anunet_core.archives as archives_module
assert archives_module.__file__.startswith(tree), archives_module.__file__
roots = json.loads(arg)
start = time.perf_counter()
if workload == "discover":
    for _ in range(20):
        found = sum(len(discover_cases(root)) for root in roots)
elif workload == "load":
    found = 0
    for root in roots:
        for case in discover_cases(root):
            modality = None if case.image.is_dir() else "CT"
            load_case(case, "liver", modality=case.modality or modality)
            found += 1
elif workload == "real_ct":
    try:
        from anunet_core.io import read_dicom_series
    except ImportError:
        from anunet_core.volumes import read_dicom_series
    found = read_dicom_series(roots[0]).shape[2]
print(json.dumps({"seconds": time.perf_counter() - start, "found": found}))
"""


def checkout(baseline: str, where: Path) -> Path:
    """A detached worktree of ``baseline`` under ``where``."""
    tree = where / f"baseline-{baseline}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), baseline], check=True, capture_output=True)
    return tree


def remove(tree: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)


def run(tree: Path, workload: str, arg: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO / "benchmarks")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), workload, arg], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{workload} in {tree} failed: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def build_archives(out: Path, cases: int) -> list[str]:
    """The same small archives for both trees, written by this tree's generator."""
    from anunet_core.synthetic import make_archive

    roots = []
    for fmt, layouts in (("nifti", ("pairs", "msd", "lits")), ("dicom", ("dicom", "chaos"))):
        for layout in layouts:
            modality = "MR" if layout == "chaos" else "CT"
            root = out / layout
            make_archive(root, cases=cases, modality=modality, fmt=fmt, layout=layout, seed=7, shape=(96, 96, 32))
            roots.append(str(root))
    return roots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="f82c1bd", help="commit to compare against (default: before the restructure)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", type=int, default=2, help="cases per layout")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; baseline {args.baseline} vs this tree")
    with tempfile.TemporaryDirectory(prefix="bench-structure-") as tmp:
        tmp = Path(tmp)
        baseline = checkout(args.baseline, tmp)
        try:
            roots = build_archives(tmp / "archives", args.cases)
            workloads = [("import_cli", "[]"), ("discover", json.dumps(roots)), ("load", json.dumps(roots))]
            if REAL_CT.is_dir():
                workloads.append(("real_ct", json.dumps([str(REAL_CT)])))
            print(f"{'workload':<12} {'baseline s':>11} {'this tree s':>12} {'ratio':>7}")
            for workload, arg in workloads:
                times: dict[str, list[float]] = {"baseline": [], "current": []}
                found = set()
                for _ in range(args.repeats):
                    for name, tree in (("baseline", baseline), ("current", REPO)):
                        row = run(tree, workload, arg)
                        times[name].append(row["seconds"])
                        found.add(row.get("found"))
                if len(found) != 1:
                    raise RuntimeError(f"{workload}: the trees disagree on what they found: {found}")
                base, cur = statistics.median(times["baseline"]), statistics.median(times["current"])
                print(f"{workload:<12} {base:>11.3f} {cur:>12.3f} {cur / base:>7.2f}")
        finally:
            remove(baseline)


if __name__ == "__main__":
    main()
