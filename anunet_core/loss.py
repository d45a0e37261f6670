"""The hybrid Dice + focal loss of ANU-Net, summed over the deep-supervision outputs.

Based on: Li C, Tan Y, Chen W, et al. "ANU-Net: Attention-based nested U-Net to exploit full
resolution features for medical image segmentation." Computers & Graphics 90 (2020) 11-20
(section 3.4, Eq. 5-8), and, for the focal idea, Lin T-Y, Goyal P, Girshick R, He K, Dollar P.
"Focal loss for dense object detection." ICCV 2017 (RetinaNet).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class HybridLoss(nn.Module):
    """Eq. 8 of the paper, made well defined: ``sum_i weights[i] * (dice_loss_i + focal_i)``.

    For output ``i`` with logits ``z``, ``p = sigmoid(z)`` and target ``y`` (all ``(B, 1, H, W)``)::

        bce     = -( alpha * y * log(p) + (1 - alpha) * (1 - y) * log(1 - p) )      per pixel
        w       = max(2 * |p - 0.5|, 2 * focal_floor) ** (-gamma)                  per pixel, detached
        focal_i = mean over (B, 1, H, W) of w * bce
        dice_i  = (2 * sum(p * y) + smooth) / (sum(p ** 2) + sum(y ** 2) + smooth)  (Eq. 5 with squares)
        L_i     = (1 - dice_i) + focal_i
        Loss    = sum_i weights[i] * L_i

    With ``batch_dice=True`` the Dice sums run over the whole batch (nnU-Net's batch Dice, stable
    on organ-free slices); with ``False`` they run over each image's ``(1, H, W)`` and ``dice_i`` is
    the mean over the batch. Where Eq. 8 is ambiguous we chose:

    - ``alpha`` weights positives and ``1 - alpha`` negatives (RetinaNet convention). Eq. 8 has
      only the positive term; we add the negative one so that background errors are penalised.
    - The paper's hardness factor ``1 / |p - 0.5| ** gamma`` is rescaled by ``2 ** -gamma`` (so an
      easy, saturated pixel has weight 1), floored (at most ``(2 * focal_floor) ** -gamma``,
      100 for the defaults, at ``p = 0.5``; finite everywhere), and detached: it says how much a
      pixel counts and is not itself optimised. Differentiating through it creates a spurious
      minimum: for a positive pixel ``-log(p) / (0.5 - p) ** 2`` has a local minimum near
      ``p = 0.08``, so uncertain positives would be pushed towards 0. ``gamma=0`` (or
      ``focal_floor=0.5``) gives plain class-balanced BCE.
    - ``smooth`` must be > 0: the Dice of an empty mask and an empty prediction is then 1, not 0/0.

    Numerics: the loss is computed from the logits in float32 (float64 inputs stay float64), also
    under bf16/fp16 autocast; ``log p = -softplus(-z)``, ``log(1 - p) = -softplus(z)`` and
    ``2 * |p - 0.5| = |tanh(z / 2)|``, so loss and gradients are finite for any finite logits.

    Args:
        alpha: weight of positive pixels in the BCE, in [0, 1]. Defaults to 0.5.
        gamma: focusing exponent, >= 0. Defaults to 2.0.
        smooth: Dice smoothing ``s``, > 0. Defaults to 1.0.
        weights: non-negative weight per deep-supervision output, at least one > 0; with fewer
            outputs than weights (a model run at depth ``d < 4``) ``weights[:d]`` is used. ``None``
            weighs every output 1 (Eq. 8's plain sum). Defaults to None.
        focal_floor: floor on ``|p - 0.5|`` in the hardness weight, in (0, 0.5]. Defaults to 0.05.
        batch_dice: Dice over the whole batch (True) or per image, then averaged. Defaults to True.

    ``forward(logits, target)``: ``logits`` is a list of ``(B, 1, H, W)`` tensors (one per
    output; a single tensor counts as a list of one) and ``target`` a ``(B, 1, H, W)`` mask with
    values in {0, 1} (float, uint8 or bool). Returns a scalar tensor.

    Example::

        >>> loss_fn = HybridLoss()
        >>> logits = [torch.zeros(2, 1, 8, 8, requires_grad=True) for _ in range(4)]
        >>> loss = loss_fn(logits, torch.ones(2, 1, 8, 8))
        >>> loss.backward()
    """

    def __init__(
        self,
        alpha: float = 0.5,
        gamma: float = 2.0,
        smooth: float = 1.0,
        weights: Sequence[float] | None = None,
        focal_floor: float = 0.05,
        batch_dice: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        if not (math.isfinite(gamma) and gamma >= 0.0):
            raise ValueError(f"gamma must be finite and >= 0, got {gamma!r}")
        if not (math.isfinite(smooth) and smooth > 0.0):
            raise ValueError(f"smooth must be finite and > 0, got {smooth!r}")
        if not 0.0 < focal_floor <= 0.5:
            raise ValueError(f"focal_floor must be in (0, 0.5], got {focal_floor!r}")
        if weights is not None:
            weights = tuple(float(w) for w in weights)
            if not weights or not all(math.isfinite(w) and w >= 0.0 for w in weights) or max(weights) <= 0.0:
                raise ValueError(f"weights must be finite, non-negative and at least one > 0, got {weights!r}")
        self.alpha, self.gamma, self.smooth = float(alpha), float(gamma), float(smooth)
        self.focal_floor, self.batch_dice = float(focal_floor), bool(batch_dice)
        self.weights = weights

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, gamma={self.gamma}, smooth={self.smooth}, weights={self.weights}, "
            f"focal_floor={self.focal_floor}, batch_dice={self.batch_dice}"
        )

    def terms(
        self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(dice_loss_i, focal_i), ...]``: unweighted scalar tensors, one pair per output."""
        if isinstance(logits, torch.Tensor):
            logits = [logits]
        if len(logits) == 0:
            raise ValueError("logits must hold at least one (B, 1, H, W) tensor, got an empty sequence")
        if target.ndim != 4 or target.shape[1] != 1:
            raise ValueError(f"target must be (B, 1, H, W), got shape {tuple(target.shape)}")
        out = []
        for z in logits:
            if z.shape != target.shape:
                raise ValueError(f"logits shape {tuple(z.shape)} does not match target shape {tuple(target.shape)}")
            z = z.to(torch.promote_types(z.dtype, torch.float32))  # float32 even from bf16 / fp16
            y = target.to(z.dtype)
            p = torch.sigmoid(z)
            # log p = -softplus(-z), log(1 - p) = -softplus(z): finite for any finite z
            bce = self.alpha * y * F.softplus(-z) + (1.0 - self.alpha) * (1.0 - y) * F.softplus(z)
            w = z.detach().mul(0.5).tanh().abs().clamp_min(2.0 * self.focal_floor).pow(-self.gamma)
            focal = (w * bce).mean()
            dims = (0, 1, 2, 3) if self.batch_dice else (1, 2, 3)
            num = 2.0 * (p * y).sum(dims) + self.smooth
            den = (p * p).sum(dims) + (y * y).sum(dims) + self.smooth
            out.append((1.0 - (num / den).mean(), focal))
        return out

    def output_weights(self, n: int) -> tuple[float, ...]:
        """The weights of ``n`` outputs: ``weights[:n]`` (all 1 when ``weights`` is None)."""
        if self.weights is None:
            return (1.0,) * n
        if n > len(self.weights):
            raise ValueError(f"got {n} outputs but only {len(self.weights)} weights {self.weights}")
        used = self.weights[:n]
        if max(used) <= 0.0:
            raise ValueError(f"the weights of the {n} outputs given, {used}, are all 0: the loss would be 0")
        return used

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        terms = self.terms(logits, target)
        weights = self.output_weights(len(terms))
        return sum(w * (dice + focal) for w, (dice, focal) in zip(weights, terms))

    @torch.no_grad()
    def components(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> dict[str, list[float]]:
        """Unweighted per-output terms for logging: ``{"dice_loss": [...], "focal": [...]}``."""
        terms = self.terms(logits, target)
        self.output_weights(len(terms))
        return {"dice_loss": [float(d) for d, _ in terms], "focal": [float(f) for _, f in terms]}
