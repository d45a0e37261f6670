"""Does the depth choice hold on new data? Both rules, side by side, over several training runs.

For each of ``--seeds`` training seeds: a synthetic CT archive of ``--cases`` cases (its own
seed), ingested (Parquet, split by patient, ``--val-fraction`` of the training patients held out
for validation), an ANU-Net trained for ``--epochs`` epochs (a plain single-process loop: the
same model, loss and augmentation as a Ray Train worker), every validation case scored by every
head (:func:`anunet_platform.calibration.score_validation`, what registration stores), and the
depth chosen by

- **pooled**: the paper's rule, the smallest depth whose pooled validation Dice is within
  ``--max-dice-drop`` of the best depth's (what ``--depth auto`` did before issue 16);
- **bootstrap**: today's ``--depth auto``, the smallest depth within the drop of the best with
  95% confidence by a paired bootstrap over the validation cases' volume Dice.

Then an unseen cohort (``--cohort`` cases, seed 777) is segmented at every depth and each
rule's choice is checked: is its mean volume Dice within ``--max-dice-drop`` of the best depth's
on the unseen cases? Target (issue 16): the bootstrap rule holds in >= 90% of the runs. Also
printed: how much Dice each rule's choice loses on the unseen cohort and the GFLOP/slice it
costs.

    python benchmarks/bench_depth_choice.py [--seeds 5] [--first-seed 0] [--cases 20] [--epochs 8] [--size 64]

``--first-seed K`` runs seeds K..K+seeds-1 (each run depends only on its seed, so a long
measurement can be split over several invocations and the rows put together).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from anunet_core.anytime import depth_gflops
from anunet_core.archives import discover_cases, load_case
from anunet_core.preprocessing import preprocess_label, preprocess_volume
from anunet_core.synthetic import make_archive
from anunet_platform.calibration import score_validation, volume_dice
from anunet_platform.contracts import read_summary
from anunet_platform.ingest import IngestConfig, run_ingest
from anunet_platform.selection import DepthCandidate, DepthPolicy, choose_depth
from benchkit import cpu_name, train_plain

SHAPE = (96, 96, 32)  # the demo's scans


def cohort_dice(model: torch.nn.Module, folder: Path, size: int) -> dict[int, float]:
    """Mean volume Dice per depth over the scans of ``folder`` (model grid), all heads from one forward."""
    per_depth: dict[int, list[float]] = {d: [] for d in range(1, 5)}
    model.eval()
    for case in discover_cases(folder):
        volume, mask = load_case(case, "liver", "CT")
        slices, geometry = preprocess_volume(volume, size)
        truth = preprocess_label(mask.astype(np.uint8), geometry) > 0
        with torch.no_grad():
            heads = model(torch.from_numpy(slices).float()[:, None])
        for d, logits in enumerate(heads, start=1):
            per_depth[d].append(volume_dice((logits[:, 0] > 0).numpy(), truth))
    return {d: float(np.mean(v)) for d, v in per_depth.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--val-fraction", type=float, default=0.4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cohort", type=int, default=8)
    parser.add_argument("--max-dice-drop", type=float, default=0.01)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    threads = psutil.cpu_count(logical=True)
    print(f"CPU: {cpu_name()}, {threads} threads")
    ray.init(num_cpus=threads, include_dashboard=False, logging_level="ERROR")
    gflops = None
    held = {"pooled": 0, "bootstrap": 0}
    losses = {"pooled": [], "bootstrap": []}
    cost = {"pooled": [], "bootstrap": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_archive(root / "cohort", cases=args.cohort, modality="CT", fmt="nifti", layout="msd", seed=777, shape=SHAPE)
        print(f"{'seed':>4} {'val':>3} {'val Dice L1..L4 (pooled)':>28} {'unseen Dice L1..L4':>28} "
              f"{'pooled':>7} {'boot':>5}  bootstrap reason")
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            archive, dataset = root / f"archive-{seed}", root / f"dataset-{seed}"
            make_archive(archive, cases=args.cases, modality="CT", fmt="nifti", seed=100 + seed, shape=SHAPE)
            run_ingest(IngestConfig(source=archive, out=dataset, organ="liver", modality="CT", size=args.size,
                                    seed=seed, val_fraction=args.val_fraction))
            start = time.perf_counter()
            model = train_plain(dataset, args.epochs, batch_size=8, threads=threads, seed=seed)
            train_seconds = time.perf_counter() - start
            gflops = gflops or depth_gflops(model, args.size, args.size)
            summary = read_summary(dataset)
            cases = score_validation(model, dataset, "liver", summary.empty_slice_fraction)
            candidates = [DepthCandidate(d, float(np.mean([c.dice[d - 1] for c in cases])), 0.0,
                                         case_dice=tuple(c.dice[d - 1] for c in cases)) for d in range(1, 5)]
            choices = {"pooled": choose_depth(candidates, DepthPolicy(max_dice_drop=args.max_dice_drop, rule="pooled")),
                       "bootstrap": choose_depth(candidates, DepthPolicy(max_dice_drop=args.max_dice_drop))}
            unseen = cohort_dice(model, root / "cohort", args.size)
            best = max(unseen.values())
            for rule, choice in choices.items():
                loss = best - unseen[choice.depth]
                losses[rule].append(loss)
                cost[rule].append(gflops[choice.depth])
                held[rule] += loss <= args.max_dice_drop + 1e-12
            print(f"{seed:>4} {len(cases):>3} {' '.join(f'{c.val_dice:.3f}' for c in candidates):>28} "
                  f"{' '.join(f'{unseen[d]:.3f}' for d in range(1, 5)):>28} "
                  f"{'L' + str(choices['pooled'].depth):>7} {'L' + str(choices['bootstrap'].depth):>5}  "
                  f"{choices['bootstrap'].reason}  [trained {train_seconds:.0f} s]")
    ray.shutdown()
    print(f"\nunseen cohort: {args.cohort} cases (seed 777); drop allowed {args.max_dice_drop}")
    for rule in ("pooled", "bootstrap"):
        rate = held[rule] / args.seeds
        print(f"{rule:>9}: within the drop of the best depth in {held[rule]}/{args.seeds} runs ({100 * rate:.0f}%), "
              f"mean Dice lost {np.mean(losses[rule]):.4f} (worst {max(losses[rule]):.4f}), "
              f"mean {np.mean(cost[rule]):.2f} GFLOP/slice")
    print(f"target: the bootstrap rule holds in >= 90% of the runs: "
          f"{'met' if held['bootstrap'] / args.seeds >= 0.9 else 'NOT met'}")


if __name__ == "__main__":
    main()
