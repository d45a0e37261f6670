"""Latency per slice: measured on a CPU float32 network, faster for shallower depths."""

from __future__ import annotations

import torch

from anunet_platform.registry.latency import cpu_float, measure_latency_ms


def test_latency_grows_with_depth(trained_like, size: int) -> None:
    model = trained_like(0)
    latency = [measure_latency_ms(model, d, size) for d in (1, 4)]
    assert all(ms > 0 for ms in latency)
    assert latency[0] < latency[1], f"L1 should be faster than L4: {latency}"


def test_latency_is_measured_on_a_cpu_float32_copy(trained_like) -> None:
    model = trained_like(0)
    assert cpu_float(model) is model, "already CPU float32: no copy"
    half = trained_like(0).to(torch.bfloat16)
    copy = cpu_float(half)
    assert copy is not half and next(copy.parameters()).dtype == torch.float32
    assert next(half.parameters()).dtype == torch.bfloat16, "the caller's network is left as it was"
