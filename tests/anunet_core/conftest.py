"""Fixtures shared by the anunet_core tests."""

from __future__ import annotations

import pytest
import torch

from anunet_core import ANUNet
from testkit import randomize_batchnorm


@pytest.fixture(scope="module")
def trained_like() -> ANUNet:
    """An eval-mode ANU-Net whose BatchNorms are not identities (as after training)."""
    torch.manual_seed(0)
    return randomize_batchnorm(ANUNet()).eval()
