"""Does quality control find the segmentations a person should look at? A labelled cohort with
cases made hard on purpose, through the real nightly job.

The cohort (:func:`~anunet_core.synthetic.hard_cases.make_qc_cohort`, the demo's scan shape):
normal CT phantoms and, per kind, cases made hard: MR given to the CT model, heavy noise, a bias
field, a field of view cut through the organ, an organ of unusual size, an organ at an unusual
position. The case ids do not give the kind away. The demo's registered liver model segments it
with the segment job (``--depth adaptive`` and ``--depth auto``), jobs/evaluate's per-case
volume Dice scores it, and this prints:

- the AUROC of ``1 - qc_score`` for detecting the cases with volume Dice < 0.8 (target >= 0.85),
  the mean Dice of flagged and unflagged cases, and each QC feature's AUROC on its own;
- one line per case: kind, Dice, qc_score, the reasons;
- the CPU and the job's slices/s in each mode (QC costs no inference: the heads are the ones the
  segmentation computed).

    python benchmarks/bench_qc.py [--workdir anunet-demo] [--per-kind 3] [--seed 777]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from anunet_core.synthetic.hard_cases import make_qc_cohort, read_cohort
from anunet_platform.demo import DemoConfig
from anunet_platform.evaluate import evaluate
from anunet_platform.qc import auroc, detection
from anunet_platform.segment import SegmentConfig, run_segmentation
from benchkit import cpu_name, demo_workdir

FEATURES = {  # each feature's own signal of trouble (higher = worse)
    "head_agreement": lambda r: 1.0 - r["head_agreement"],
    "uncertain_fraction": lambda r: r["uncertain_fraction"],
    "|volume_z|": lambda r: abs(r["volume_z"]) if r["volume_z"] is not None else 0.0,
    "touches_border": lambda r: float(bool(r["touches_border"])),
    "deep_slice_fraction": lambda r: r["deep_slice_fraction"] or 0.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("anunet-demo"))
    parser.add_argument("--per-kind", type=int, default=3)
    parser.add_argument("--seed", type=int, default=777)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir, uri = demo_workdir(args.workdir)
    print(f"CPU: {cpu_name()}")
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "cohort"
        make_qc_cohort(archive, cases_per_kind=args.per_kind, seed=args.seed, shape=DemoConfig().volume_shape)
        kinds = {c.case_id: (c.kind, c.detail) for c in read_cohort(archive)}
        for depth in ("adaptive", "auto"):
            out = Path(tmp) / f"out-{depth}"
            summary = run_segmentation(SegmentConfig(archive=archive, out=out, model="anunet-liver-ct", depth=depth,
                                                     tracking_uri=uri))
            rows = {r["case_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist() if r["case_id"]}
            dice = {e.case_id: e.dice for e in evaluate(out, archive, organ="liver", modality="CT")}
            ids = sorted(kinds)
            found = detection([rows[c]["qc_score"] for c in ids], [rows[c]["needs_review"] for c in ids],
                              [dice[c] for c in ids])
            print(f"\n== --depth {depth}: {summary.depth_reason}; {summary.slices_per_second:.1f} slices/s, "
                  f"depth histogram {summary.depth_histogram} ==")
            print(f"{len(ids)} cases ({', '.join(f'{k} {sum(v[0] == k for v in kinds.values())}' for k in sorted({v[0] for v in kinds.values()}))})")
            print(found.line())
            bad = [dice[c] < 0.8 for c in ids]
            if 0 < sum(bad) < len(bad):
                print("each feature alone: " + ", ".join(
                    f"{name} {auroc([signal(rows[c]) for c in ids], bad):.3f}" for name, signal in FEATURES.items()))
            print(f"target AUROC >= 0.85: {'met' if found.auroc is not None and found.auroc >= 0.85 else 'NOT met'}")
            print(f"{'case':<10} {'kind':<9} {'Dice':>6} {'qc':>6} {'review':>6}  reasons")
            for c in sorted(ids, key=lambda c: rows[c]["qc_score"]):
                print(f"{c:<10} {kinds[c][0]:<9} {dice[c]:>6.3f} {rows[c]['qc_score']:>6.3f} "
                      f"{'yes' if rows[c]['needs_review'] else 'no':>6}  {rows[c]['qc_reasons'] or ''}")
            print("by kind: " + ", ".join(
                f"{k} Dice {np.mean([dice[c] for c in ids if kinds[c][0] == k]):.3f} flagged "
                f"{sum(rows[c]['needs_review'] for c in ids if kinds[c][0] == k)}/{sum(kinds[c][0] == k for c in ids)}"
                for k in sorted({v[0] for v in kinds.values()})))


if __name__ == "__main__":
    main()
