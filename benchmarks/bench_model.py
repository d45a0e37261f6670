"""Inference speed of ANU-Net per pruning depth, measured side by side in one run.

Prints, for depths 1-4 at 256x256 on this machine's CPU (or --device cuda):
- slices/s of the whole network asked for depth d (`model(x, depth=d)`), of the pruned
  network (`prune(model, d)`), and of the deployment fast path (`optimize_for_inference`),
- the speedup L4 -> L1 next to the FLOP ratio (the paper got 1.21x, Table 6),
- the fast path against the plain eval module.

Configurations are interleaved round by round and the median of the rounds is kept, so that
drift on a shared machine hits every configuration alike. Only the ratios are meaningful.

    python benchmarks/bench_model.py [--size 256] [--batch 4] [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from anunet_core import ANUNet, count_parameters, prune
from anunet_core.inference import optimize_for_inference

DEPTHS = (1, 2, 3, 4)


def flops_per_slice(model: torch.nn.Module, x: torch.Tensor, **kwargs) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x[:1], **kwargs)
    return float(counter.get_total_flops())


def seconds_per_call(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="slice side in pixels (default 256)")
    parser.add_argument("--batch", type=int, default=4, help="slices per forward (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per configuration (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = ANUNet().to(device).eval()
    x = torch.randn(args.batch, 1, args.size, args.size, device=device)

    runs: dict[tuple[str, int], Callable[[], object]] = {}
    params: dict[int, int] = {}
    flops: dict[int, float] = {}
    for depth in DEPTHS:
        pruned = prune(model, depth).eval()
        fast = optimize_for_inference(model, depth)
        params[depth] = count_parameters(pruned)
        flops[depth] = flops_per_slice(pruned, x)

        def whole(depth=depth):
            with torch.no_grad():
                return model(x, depth=depth)

        def alone(pruned=pruned):
            with torch.no_grad():
                return pruned(x)

        runs[("model(x, depth=d)", depth)] = whole
        runs[("prune(model, d)", depth)] = alone
        runs[("fast path", depth)] = lambda fast=fast: fast(x)

    for run in runs.values():  # warm-up: allocator, oneDNN primitive caches
        run()
    samples: dict[tuple[str, int], list[float]] = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            samples[key].append(seconds_per_call(run, device))
    rate = {key: args.batch / statistics.median(times) for key, times in samples.items()}

    print(f"ANU-Net inference, {args.size}x{args.size}, batch {args.batch}, device {device}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds (slices/s)")
    print(f"{'depth':>5} {'params(M)':>10} {'GFLOP/slice':>12} {'model(x,d)':>11} {'prune(d)':>9} "
          f"{'fast path':>10} {'fast/plain':>11}")
    for depth in DEPTHS:
        plain, alone, fast = (rate[(name, depth)] for name in ("model(x, depth=d)", "prune(model, d)", "fast path"))
        print(f"{'L' + str(depth):>5} {params[depth] / 1e6:>10.4f} {flops[depth] / 1e9:>12.2f} {plain:>11.2f} "
              f"{alone:>9.2f} {fast:>10.2f} {fast / alone:>10.2f}x")
    flop_ratio = flops[4] / flops[1]
    print(f"\nspeedup L4 -> L1 (FLOP ratio {flop_ratio:.2f}x; the paper measured 1.21x):")
    for name in ("model(x, depth=d)", "prune(model, d)", "fast path"):
        print(f"  {name:<18} {rate[(name, 1)] / rate[(name, 4)]:.2f}x")
    gains = [rate[("fast path", d)] / rate[("prune(model, d)", d)] for d in DEPTHS]
    print(f"fast path vs plain eval module: {min(gains):.2f}x .. {max(gains):.2f}x over depths "
          f"(geometric mean {statistics.geometric_mean(gains):.2f}x)")


if __name__ == "__main__":
    main()
