"""Mixed-precision policy: bf16 only where the hardware makes it pay off."""

from __future__ import annotations

import pytest
import torch

from anunet_platform import precision


@pytest.mark.parametrize("amx,avx512_bf16,expected", [(True, False, True), (False, True, True), (False, False, False)])
def test_cpu_bf16_follows_the_instruction_set(monkeypatch, amx: bool, avx512_bf16: bool, expected: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert precision.bf16_is_fast(torch.device("cpu")) is expected
    with precision.autocast(torch.device("cpu")):
        out = torch.nn.functional.conv2d(torch.randn(1, 1, 8, 8), torch.randn(1, 1, 3, 3))
    assert out.dtype == (torch.bfloat16 if expected else torch.float32)


def test_explicit_choice_wins() -> None:
    with precision.autocast(torch.device("cpu"), enabled=False):
        out = torch.nn.functional.conv2d(torch.randn(1, 1, 8, 8), torch.randn(1, 1, 3, 3))
    assert out.dtype == torch.float32


def test_unknown_device_stays_fp32() -> None:
    assert precision.bf16_is_fast(torch.device("meta")) is False
