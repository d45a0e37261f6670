"""Inference speed of ANU-Net per pruning depth against this CPU's limit, side by side in one run.

Prints, for depths 1-4 at 256x256 on this machine's CPU (or --device cuda):
- slices/s of the whole network asked for depth d (`model(x, depth=d)`), of the pruned
  network (`prune(model, d)`), and of the deployment fast path (`optimize_for_inference`),
- the speedup L4 -> L1 next to the FLOP ratio (the paper got 1.21x, Table 6),
- the fast path against the plain eval module,
- CPU only: this CPU's fp32 and bf16 matrix-multiply peak (`benchkit.matmul_peak_gflops`,
  measured in every round) and the fast path's achieved GFLOP/s in fp32 and in bf16 autocast
  as a fraction of the matching peak; bf16 is skipped where the platform would not use it
  (`anunet_platform.precision.bf16_is_fast`: no AMX or AVX512-BF16, bf16 would be emulated),
- CPU only: the alternatives to the fast path, with their speed against the fast path in the
  same precision and in the precision the platform uses on this CPU, and the agreement of their
  masks with the fp32 fast path's (volume Dice of the p > 0.5 masks, worst test case):
  `torch.compile` (inductor, freezing) in fp32 and bf16, ONNX Runtime fp32, and ONNX Runtime
  INT8 (static QDQ quantisation, per-channel weights, calibrated on synthetic CT slices;
  `quantize_int8` below). An alternative is worth adopting when every depth agrees
  (Dice >= 0.995) and runs >= 1.3x the platform's fast path. None did on the 2-core AMX Xeon
  it was written on (README, "The model"), so the INT8 path lives here, not in anunet_core;
  ONNX Runtime and onnx are the optional extra ``bench`` (``pip install -e .[bench]``).

Agreement needs a trained network (an untrained net's masks are noise): the run first trains
ANU-Net for --train-steps steps (seeded; --train-crop-pixel crops of synthetic CT slices, liver, hybrid
loss, the platform's precision) and scores on held-out synthetic phantoms at --size. Speed does
not depend on the weights, so every configuration runs the trained network.

Configurations are interleaved round by round and the median of the rounds is kept, so that
drift on a shared machine hits every configuration alike. Only the ratios are meaningful.

    python benchmarks/bench_model.py [--size 256] [--batch 4] [--rounds 5] [--threads N]
        [--train-steps 300] [--train-crop 96] [--compile-depths 1,4] [--no-int8]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch._dynamo.config
import torch._inductor.config
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from anunet_core import ANUNet, HybridLoss, count_parameters, prune
from anunet_core.inference import optimize_for_inference
from anunet_core.io import Volume
from anunet_core.preprocessing import label_to_mask, preprocess_label, preprocess_volume
from anunet_core.synthetic import make_phantom
from anunet_core.vocabulary import ORGAN_LABEL_VALUES
from anunet_platform.precision import autocast, bf16_is_fast
from benchkit import cpu_name, matmul_peak_gflops

DEPTHS = (1, 2, 3, 4)
DICE_BAR = 0.995  # adopt only if every depth's masks agree with fp32 at least this well
SPEED_BAR = 1.3  # ... and it runs at least this much faster than the platform's fast path
MEANINGFUL_DICE = 0.5  # agreement counts only where the fp32 masks match the truth this well
FIELD_MM = 384.0  # in-plane field of view of the phantoms (1.5 mm pixels at 256)
SLICES, SLICE_MM = 16, 15.0  # axial slices per phantom and their spacing (the whole abdomen)
TRAIN_SEEDS, TEST_SEEDS = range(6), range(100, 102)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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


INPUT_NAME = "x"


class OnnxNet:
    """A depth-``d`` network run by ONNX Runtime on CPU: ``net(x)`` takes ``(B, C, H, W)``
    (any batch, H and W multiples of ``2 ** d``) and returns the ``d`` head logits, each
    ``(B, 1, H, W)`` float32, like :class:`~anunet_core.inference.InferenceNet`.

    Build it with :func:`quantize_int8` (or :func:`export_onnx` for the float network).
    ``threads``: ONNX Runtime's intra-op threads (default: torch's ``get_num_threads()``).
    """

    def __init__(self, onnx_model: bytes, depth: int, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # No busy-waiting between runs: the CPU goes to whoever runs next (another model, Ray's
        # other tasks), as torch's own thread pool does.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self.depth = depth

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        array = np.ascontiguousarray(x.detach().to(torch.float32).cpu().numpy())
        return [torch.from_numpy(out) for out in self.session.run(None, {INPUT_NAME: array})]


def export_onnx(model: nn.Module, depth: int, path: str | Path, opset: int = 17) -> Path:
    """Write the fast path of ``model`` at ``depth`` (pruned, BatchNorm folded) to ``path`` as
    ONNX, with batch, height and width dynamic. Returns ``path``."""
    network = optimize_for_inference(model, depth).network.to(memory_format=torch.contiguous_format)
    multiple = 2**depth
    sample = torch.zeros(1, network.in_channels, 4 * multiple, 4 * multiple)
    axes = {0: "batch", 2: "height", 3: "width"}
    outputs = [f"head_{j}" for j in range(1, depth + 1)]
    torch.onnx.export(network, (sample,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                      output_names=outputs, dynamic_axes={INPUT_NAME: axes, **{name: axes for name in outputs}})
    return Path(path)


def quantize_int8(model: nn.Module, depth: int, calibration: torch.Tensor, batch: int = 4,
                  threads: int | None = None) -> OnnxNet:
    """``model`` at ``depth`` as a statically quantised INT8 :class:`OnnxNet`.

    Args:
        model: an ANU-Net (or a network of :mod:`anunet_core.baselines`), any mode; not modified.
        depth: 1..``model.depth``.
        calibration: ``(N, C, H, W)`` float32 slices the activation ranges are taken from
            (min-max), e.g. 32 preprocessed CT slices; H and W multiples of ``2 ** depth``.
        batch: slices per calibration forward. Defaults to 4.
        threads: ONNX Runtime's intra-op threads. Defaults to torch's ``get_num_threads()``.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration must be (N, C, H, W) slices with N >= 1, got shape {tuple(calibration.shape)}")

    class Slices(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[torch.Tensor] = iter(torch.split(calibration.to(torch.float32), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self.batches, None)
            return None if chunk is None else {INPUT_NAME: np.ascontiguousarray(chunk.numpy())}

    with tempfile.TemporaryDirectory(prefix="anunet-int8-") as folder:
        float_path = export_onnx(model, depth, Path(folder) / "float.onnx")
        int8_path = Path(folder) / "int8.onnx"
        quantize_static(str(float_path), str(int8_path), Slices(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return OnnxNet(int8_path.read_bytes(), depth, threads)


def onnx_float(model: nn.Module, depth: int, threads: int | None = None) -> OnnxNet:
    """``model`` at ``depth`` as a float32 :class:`OnnxNet` (ONNX Runtime without quantisation)."""
    with tempfile.TemporaryDirectory(prefix="anunet-onnx-") as folder:
        return OnnxNet(export_onnx(model, depth, Path(folder) / "float.onnx").read_bytes(), depth, threads)


def synthetic_ct(seeds: Sequence[int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed slices ``(N, 1, size, size)`` of synthetic CT phantoms and their liver masks
    (float 0/1), ``SLICES`` per phantom, in phantom order."""
    images, masks = [], []
    pixel = FIELD_MM / size
    for seed in seeds:
        p = make_phantom(seed, "CT", shape=(size, size, SLICES), spacing=(pixel, pixel, SLICE_MM))
        slices, geometry = preprocess_volume(Volume(p.image, p.affine, "CT", p.case_id), size)
        images.append(slices)
        masks.append(preprocess_label(label_to_mask(p.labels, ORGAN_LABEL_VALUES["liver"]), geometry))
    return (torch.from_numpy(np.concatenate(images)).unsqueeze(1),
            torch.from_numpy(np.concatenate(masks)).float().unsqueeze(1))


def train(images: torch.Tensor, masks: torch.Tensor, steps: int, crop: int = 128, batch: int = 4, seed: int = 0) -> ANUNet:
    """ANU-Net trained for ``steps`` Adam steps on random ``crop``-pixel crops of ``images``
    (the hybrid loss over the four heads, the platform's precision on CPU); eval mode."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = ANUNet().to(memory_format=torch.channels_last).train()
    loss_fn, optimizer = HybridLoss(), torch.optim.Adam(model.parameters(), lr=1e-3)
    side = images.shape[-1]
    for _ in range(steps):
        index = torch.randint(len(images), (batch,), generator=generator)
        corners = torch.randint(side - crop + 1, (batch, 2), generator=generator).tolist()
        x = torch.stack([images[i, :, r : r + crop, c : c + crop] for i, (r, c) in zip(index.tolist(), corners)])
        y = torch.stack([masks[i, :, r : r + crop, c : c + crop] for i, (r, c) in zip(index.tolist(), corners)])
        with autocast(torch.device("cpu")):
            outputs = model(x.contiguous(memory_format=torch.channels_last))
        loss = loss_fn(outputs, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def predict_masks(run: Callable[[torch.Tensor], list[torch.Tensor]], images: torch.Tensor, batch: int) -> torch.Tensor:
    """Boolean masks (p > 0.5 of the deepest head) of ``images``, ``batch`` slices per call (the
    last call padded to ``batch`` so that compiled graphs see one shape)."""
    out = []
    for chunk in torch.split(images, batch):
        n = len(chunk)
        if n < batch:
            chunk = torch.cat([chunk, chunk.new_zeros(batch - n, *chunk.shape[1:])])
        out.append(run(chunk)[-1][:n].float() > 0)
    return torch.cat(out)


def volume_dice(a: torch.Tensor, b: torch.Tensor) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def worst_case_dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest volume Dice over the test phantoms (``SLICES`` consecutive slices each)."""
    return min(volume_dice(x, y) for x, y in zip(torch.split(a, SLICES), torch.split(b, SLICES)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="slice side in pixels (default 256)")
    parser.add_argument("--batch", type=int, default=4, help="slices per forward (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per configuration (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--train-steps", type=int, default=300,
                        help="training steps before measuring (seeded); 0: untrained, no agreement (default 300)")
    parser.add_argument("--train-crop", type=int, default=96,
                        help="side of the training crops in pixels, at most --size (default 96)")
    parser.add_argument("--compile-depths", default="1,4",
                        help="depths to try torch.compile at, comma-separated, or 'none'; each compile takes "
                             "minutes on 2 cores (default 1,4)")
    parser.add_argument("--no-int8", action="store_true", help="skip ONNX Runtime (fp32 and INT8)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    device = torch.device(args.device)
    on_cpu = device.type == "cpu"
    bf16 = on_cpu and bf16_is_fast(device)
    platform_regime = "bf16" if bf16 else "fp32"
    compile_depths = [] if args.compile_depths == "none" or not on_cpu else [int(d) for d in args.compile_depths.split(",")]
    int8 = on_cpu and not args.no_int8
    if int8 and (importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None):
        print("ONNX Runtime or onnx not installed (pip install -e .[bench]): ONNX Runtime fp32 and INT8 skipped")
        int8 = False

    if args.train_steps:
        progress(f"training {args.train_steps} steps")
        start = time.perf_counter()
        train_images, train_masks = synthetic_ct(TRAIN_SEEDS, args.size)
        model = train(train_images, train_masks, args.train_steps, crop=min(args.train_crop, args.size), seed=args.seed)
        test_images, test_masks = synthetic_ct(TEST_SEEDS, args.size)
        print(f"trained ANU-Net: {args.train_steps} steps of 4 crops of {min(args.train_crop, args.size)} px, {len(train_images)} synthetic CT "
              f"slices ({len(TRAIN_SEEDS)} phantoms), seed {args.seed}, {time.perf_counter() - start:.0f} s")
    else:
        torch.manual_seed(args.seed)
        model = ANUNet().eval()
        train_images = test_images = test_masks = None
        print("untrained ANU-Net (--train-steps 0): speed only, no agreement")
    model = model.to(device)
    x = torch.randn(args.batch, 1, args.size, args.size, device=device)

    runs: dict[tuple[str, int], Callable[[], object]] = {}
    predictors: dict[tuple[str, int], Callable[[torch.Tensor], list[torch.Tensor]]] = {}
    regime = {"fast fp32": "fp32", "fast bf16": "bf16", "compile fp32": "fp32", "compile bf16": "bf16",
              "ORT fp32": "fp32", "ORT INT8": platform_regime}
    setup: dict[tuple[str, int], float] = {}
    params: dict[int, int] = {}
    flops: dict[int, float] = {}
    if compile_depths:
        torch._inductor.config.freezing = True
        torch._dynamo.config.cache_size_limit = 64
    for depth in DEPTHS:
        progress(f"setting up L{depth}")
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

        def fast_bf16(x, fast=fast):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fast(x)

        runs[("model(x, depth=d)", depth)] = whole
        runs[("prune(model, d)", depth)] = alone
        predictors[("fast fp32", depth)] = fast
        if bf16:
            predictors[("fast bf16", depth)] = fast_bf16
        if depth in compile_depths:
            for name in ("compile fp32", "compile bf16") if bf16 else ("compile fp32",):
                compiled = torch.compile(fast.network)  # freezing: weights become constants

                def run(x, compiled=compiled, use_bf16=name.endswith("bf16")):
                    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                        return compiled(x.contiguous(memory_format=torch.channels_last))

                start = time.perf_counter()
                run(x)  # compiles
                setup[(name, depth)] = time.perf_counter() - start
                predictors[(name, depth)] = run
        if int8:
            start = time.perf_counter()
            predictors[("ORT fp32", depth)] = onnx_float(model, depth, threads)
            setup[("ORT fp32", depth)] = time.perf_counter() - start
            calibration = train_images[:: max(1, len(train_images) // 32)][:32] if train_images is not None else torch.rand(8, 1, args.size, args.size)
            start = time.perf_counter()
            predictors[("ORT INT8", depth)] = quantize_int8(model, depth, calibration, batch=args.batch, threads=threads)
            setup[("ORT INT8", depth)] = time.perf_counter() - start
    for key, predictor in predictors.items():
        runs[key] = lambda predictor=predictor: predictor(x)

    progress("warm-up")
    for run in runs.values():  # warm-up: allocator, oneDNN primitive caches
        run()
    samples: dict[tuple[str, int], list[float]] = {key: [] for key in runs}
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for round_ in range(args.rounds):
        progress(f"round {round_ + 1} of {args.rounds}")
        if on_cpu:  # the yardstick drifts with the machine's load as the networks do
            peaks["fp32"].append(matmul_peak_gflops(torch.float32, threads, rounds=3))
            if bf16:
                peaks["bf16"].append(matmul_peak_gflops(torch.bfloat16, threads, rounds=3))
        for key, run in runs.items():
            samples[key].append(seconds_per_call(run, device))
    rate = {key: args.batch / statistics.median(times) for key, times in samples.items()}

    print(f"ANU-Net inference, {args.size}x{args.size}, batch {args.batch}, device {device}, "
          f"{threads} threads, median of {args.rounds} rounds (slices/s)")
    print(f"{'depth':>5} {'params(M)':>10} {'GFLOP/slice':>12} {'model(x,d)':>11} {'prune(d)':>9} "
          f"{'fast path':>10} {'fast/plain':>11}")
    for depth in DEPTHS:
        plain, alone, fast = (rate[(name, depth)] for name in ("model(x, depth=d)", "prune(model, d)", "fast fp32"))
        print(f"{'L' + str(depth):>5} {params[depth] / 1e6:>10.4f} {flops[depth] / 1e9:>12.2f} {plain:>11.2f} "
              f"{alone:>9.2f} {fast:>10.2f} {fast / alone:>10.2f}x")
    flop_ratio = flops[4] / flops[1]
    print(f"\nspeedup L4 -> L1 (FLOP ratio {flop_ratio:.2f}x; the paper measured 1.21x):")
    for name in ("model(x, depth=d)", "prune(model, d)", "fast fp32"):
        print(f"  {name:<18} {rate[(name, 1)] / rate[(name, 4)]:.2f}x")
    gains = [rate[("fast fp32", d)] / rate[("prune(model, d)", d)] for d in DEPTHS]
    print(f"fast path vs plain eval module: {min(gains):.2f}x .. {max(gains):.2f}x over depths "
          f"(geometric mean {statistics.geometric_mean(gains):.2f}x)")
    if not on_cpu:
        return

    peak = {name: statistics.median(values) for name, values in peaks.items() if values}
    print(f"\nCPU: {cpu_name()}; torch {torch.__version__}, {threads} threads")
    line = f"matmul peak (2048x2048, median over rounds of each round's best of 3): fp32 {peak['fp32']:.0f} GFLOP/s"
    if bf16:
        line += f", bf16 {peak['bf16']:.0f} GFLOP/s ({peak['bf16'] / peak['fp32']:.1f}x fp32)"
    print(line)
    if not bf16:
        print("bf16: this CPU has neither AMX nor AVX512-BF16, so bf16 is emulated and the platform runs fp32; "
              "bf16 skipped")
    print("fast path, achieved GFLOP/s (FLOPs of the pruned network / median time) and fraction of the peak:")
    header = f"{'depth':>5} {'fp32 GFLOP/s':>13} {'of fp32 peak':>13}"
    if bf16:
        header += f" {'bf16 GFLOP/s':>13} {'of bf16 peak':>13}"
    print(header)
    for depth in DEPTHS:
        achieved = rate[("fast fp32", depth)] * flops[depth] / 1e9
        line = f"{'L' + str(depth):>5} {achieved:>13.1f} {achieved / peak['fp32']:>12.1%}"
        if bf16:
            achieved = rate[("fast bf16", depth)] * flops[depth] / 1e9
            line += f" {achieved:>13.1f} {achieved / peak['bf16']:>12.1%}"
        print(line)

    reference: dict[int, torch.Tensor] = {}
    dice: dict[tuple[str, int], float] = {}  # what the verdict uses
    shown: dict[tuple[str, int], float] = {}  # what the table prints
    if test_images is not None:
        for depth in DEPTHS:
            progress(f"agreement at L{depth}")
            reference[depth] = predict_masks(predictors[("fast fp32", depth)], test_images, args.batch)
            for key in (key for key in predictors if key[1] == depth):
                masks = reference[depth] if key[0] == "fast fp32" else predict_masks(predictors[key], test_images, args.batch)
                dice[key] = worst_case_dice(masks, reference[depth])
            dice[("truth", depth)] = worst_case_dice(reference[depth], test_masks.bool())
        print(f"\nfp32 fast path against the test phantoms' liver ({len(TEST_SEEDS)} phantoms, worst volume Dice): "
              + ", ".join(f"L{d} {dice[('truth', d)]:.3f}" for d in DEPTHS))
        if min(dice[("truth", d)] for d in DEPTHS) < MEANINGFUL_DICE:
            print(f"the trained network scores below {MEANINGFUL_DICE} at some depth: its masks are (nearly) empty or "
                  "noise there, so agreement with them proves nothing; train longer (--train-steps, --train-crop). "
                  "Dice in parentheses below is not used for the verdict")
            shown = dict(dice)
            dice = {key: value for key, value in dice.items() if dice[("truth", key[1])] >= MEANINGFUL_DICE}

    print(f"\nalternatives to the fast path (the platform runs {platform_regime} on this CPU); "
          f"adopt: Dice >= {DICE_BAR} at every depth and >= {SPEED_BAR}x the {platform_regime} fast path")
    print(f"{'config':<14} {'depth':>5} {'setup s':>8} {'slices/s':>9} {'vs fast same':>13} "
          f"{'vs fast ' + platform_regime:>13} {'Dice vs fp32':>13}")
    verdicts = []
    for name in ("fast fp32", "fast bf16", "compile fp32", "compile bf16", "ORT fp32", "ORT INT8"):
        keys = [(name, d) for d in DEPTHS if (name, d) in predictors]
        if not keys:
            continue
        for key in keys:
            depth = key[1]
            same = rate[key] / rate[(f"fast {regime[name]}", depth)]
            platform = rate[key] / rate[(f"fast {platform_regime}", depth)]
            agreement = f"{dice[key]:.4f}" if key in dice else f"({shown[key]:.4f})" if key in shown else "n/a"
            setup_s = f"{setup[key]:.0f}" if key in setup else ""
            print(f"{name:<14} {'L' + str(depth):>5} {setup_s:>8} {rate[key]:>9.2f} {same:>12.2f}x {platform:>12.2f}x "
                  f"{agreement:>13}")
        if name.startswith("fast"):
            continue
        speeds = [rate[key] / rate[(f"fast {platform_regime}", key[1])] for key in keys]
        worst = min((dice[key] for key in keys if key in dice), default=None)
        fast_enough, agrees = min(speeds) >= SPEED_BAR, worst is not None and worst >= DICE_BAR
        reasons = [f"{min(speeds):.2f}x .. {max(speeds):.2f}x the {platform_regime} fast path",
                   "agreement not measured (untrained, or the trained masks are not meaningful)" if worst is None else f"worst Dice {worst:.4f}"]
        verdicts.append(f"  {name:<14} {'ADOPT' if fast_enough and agrees else 'reject'}: {'; '.join(reasons)}"
                        f" over depths {','.join(str(k[1]) for k in keys)}")
    print("verdict:")
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
