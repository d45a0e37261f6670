"""How fast one depth segments: median CPU milliseconds per slice, tagged on each registered version."""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from anunet_core.inference import optimize_for_inference


def cpu_float(model: nn.Module) -> nn.Module:
    """``model`` itself when it is on the CPU in float32, else a CPU float32 copy."""
    reference = next(model.parameters())
    if reference.device.type == "cpu" and reference.dtype == torch.float32:
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32)


def measure_latency_ms(model: nn.Module, depth: int, input_size: int, batch: int = 4, rounds: int = 5) -> float:
    """Median CPU milliseconds per slice of ``optimize_for_inference(model, depth)`` on
    ``(batch, 1, input_size, input_size)`` inputs (one warm-up batch, then ``rounds``)."""
    net = optimize_for_inference(cpu_float(model), depth)
    x = torch.randn(batch, model.in_channels, input_size, input_size, generator=torch.Generator().manual_seed(0))
    net(x)  # warm-up: oneDNN primitive creation, allocator
    times = []
    for _ in range(max(1, rounds)):
        start = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / batch
