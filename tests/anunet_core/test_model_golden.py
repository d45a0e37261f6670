"""ANU-Net's forward pass pinned to golden numbers, and pruning checked on that same pass.

The network is ``torch.manual_seed(0); ANUNet()`` whose BatchNorms are calibrated like a
trained network's: their running statistics are the exact averages over one seeded batch
(a train-mode forward with ``momentum=None``), so in eval mode every layer passes on a
normalised, live signal. (With PyTorch's default initialisation and identity BatchNorms the
signal dies out with depth: the logits would be nearly constant, and changing a weight of the
deeper levels would not move them at all.) The golden numbers are the eval-mode logits of every
head at depth 4 for a seeded ``(2, 1, 64, 64)`` float32 input.

Any change to the architecture (wiring, gates, the channel order of a concatenation, the
BatchNorms, the initialisation) moves them. They were computed once in fp32 on an x86 CPU
(PyTorch 2.13, oneDNN, AVX2). Measured rounding spread, against an fp64 forward, one thread
instead of two, and PyTorch's non-oneDNN convolutions: at most 7e-6 per logit, 4e-4 on a
head's sum, 6e-8 on its mean |logit| and standard deviation; the tolerances below leave a
margin of at least 4x over that, so other x86 CPUs (AVX-512, AMX) agree. A PyTorch release
that changes the default initialisers' random draws would move the numbers too: recompute them
then, after checking that nothing else changed.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch import nn

from anunet_core import ANUNet, prune

# Tolerances: one logit (the logits are about -1.9..1.8), a head's sum of 8,192 logits, and its
# mean |logit| and standard deviation (relative).
RTOL, ATOL = 1e-4, 3e-5
SUM_ATOL = 5e-3
STAT_RTOL = 1e-5
# The input's first three values and its sum (torch.randn, Generator seeded 2020).
INPUT_START = (-0.00866926, -0.32125342, -1.28986025)
INPUT_SUM = 6.832586
INDICES = [(0, 0, 0, 0), (0, 0, 31, 17), (0, 0, 63, 63), (1, 0, 5, 58), (1, 0, 40, 40), (1, 0, 63, 0)]


class Golden(NamedTuple):
    sum: float
    mean_abs: float
    std: float  # the spread around the mean: independent of the head's bias
    values: tuple[float, ...]  # the logits at INDICES


GOLDEN = {
    1: Golden(sum=611.955849, mean_abs=0.27322965, std=0.34067401, values=(-0.03242230, 0.45040566, -0.05429636, 0.21940210, 0.62702268, -0.40846464)),
    2: Golden(sum=-495.761098, mean_abs=0.25669722, std=0.31920287, values=(0.17473459, -0.55354750, -0.22374304, 0.36784193, 0.22890611, -0.05229490)),
    3: Golden(sum=2093.054126, mean_abs=0.35398556, std=0.36679621, values=(0.41225243, -0.00734771, 0.14685617, -0.14913422, 0.79279584, 0.38443190)),
    4: Golden(sum=121.079759, mean_abs=0.30594254, std=0.38742594, values=(0.16428268, 0.26903746, 0.33263674, 0.65399712, -0.50117487, 0.08999442)),
}


def calibrated_anunet() -> ANUNet:
    """``manual_seed(0); ANUNet()`` with BatchNorm statistics averaged over one seeded batch, in eval mode."""
    torch.manual_seed(0)
    model = ANUNet()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a cumulative average: after one batch, exactly its statistics
            module.reset_running_stats()
    calibration = torch.randn(4, 1, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        model.train()(calibration, depth=4)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread while this module runs: the numbers do not depend on it (under 1e-7),
    and on a busy shared machine two spinning threads make these forwards several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(one_thread) -> ANUNet:
    return calibrated_anunet()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(2020), dtype=torch.float32)


@pytest.fixture(scope="module")
def forward(model: ANUNet, x: torch.Tensor) -> dict[int, list[torch.Tensor]]:
    """``model(x, depth=d)`` for d = 1..4."""
    with torch.no_grad():
        return {depth: model(x, depth=depth) for depth in (1, 2, 3, 4)}


def test_input_is_the_seeded_one(x: torch.Tensor) -> None:
    # pins the input too, so that a golden failure is the network's, not the input's
    assert x.shape == (2, 1, 64, 64) and x.dtype == torch.float32
    assert x[0, 0, 0, :3].tolist() == pytest.approx(INPUT_START, rel=0, abs=1e-6)
    assert x.double().sum().item() == pytest.approx(INPUT_SUM, rel=0, abs=1e-3)


@pytest.mark.parametrize("head", [1, 2, 3, 4])
def test_head_logits_match_golden(forward, head: int) -> None:
    heads = forward[4]
    assert len(heads) == 4
    logits = heads[head - 1]
    assert logits.shape == (2, 1, 64, 64) and logits.dtype == torch.float32
    golden = GOLDEN[head]
    as64 = logits.double()
    assert as64.sum().item() == pytest.approx(golden.sum, rel=0, abs=SUM_ATOL)
    assert as64.abs().mean().item() == pytest.approx(golden.mean_abs, rel=STAT_RTOL, abs=0)
    assert as64.std().item() == pytest.approx(golden.std, rel=STAT_RTOL, abs=0)
    values = torch.tensor([logits[i].item() for i in INDICES], dtype=torch.float64)
    torch.testing.assert_close(values, torch.tensor(golden.values, dtype=torch.float64), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_shallower_forward_gives_the_same_first_heads(forward, depth: int) -> None:
    shallow = forward[depth]
    assert len(shallow) == depth
    for a, b in zip(shallow, forward[4][:depth]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_pruned_forward_equals_full_forward_at_depth(model: ANUNet, x: torch.Tensor, forward, depth: int) -> None:
    pruned = prune(model, depth)
    with torch.no_grad():
        alone = pruned(x)
    assert len(alone) == depth
    for a, b in zip(alone, forward[depth]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # in practice bit-identical
    # and the pruned network reproduces the golden heads
    torch.testing.assert_close(
        torch.tensor([alone[-1][i].item() for i in INDICES], dtype=torch.float64),
        torch.tensor(GOLDEN[depth].values, dtype=torch.float64),
        rtol=RTOL,
        atol=ATOL,
    )
