"""The deployment fast path equals the eval-mode module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anunet_core import ANUNet, prune
from anunet_core.inference import fold_batchnorm, optimize_for_inference

DEPTHS = [1, 2, 3, 4]


@pytest.mark.parametrize("depth", DEPTHS)
def test_fast_path_equals_eval_module(trained_like: ANUNet, depth: int) -> None:
    fast = optimize_for_inference(trained_like, depth)
    x = torch.randn(3, 1, 64, 48, generator=torch.Generator().manual_seed(depth))
    with torch.no_grad():
        reference = trained_like(x, depth=depth)
    outputs = fast(x)
    assert len(outputs) == depth
    for a, b in zip(reference, outputs):
        assert b.shape == a.shape
        torch.testing.assert_close(b.contiguous(), a, atol=1e-4, rtol=0)


@pytest.mark.parametrize("depth", DEPTHS)
def test_fast_path_has_no_batchnorm_and_no_grad(trained_like: ANUNet, depth: int) -> None:
    fast = optimize_for_inference(trained_like, depth)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert all(not p.requires_grad for p in fast.parameters())
    assert fast.network.depth == depth
    out = fast(torch.randn(1, 1, 32, 32, requires_grad=True))
    assert not out[-1].requires_grad


def test_fast_path_leaves_source_untouched(trained_like: ANUNet) -> None:
    before = {k: v.clone() for k, v in trained_like.state_dict().items()}
    optimize_for_inference(trained_like, 3)
    after = trained_like.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in trained_like.modules())


def test_fold_batchnorm_refuses_training_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(prune(ANUNet(), 1).train())
