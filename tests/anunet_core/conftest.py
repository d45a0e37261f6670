"""Fixtures shared by the anunet_core tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anunet_core import ANUNet


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so that an eval-mode
    comparison exercises them (a fresh BatchNorm is the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(n, generator=generator) - 0.5)
    return model


@pytest.fixture(scope="module")
def trained_like() -> ANUNet:
    """An eval-mode ANU-Net whose BatchNorms are not identities (as after training)."""
    torch.manual_seed(0)
    return randomize_batchnorm(ANUNet()).eval()
