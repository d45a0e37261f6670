"""Which mixed precision to train and run in, per device: a pure policy, no Ray."""

from __future__ import annotations

import torch


def bf16_is_fast(device: torch.device) -> bool:
    """True where bfloat16 matrix hardware makes bf16 autocast pay off.

    CUDA: GPUs with native bf16 (Ampere and newer, e.g. the H100/H200). CPU: Intel AMX tiles
    or AVX512-BF16 (Sapphire Rapids and newer), where oneDNN runs bf16 convolutions several
    times faster than fp32; elsewhere bf16 on CPU is emulated and slower, so we stay in fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


def autocast(device: torch.device, enabled: bool | None = None) -> torch.autocast:
    """``torch.autocast`` to bf16 on ``device`` when ``enabled`` (default: when it is fast).

    Only the network runs in bf16: :class:`anunet_core.HybridLoss` casts its inputs to float32.
    """
    use = bf16_is_fast(device) if enabled is None else enabled
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use)
