"""Per-slice adaptive depth against fixed depths, side by side in one run, on unseen scans.

The demo's registered ANU-Net (its production versions; the demo is run first when
``--workdir`` holds none) segments scans it never saw:

1. an unseen synthetic CT cohort (``--cohort`` cases, seed ``--seed``, the demo's scan shape);
2. the real CT in ``../shared/data/real/totalseg-ct-dicom`` (20 slices, most without liver).

Each scan is preprocessed once (not timed); then, interleaved repetition by repetition so that
every mode sees the same machine state, the slices run through:

- fixed L1..L4: the pruned, BatchNorm-folded network (all its heads from one forward);
- the depth-choice policy's fixed depth (the paired bootstrap over the validation cases, and
  the old pooled rule, computed here from the validation cases);
- adaptive: every slice starts at L1 and goes deeper while its heads disagree, with the exit
  rule calibrated on the demo's validation cases (``--adaptive-max-dice-drop``, default 0.005)
  as registration calibrates it (with confidence: under 5 cases only the organ-absent exit);
- adaptive with the rule calibrated on the validation cases' mean drop (no confidence), as
  registration did before, to show what confidence costs and saves;
- adaptive variants that show where the speed comes from: the organ-absent exit alone (only
  confidently empty slices stop at L1), and the calibrated rule with slice context (a slice
  next to an organ slice goes on to L4).

Printed: the CPU, its matmul peak (fp32, same threads), and per mode the slices/s, the speed
against fixed L4, the mean volume Dice and its loss against L4 (model grid), GFLOP per slice,
the achieved GFLOP/s as a share of the peak, and the depth histogram. Targets (issue 16):
adaptive >= 2x the slices/s of L4 with <= 0.005 volume-Dice loss against L4, and better than
the policy's fixed depth on the same trade-off.

    python benchmarks/bench_adaptive.py [--workdir anunet-demo] [--cohort 8] [--seed 777] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import psutil
import torch

from anunet_core import optimize_for_inference
from anunet_core.adaptive import segment_adaptive, segment_fixed
from anunet_core.anytime import depth_gflops
from anunet_core.archives import discover_cases, load_case
from anunet_core.exit_rule import CaseHeads, ExitRule, calibrate_exit_rule
from anunet_core.preprocessing import preprocess_label, preprocess_volume
from anunet_core.synthetic import make_archive
from anunet_platform import registry
from anunet_platform.calibration import registration_tags, score_validation, training_volumes, volume_dice
from anunet_platform.contracts import read_summary
from anunet_platform.demo import DemoConfig
from anunet_platform.selection import DepthCandidate, DepthPolicy, choose_depth
from benchkit import cpu_name, demo_workdir

REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "totalseg-ct-dicom"


@dataclass
class Scan:
    case_id: str
    slices: torch.Tensor  # (K, 1, S, S) float32
    truth: np.ndarray  # (K, S, S) bool


def matmul_peak_gflops(threads: int, dtype=torch.float32, seconds: float = 1.0) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 2048**3 * n / (time.perf_counter() - start) / 1e9


def load_scans(folder: Path, size: int, organ: str = "liver") -> list[Scan]:
    scans = []
    for case in discover_cases(folder):
        volume, mask = load_case(case, organ, "CT")
        slices, geometry = preprocess_volume(volume, size)
        truth = preprocess_label(mask.astype(np.uint8), geometry) > 0
        scans.append(Scan(case.case_id, torch.from_numpy(slices).float()[:, None], truth))
    return scans


def context_rule_exits(record_exit: np.ndarray, probs: np.ndarray, max_depth: int) -> np.ndarray:
    """Slice context: a slice whose neighbour holds organ (final mask) is not allowed to stop
    early (it is redone at the deepest depth)."""
    organ = (probs > 0.5).reshape(len(probs), -1).any(axis=1)
    near = organ.copy()
    near[1:] |= organ[:-1]
    near[:-1] |= organ[1:]
    return np.where(near & (record_exit < max_depth), max_depth, record_exit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("anunet-demo"))
    parser.add_argument("--cohort", type=int, default=8)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--adaptive-max-dice-drop", type=float, default=0.005)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    workdir, uri = demo_workdir(args.workdir)
    demo = DemoConfig()
    model, _ = registry.load_registered(registry.registered_model_name("liver", "CT", 4), uri=uri)
    summary = read_summary(workdir / "dataset")
    size = summary.size
    threads = psutil.cpu_count(logical=True)
    torch.set_num_threads(threads)
    gflops = depth_gflops(model, size, size)

    # what registration measures, recomputed here: per-case Dice, the exit rule, the policies' depths
    cases = score_validation(model, workdir / "dataset", "liver", summary.empty_slice_fraction or 0.25)
    measured = registration_tags(cases, training_volumes(workdir / "dataset"), gflops, args.adaptive_max_dice_drop)
    rule: ExitRule = measured.exit_calibration.rule
    # the rule calibrated as before confidence: on the validation cases' mean drop, whatever their
    # number (the bootstrap trusted from 1 case, at its 50th percentile: about the mean)
    heads = [CaseHeads(probs=c.heads, truth=c.truth, slice_weight=c.slice_weight) for c in cases]
    on_mean = calibrate_exit_rule(heads, gflops, args.adaptive_max_dice_drop, min_cases=1, confidence=0.5)
    pooled_dice = {d: float(np.mean([c.dice[d - 1] for c in cases])) for d in range(1, 5)}
    candidates = [DepthCandidate(d, pooled_dice[d], 0.0, case_dice=tuple(c.dice[d - 1] for c in cases))
                  for d in range(1, 5)]
    policies = {"bootstrap": choose_depth(candidates, DepthPolicy()),
                "pooled": choose_depth(candidates, DepthPolicy(rule="pooled"))}

    with tempfile.TemporaryDirectory() as tmp:
        make_archive(Path(tmp) / "cohort", cases=args.cohort, modality="CT", fmt="nifti", layout="msd",
                     seed=args.seed, shape=demo.volume_shape)
        cohorts = {f"synthetic CT, {args.cohort} unseen cases (seed {args.seed})": load_scans(Path(tmp) / "cohort", size)}
    if (REAL_CT / "dicom").is_dir():
        real = load_scans(REAL_CT, size)
        cohorts["real CT (TotalSegmentator, 20 slices)"] = real
    else:
        print(f"(no real CT at {REAL_CT}: skipped)")

    nets = {d: optimize_for_inference(model, d) for d in range(1, 5)}
    empty_only = replace(rule, tau=1.01, uncertain_max=0.0)
    modes = {f"L{d}": ("fixed", d) for d in range(1, 5)}
    modes["adaptive"] = ("adaptive", rule)
    modes["adaptive: organ-absent exit only"] = ("adaptive", empty_only)
    modes["adaptive: calibrated on the mean"] = ("adaptive", on_mean.rule)

    peak = matmul_peak_gflops(threads)
    print(f"CPU: {cpu_name()}, {threads} threads; matmul peak {peak:.0f} GFLOP/s fp32 (2048^2, same run)")
    print(f"model: {registry.registered_model_name('liver', 'CT', 4)} of {workdir} ({size} px); "
          f"GFLOP/slice " + ", ".join(f"L{d} {g:.2f}" for d, g in gflops.items()))
    print(f"exit rule (calibrated on {len(cases)} validation cases): {rule.describe()}")
    print(f"  {measured.exit_calibration.reason}")
    print(f"exit rule calibrated on the mean (no confidence, for comparison): {on_mean.rule.describe()}")
    print(f"  {on_mean.reason}")
    for name, choice in policies.items():
        print(f"depth policy ({name}): {choice.reason}")

    for cohort, scans in cohorts.items():
        slices = sum(len(s.truth) for s in scans)
        seconds = {m: [] for m in modes}
        records = {}
        for _ in range(args.repeats):
            for mode, (kind, arg) in modes.items():
                start = time.perf_counter()
                out = []
                for scan in scans:
                    if kind == "fixed":
                        out.append(segment_fixed(nets[arg], scan.slices, arg, args.batch_size, gflops))
                    else:
                        out.append(segment_adaptive(nets[4], scan.slices, arg, args.batch_size, gflops))
                seconds[mode].append(time.perf_counter() - start)
                records[mode] = out
        # slice context: the calibrated rule's exits, with organ neighbours sent to L4 (cost and masks
        # from the fixed L4 run of those slices; its time is the adaptive time plus their L4 increment)
        dice, gflop, hist = {}, {}, {}
        for mode, recs in records.items():
            dice[mode] = [volume_dice(r.probs > 0.5, s.truth) for r, s in zip(recs, scans)]
            gflop[mode] = sum(r.gflop for r in recs) / slices
            hist[mode] = np.sum([r.depth_histogram(4) for r in recs], axis=0)
        ctx_dice, ctx_gflop, ctx_hist = [], 0.0, np.zeros(4, int)
        for r, l4, s in zip(records["adaptive"], records["L4"], scans):
            exits = context_rule_exits(r.exit_depth, r.probs, 4)
            probs = np.where((exits == 4)[:, None, None], l4.probs, r.probs)
            ctx_dice.append(volume_dice(probs > 0.5, s.truth))
            ctx_gflop += float(sum(gflops[int(e)] for e in exits))
            ctx_hist += np.bincount(exits - 1, minlength=4)
        best = {m: min(v) for m, v in seconds.items()}
        ctx_seconds = best["adaptive"] + best["L4"] * (ctx_gflop - gflop["adaptive"] * slices) / (gflops[4] * slices)

        print(f"\n== {cohort}: {slices} slices, best of {args.repeats} ==")
        print(f"{'mode':<36} {'slices/s':>9} {'vs L4':>6} {'Dice':>7} {'loss':>7} {'GFLOP/sl':>9} {'% peak':>7}  "
              "histogram L1..L4")
        reference = float(np.mean(dice["L4"]))
        rows = [(m, slices / best[m], float(np.mean(dice[m])), gflop[m], hist[m]) for m in modes]
        rows.append(("adaptive + slice context (derived)", slices / ctx_seconds, float(np.mean(ctx_dice)),
                     ctx_gflop / slices, ctx_hist))
        for name, choice in policies.items():
            d = choice.depth
            rows.append((f"policy ({name}): L{d}", slices / best[f"L{d}"], float(np.mean(dice[f"L{d}"])), gflop[f"L{d}"],
                         hist[f"L{d}"]))
        l4_rate = slices / best["L4"]
        for name, rate, mean_dice, g, h in rows:
            print(f"{name:<36} {rate:>9.2f} {rate / l4_rate:>5.2f}x {mean_dice:>7.4f} {reference - mean_dice:>+7.4f} "
                  f"{g:>9.2f} {100 * g * rate / peak:>6.1f}%  {' '.join(str(int(v)) for v in h)}")
        adaptive_rate = slices / best["adaptive"]
        loss = reference - float(np.mean(dice["adaptive"]))
        print(f"target: adaptive >= 2x L4 with <= 0.005 Dice loss: {adaptive_rate / l4_rate:.2f}x, loss {loss:+.4f} "
              f"-> {'met' if adaptive_rate / l4_rate >= 2 and loss <= 0.005 else 'NOT met'}")


if __name__ == "__main__":
    main()
