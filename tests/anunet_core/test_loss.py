"""Tests for anunet_core.loss.HybridLoss (the Eq. 8 hybrid Dice + focal loss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from anunet_core.loss import HybridLoss

LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------
# float64 NumPy reference, written from the docstring formula with the naive expressions
# (log(sigmoid), |p - 0.5|): a different code path from the module's softplus / tanh.
# ---------------------------------------------------------------------------------------------


def ref_terms(z, y, alpha, gamma, smooth, focal_floor, batch_dice):
    """(dice_loss, focal, dloss/dz) for one output; the gradient is derived by hand with the
    hardness weight held constant (it is detached in the module)."""
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    p = 1.0 / (1.0 + np.exp(-z))
    bce = -(alpha * y * np.log(p) + (1.0 - alpha) * (1.0 - y) * np.log(1.0 - p))
    h = np.maximum(2.0 * np.abs(p - 0.5), 2.0 * focal_floor) ** (-gamma)
    focal = np.mean(h * bce)
    # d(-log p)/dz = -(1 - p), d(-log(1 - p))/dz = p
    grad = h * (-alpha * y * (1.0 - p) + (1.0 - alpha) * (1.0 - y) * p) / z.size
    groups = [slice(None)] if batch_dice else [slice(b, b + 1) for b in range(z.shape[0])]
    dices = []
    for g in groups:
        pg, yg = p[g], y[g]
        num = 2.0 * np.sum(pg * yg) + smooth
        den = np.sum(pg**2) + np.sum(yg**2) + smooth
        dices.append(num / den)
        # d(1 - num/den)/dp = -(2 y den - num 2 p) / den^2, times dp/dz = p (1 - p), / #groups
        grad[g] += -(2.0 * yg * den - 2.0 * num * pg) / den**2 * pg * (1.0 - pg) / len(groups)
    return 1.0 - np.mean(dices), focal, grad


def ref_loss(zs, y, alpha, gamma, smooth, weights, focal_floor, batch_dice):
    """(loss, [dloss/dz_i]) of the weighted sum over outputs."""
    weights = [1.0] * len(zs) if weights is None else list(weights)[: len(zs)]
    loss, grads = 0.0, []
    for z, w in zip(zs, weights):
        dice_loss, focal, grad = ref_terms(z, y, alpha, gamma, smooth, focal_floor, batch_dice)
        loss += w * (dice_loss + focal)
        grads.append(w * grad)
    return loss, grads


def random_case(seed, n_outputs, shape=(3, 1, 5, 6)):
    rng = np.random.default_rng(seed)
    zs = [rng.normal(0.0, 3.0, shape) for _ in range(n_outputs)]
    y = (rng.random(shape) < 0.3).astype(np.float64)
    y[0] = 0.0  # an organ-free slice, as in real batches
    return zs, y


OUTPUTS = [(1, None), (1, (0.5, 1.0, 1.0, 1.0)), (4, (0.1, 0.2, 0.3, 1.0)), (3, (0.25, 0.5, 0.75, 1.0))]


@pytest.mark.parametrize("n_outputs,weights", OUTPUTS)
@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.9])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_matches_reference(seed, gamma, alpha, batch_dice, n_outputs, weights):
    zs, y = random_case(seed, n_outputs)
    kw = dict(alpha=alpha, gamma=gamma, smooth=1.0, weights=weights, focal_floor=0.05, batch_dice=batch_dice)
    zs32 = [torch.tensor(z, dtype=torch.float32) for z in zs]
    # the reference sees exactly the float32 values the module sees
    expected, _ = ref_loss([z.numpy().astype(np.float64) for z in zs32], y, **kw)
    loss = HybridLoss(**kw)(zs32, torch.tensor(y, dtype=torch.float32))
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.9])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("seed", [2, 3])
def test_gradients_match_reference(seed, gamma, alpha, batch_dice):
    # float64 inputs keep float64 in the module, so the analytic gradients agree to ~1e-15;
    # float32 inputs agree to float32 rounding (checked with a looser tolerance).
    zs, y = random_case(seed, 4)
    weights = (0.1, 0.2, 0.3, 1.0)
    _, expected = ref_loss(zs, y, alpha, gamma, 1.0, weights, 0.05, batch_dice)
    loss_fn = HybridLoss(alpha=alpha, gamma=gamma, weights=weights, batch_dice=batch_dice)
    for dtype, rtol in [(torch.float64, 1e-5), (torch.float32, 1e-3)]:
        zt = [torch.tensor(z, dtype=dtype, requires_grad=True) for z in zs]
        loss_fn(zt, torch.tensor(y, dtype=dtype)).backward()
        for z, g in zip(zt, expected):
            scale = np.abs(g).max()
            np.testing.assert_allclose(z.grad.double().numpy(), g, rtol=rtol, atol=rtol * 1e-2 * scale)


@pytest.mark.parametrize("kw", [dict(gamma=0.0), dict(gamma=2.0, focal_floor=0.5), dict(gamma=0.0, batch_dice=False)])
def test_gradcheck_when_weight_is_constant(kw):
    # With gamma=0 (or focal_floor=0.5) the hardness weight is identically 1, so the detached
    # gradient is the true gradient and finite differences must agree.
    zs, y = random_case(4, 2, shape=(2, 1, 3, 3))
    zt = tuple(torch.tensor(z, dtype=torch.float64, requires_grad=True) for z in zs)
    yt = torch.tensor(y)
    loss_fn = HybridLoss(alpha=0.3, weights=(0.4, 1.0), **kw)
    assert torch.autograd.gradcheck(lambda a, b: loss_fn([a, b], yt), zt)


# ---------------------------------------------------------------------------------------------
# Hand-computed values
# ---------------------------------------------------------------------------------------------


def test_hand_computed_focal_dominated():
    # One 1x2 image, target [1, 1], logits [0, 100]; alpha=0.5, gamma=2, s=1, floor=0.05.
    # pixel 1: p=0.5, bce = 0.5*ln2, w = (2*0.05)^-2 = 100 -> 50*ln2
    # pixel 2: p=1,   bce = 0.5*softplus(-100) ~ 0, w = 1
    # focal = mean = 25*ln2
    # Dice: sum(p*y)=1.5, sum(p^2)=1.25, sum(y^2)=2 -> (3+1)/(1.25+2+1) = 16/17 -> 1 - dice = 1/17
    z = torch.tensor([[[[0.0, 100.0]]]])
    y = torch.ones(1, 1, 1, 2)
    loss = HybridLoss()(z, y)
    assert loss.item() == pytest.approx(1 / 17 + 25 * LN2, rel=1e-6)


def test_hand_computed_balanced_bce():
    # One 1x2 image, target [1, 0], logits [0, 0]; alpha=0.25, gamma=0 (w = 1), s=1.
    # bce: 0.25*ln2 (positive) and 0.75*ln2 (negative) -> focal = mean = 0.5*ln2
    # Dice: sum(p*y)=0.5, sum(p^2)=0.5, sum(y^2)=1 -> (1+1)/(0.5+1+1) = 0.8 -> 0.2
    z = torch.zeros(1, 1, 1, 2)
    y = torch.tensor([[[[1.0, 0.0]]]])
    loss_fn = HybridLoss(alpha=0.25, gamma=0.0)
    assert loss_fn(z, y).item() == pytest.approx(0.2 + 0.5 * LN2, rel=1e-6)
    parts = loss_fn.components(z, y)
    assert parts["dice_loss"] == [pytest.approx(0.2)] and parts["focal"] == [pytest.approx(0.5 * LN2)]


@pytest.mark.parametrize("batch_dice,dice_loss", [(True, 1 / 9), (False, 1 / 18)])
def test_hand_computed_batch_vs_per_image_dice(batch_dice, dice_loss):
    # Two 1x1 images: (z=0, y=1) and (z=-100, y=0); alpha=0.5, gamma=0, s=1.
    # focal = mean(0.5*ln2, ~0) = 0.25*ln2
    # batch Dice: (2*0.5+1)/(0.25+1+1) = 8/9 -> 1/9
    # per image: 8/9 and (0+1)/(0+0+1) = 1 -> mean 17/18 -> 1/18
    z = torch.tensor([0.0, -100.0]).view(2, 1, 1, 1)
    y = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    loss = HybridLoss(gamma=0.0, batch_dice=batch_dice)(z, y)
    assert loss.item() == pytest.approx(dice_loss + 0.25 * LN2, rel=1e-6)


def test_weights_and_truncation():
    # 2 outputs with weights (1, 2, 3, 4) use (1, 2); equal outputs then give 3x one output.
    zs, y = random_case(5, 1)
    z, yt = torch.tensor(zs[0], dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    single = HybridLoss()(z, yt)
    assert HybridLoss(weights=(1, 2, 3, 4))([z, z], yt).item() == pytest.approx(3 * single.item(), rel=1e-6)
    assert HybridLoss()([z, z, z, z], yt).item() == pytest.approx(4 * single.item(), rel=1e-6)
    assert HybridLoss()((z,), yt).item() == single.item()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.float64])
def test_target_dtypes(dtype):
    zs, y = random_case(6, 2)
    zt = [torch.tensor(z, dtype=torch.float32) for z in zs]
    expected = HybridLoss()(zt, torch.tensor(y, dtype=torch.float32))
    assert HybridLoss()(zt, torch.tensor(y).to(dtype)).item() == pytest.approx(expected.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Edge cases: finite everywhere
# ---------------------------------------------------------------------------------------------


def make_logits(kind, shape, gen):
    if kind == "mixed":  # +-1e4 and exact zeros side by side
        return torch.tensor([-1e4, 0.0, 1e4])[torch.randint(0, 3, shape, generator=gen)]
    return torch.full(shape, float(kind))


def make_target(kind, shape, gen):
    if kind == "random":
        return (torch.rand(shape, generator=gen) < 0.5).float()
    return torch.full(shape, 1.0 if kind == "full" else 0.0)


@pytest.mark.parametrize("mode", ["fp32", "fp16", "bf16-autocast"])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("target_kind", ["empty", "full", "random"])
@pytest.mark.parametrize("logit_kind", [0.0, 100.0, -100.0, 1e4, -1e4, "mixed"])
def test_finite_loss_and_gradients(logit_kind, target_kind, batch_dice, gamma, mode):
    gen = torch.Generator().manual_seed(0)
    shape = (2, 1, 4, 4)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16-autocast": torch.bfloat16}[mode]
    zs = [make_logits(logit_kind, shape, gen).to(dtype).requires_grad_() for _ in range(2)]
    y = make_target(target_kind, shape, gen)
    loss_fn = HybridLoss(gamma=gamma, batch_dice=batch_dice)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16-autocast"):
        loss = loss_fn(zs, y)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    for z in zs:
        assert z.grad.dtype == dtype and torch.isfinite(z.grad).all()


@pytest.mark.parametrize(
    "gamma,floor,weight", [(2.0, 0.05, 100.0), (1.0, 0.05, 10.0), (2.0, 0.25, 4.0), (2.0, 0.5, 1.0), (0.0, 0.05, 1.0)]
)
def test_weight_at_p_half_is_floor(gamma, floor, weight):
    # z = 0 everywhere, y = 1: bce = alpha*ln2 per pixel, so focal = (2*floor)^-gamma * alpha*ln2
    z, y = torch.zeros(2, 1, 3, 3), torch.ones(2, 1, 3, 3)
    focal = HybridLoss(alpha=0.4, gamma=gamma, focal_floor=floor).components(z, y)["focal"][0]
    assert focal == pytest.approx(weight * 0.4 * LN2, rel=1e-6)


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("big", [100.0, 1e4])
def test_perfect_and_wrong_saturated_predictions(batch_dice, big):
    gen = torch.Generator().manual_seed(1)
    y = make_target("random", (2, 1, 8, 8), gen)
    loss_fn = HybridLoss(batch_dice=batch_dice)
    perfect = loss_fn([big * (2 * y - 1)] * 4, y)
    assert 0.0 <= perfect.item() < 1e-6
    parts = loss_fn.components(-big * (2 * y - 1), y)
    # every pixel is maximally wrong: bce = 0.5*big, w = 1, Dice ~ s / (sum(y^2) + s)
    assert parts["focal"][0] == pytest.approx(0.5 * big, rel=1e-6)
    assert parts["dice_loss"][0] > 0.9
    assert loss_fn(-big * (2 * y - 1), y).item() > 0.5 * big


@pytest.mark.parametrize("batch_dice", [True, False])
def test_empty_target_background_prediction_is_zero(batch_dice):
    y = torch.zeros(3, 1, 8, 8)
    assert HybridLoss(batch_dice=batch_dice)([torch.full_like(y, -100.0)] * 4, y).item() < 1e-6


def test_bf16_autocast_close_to_fp32():
    gen = torch.Generator().manual_seed(2)
    z32 = [3 * torch.randn(2, 1, 16, 16, generator=gen) for _ in range(4)]
    y = make_target("random", (2, 1, 16, 16), gen)
    loss_fn = HybridLoss()
    ref = loss_fn(z32, y)
    zbf = [z.bfloat16() for z in z32]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(zbf, y)
    assert loss.dtype == torch.float32
    # computed in float32 from the bf16 values: identical to the float32 loss of the rounded logits
    assert loss.item() == loss_fn([z.float() for z in zbf], y).item()
    assert loss.item() == pytest.approx(ref.item(), rel=2e-2)


# ---------------------------------------------------------------------------------------------
# Gradient direction: why the hardness weight is detached
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("alpha,gamma", [(0.5, 2.0), (0.25, 2.0), (0.9, 1.0), (0.5, 0.0)])
@pytest.mark.parametrize("label,p,sign", [(1.0, 0.3, -1.0), (0.0, 0.7, 1.0)])
def test_gradient_pushes_towards_label(label, p, sign, alpha, gamma, batch_dice):
    # A positive pixel at p = 0.3 must get dL/dz < 0 (p goes up), a negative one at p = 0.7
    # dL/dz > 0, whatever the other pixels are.
    gen = torch.Generator().manual_seed(3)
    z = 2 * torch.randn(2, 1, 4, 4, generator=gen)
    y = make_target("random", (2, 1, 4, 4), gen)
    z[1, 0, 2, 2], y[1, 0, 2, 2] = math.log(p / (1 - p)), label
    z.requires_grad_()
    HybridLoss(alpha=alpha, gamma=gamma, batch_dice=batch_dice)([z, z * 1.0], y).backward()
    assert sign * z.grad[1, 0, 2, 2].item() > 0


def test_undetached_weight_would_push_positives_down():
    # The literal paper term for a positive pixel, f(p) = -log(p) / (0.5 - p)^2, has a local
    # minimum near p = 0.084 (where 2 p (-ln p) = 0.5 - p): differentiating through the weight
    # at p = 0.3 gives df/dz > 0, i.e. it lowers p. The detached weight gives dL/dz < 0.
    def f(p):
        return -math.log(p) / (0.5 - p) ** 2

    assert f(0.084) < f(0.05) and f(0.084) < f(0.15)
    z = torch.tensor(math.log(0.3 / 0.7), requires_grad=True)
    (-torch.nn.functional.logsigmoid(z) / (torch.sigmoid(z) - 0.5) ** 2).backward()
    assert z.grad.item() > 0
    z2 = torch.full((1, 1, 1, 1), math.log(0.3 / 0.7), requires_grad=True)
    HybridLoss(gamma=2.0).terms(z2, torch.ones(1, 1, 1, 1))[0][1].backward()  # focal term only
    assert z2.grad.item() < 0


# ---------------------------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(alpha=-0.1), "alpha"),
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(gamma=-1.0), "gamma"),
        (dict(gamma=float("inf")), "gamma"),
        (dict(smooth=0.0), "smooth"),
        (dict(smooth=-1.0), "smooth"),
        (dict(focal_floor=0.0), "focal_floor"),
        (dict(focal_floor=0.6), "focal_floor"),
        (dict(weights=()), "weights"),
        (dict(weights=(1.0, -0.5)), "weights"),
        (dict(weights=(0.0, 0.0)), "weights"),
        (dict(weights=(1.0, float("nan"))), "weights"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        HybridLoss(**kw)


Z = torch.zeros(2, 1, 4, 4)


@pytest.mark.parametrize(
    "loss_fn,logits,target,match",
    [
        (HybridLoss(), [], Z, "empty"),
        (HybridLoss(), [Z, torch.zeros(2, 1, 4, 5)], Z, r"\(2, 1, 4, 5\).*\(2, 1, 4, 4\)"),
        (HybridLoss(), [Z], torch.zeros(2, 4, 4), r"\(2, 4, 4\)"),
        (HybridLoss(), [torch.zeros(2, 2, 4, 4)], torch.zeros(2, 2, 4, 4), r"\(B, 1, H, W\)"),
        (HybridLoss(weights=(1.0, 1.0)), [Z, Z, Z], Z, "3 outputs"),
        (HybridLoss(weights=(0.0, 1.0)), [Z], Z, "all 0"),
    ],
)
def test_bad_inputs(loss_fn, logits, target, match):
    with pytest.raises(ValueError, match=match):
        loss_fn(logits, target)


# ---------------------------------------------------------------------------------------------
# A useful objective
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    # intra-op threads only add overhead on 16x16 convs (and can take seconds on a busy host)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_loss_decreases_when_training_a_tiny_conv(one_thread):
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    mask = (((yy - 7.5) ** 2 + (xx - 6.0) ** 2) < 20.0).float().view(1, 1, 16, 16).repeat(2, 1, 1, 1)
    image = mask + 0.3 * torch.randn(mask.shape)
    trunk = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    heads = nn.ModuleList([nn.Conv2d(8, 1, 1), nn.Conv2d(8, 1, 1)])
    params = [*trunk.parameters(), *heads.parameters()]
    opt = torch.optim.Adam(params, lr=0.05)
    loss_fn = HybridLoss()
    losses = []
    for _ in range(30):
        features = trunk(image)
        loss = loss_fn([head(features) for head in heads], mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        pred = torch.sigmoid(heads[1](trunk(image))) > 0.5
    dice = 2 * (pred * mask).sum() / (pred.sum() + mask.sum())
    assert dice > 0.8
