"""What each network of the comparison costs on this CPU, side by side in one run.

For ANU-Net and the five baselines (``anunet_core.baselines``, the paper's filters) at
``--size`` px: parameters, GFLOP per slice (convolutions), inference slices/s of the
BatchNorm-folded network as the segment job runs it, and training slices/s (forward, backward
and Adam on a batch, bf16 autocast where this CPU is fast at it, as Ray Train's workers do).
Each rate is also given as achieved GFLOP/s against this CPU's matrix-multiply peak measured in
the same run (fp32, and bf16 where it is fast), and as a ratio to ANU-Net's. Configurations are
interleaved round by round and the median of the rounds kept, so drift hits all alike.

What it tells a user of ``jobs/compare.py``: how long each architecture's share of the grid
takes relative to ANU-Net's, and whether a slow one is slow because it computes more (GFLOP)
or because it computes less efficiently (fraction of peak).

    python benchmarks/bench_compare.py [--size 128] [--batch 8] [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psutil
import torch

from anunet_core import HybridLoss, count_parameters
from anunet_core.baselines import build_network, network_gflops
from anunet_core.inference import optimize_for_inference
from anunet_core.vocabulary import ARCH_NAMES, MAX_DEPTH
from anunet_platform.precision import autocast, bf16_is_fast
from benchkit import cpu_name, matmul_peak_gflops

ORDER = ("unet", "r2unet", "unetpp", "attunet", "attr2unet", "anunet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=psutil.cpu_count(logical=True))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    bf16 = bf16_is_fast(device)
    peak = {"fp32": matmul_peak_gflops(torch.float32, args.threads)}
    if bf16:
        peak["bf16"] = matmul_peak_gflops(torch.bfloat16, args.threads)
    precision = "bf16" if bf16 else "fp32"
    print(f"CPU: {cpu_name()}, {args.threads} threads; matmul peak "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()) + f"; networks run in {precision}")
    print(f"{args.size}x{args.size} px, batch {args.batch}, median of {args.rounds} interleaved rounds\n")

    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, args.size, args.size)
    target = (torch.rand(args.batch, 1, args.size, args.size) > 0.8).float()
    loss_fn = HybridLoss()
    nets, fast, optims, gflops = {}, {}, {}, {}
    for arch in ORDER:
        nets[arch] = build_network(arch).to(memory_format=torch.channels_last)
        fast[arch] = optimize_for_inference(build_network(arch).eval())
        optims[arch] = torch.optim.Adam(nets[arch].parameters(), lr=1e-4)
        gflops[arch] = network_gflops(nets[arch], args.size, args.size)[MAX_DEPTH]

    def infer(arch: str) -> None:
        with autocast(device):
            fast[arch](x)

    def train_step(arch: str) -> None:
        with autocast(device):
            outputs = nets[arch](x.contiguous(memory_format=torch.channels_last))
        loss = loss_fn(outputs, target)
        optims[arch].zero_grad(set_to_none=True)
        loss.backward()
        optims[arch].step()

    timings = {(arch, kind): [] for arch in ORDER for kind in ("infer", "train")}
    for arch in ORDER:  # warm-up: oneDNN primitives, allocator
        infer(arch)
        train_step(arch)
    for _ in range(args.rounds):
        for arch in ORDER:
            for kind, run in (("infer", infer), ("train", train_step)):
                start = time.perf_counter()
                run(arch)
                timings[(arch, kind)].append(time.perf_counter() - start)

    rate = {key: args.batch / statistics.median(values) for key, values in timings.items()}
    top = peak[precision]
    print(f"{'network':<18} {'params':>10} {'GFLOP':>7} {'infer sl/s':>11} {'x ANU':>6} {'% peak':>7} "
          f"{'train sl/s':>11} {'x ANU':>6} {'% peak':>7}")
    for arch in ORDER:
        infer_rate, train_rate = rate[(arch, "infer")], rate[(arch, "train")]
        # a training step costs about 3x the forward: forward, and the backward's two products per layer
        print(f"{ARCH_NAMES[arch]:<18} {count_parameters(nets[arch]):>10,} {gflops[arch]:>7.2f} {infer_rate:>11.2f} "
              f"{infer_rate / rate[('anunet', 'infer')]:>6.2f} {100 * infer_rate * gflops[arch] / top:>6.1f}% "
              f"{train_rate:>11.2f} {train_rate / rate[('anunet', 'train')]:>6.2f} "
              f"{100 * 3 * train_rate * gflops[arch] / top:>6.1f}%")
    print(f"\n% peak: achieved GFLOP/s (convolutions; training counted as 3x the forward) over the {precision} matmul peak")


if __name__ == "__main__":
    main()
