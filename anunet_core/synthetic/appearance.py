"""Appearance: a tissue-class map -> a CT (HU) or MR image, with texture, blur, noise and bias.

CT ``image`` is in Hounsfield units (air -1000, clipped at -1024 .. 3071); MR ``image`` is in
arbitrary units (0 .. 4095) with a smooth multiplicative bias field. Every value is a whole
number (stored in float32), so it survives DICOM's integer pixels exactly.

Why intensity alone does not tell the organs apart: contrast-enhanced liver (100-140 HU) and
spleen (110-150 HU) are drawn independently per case, so their intensities overlap and swap;
enhancing bowel wall (70-140 HU), the pancreas, the IVC and mesenteric veins, the heart and
the renal medulla share the liver's intensity window; lesions and vessels make the liver
heterogeneous, and the noise (10-20 HU sd) blurs the rest. MR adds a per-case gain, +-15 %
per-tissue jitter, a bias field (x0.7 .. x1.4 across the body) and Rician noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from anunet_core.synthetic.shapes import Grid, smooth_noise
from anunet_core.synthetic.tissues import (
    T_CORTEX,
    T_LESION,
    T_LIVER,
    T_LIVER_VESSEL,
    T_MEDULLA,
    T_SPLEEN,
    TEXTURE_MR,
    TISSUE_TABLE,
)

__all__ = ["render"]

_Intensities = tuple[np.ndarray, np.ndarray, np.ndarray, float]
"""Per tissue class: mean, fine texture sd, coarse texture sd (float32 arrays); noise sd."""


def render(
    rng: np.random.Generator, tissue: np.ndarray, grid: Grid, modality: str, sequence: str | None
) -> np.ndarray:
    """The image of the tissue map ``tissue`` (uint8 ``(I, J, K)``): float32 ``(I, J, K)``,
    whole numbers; CT in HU, MR (``sequence`` ``"T1"`` or ``"T2SPIR"``) in arbitrary units."""
    if modality == "CT":
        values, fine, coarse, noise_sd = _ct_intensities(rng)
    else:
        values, fine, coarse, noise_sd = _mr_intensities(rng, sequence)
    shape, spacing = tissue.shape, grid.spacing
    img = values[tissue]
    img += fine[tissue] * smooth_noise(rng, shape, spacing, 8.0)
    img += coarse[tissue] * smooth_noise(rng, shape, spacing, 20.0)
    # partial volume: each voxel averages over its own extent (a box, sd 0.29 voxel) seen
    # through a point spread function of about 1 mm
    sigma = [float(np.hypot(0.29, 1.0 / s)) for s in spacing]
    img = ndimage.gaussian_filter(img, sigma, mode="nearest")
    if modality == "MR":
        img = _mr_bias_and_noise(rng, img, grid, noise_sd)
    else:
        img = _ct_noise(rng, img, noise_sd)
    return img.astype(np.float32)


def _ct_intensities(rng: np.random.Generator) -> _Intensities:
    """Per-case CT means (HU) from :data:`TISSUE_TABLE`, some tied to others (vessels and
    lesions to the liver, medulla to the cortex); texture sd (HU); noise sd 10-20 HU."""
    u = rng.uniform
    n = len(TISSUE_TABLE)
    values, fine, coarse = (np.zeros(n, dtype=np.float32) for _ in range(3))
    for t, row in enumerate(TISSUE_TABLE):
        lo, hi = row.ct_hu
        values[t] = u(lo, hi)
        fine[t], coarse[t] = row.ct_texture
    values[T_LIVER_VESSEL] = values[T_LIVER] + u(25, 50)
    values[T_LESION] = values[T_LIVER] - u(35, 70)
    values[T_MEDULLA] = values[T_CORTEX] - u(0, 30)
    noise_sd = u(10, 20)
    return values, fine, coarse, noise_sd


def _mr_intensities(rng: np.random.Generator, sequence: str | None) -> _Intensities:
    """Per-case MR signal: nominal ``sequence`` signal x a per-case gain x a per-tissue jitter;
    the liver-spleen contrast that tells the sequences apart stays within its usual range."""
    u = rng.uniform
    values = np.zeros(len(TISSUE_TABLE), dtype=np.float32)
    gain = u(0.6, 1.6)
    for t, row in enumerate(TISSUE_TABLE):
        values[t] = (row.t1 if sequence == "T1" else row.t2spir) * gain * u(0.8, 1.2)
    if sequence == "T1":
        values[T_SPLEEN] = values[T_LIVER] / u(1.2, 1.45)
    else:
        values[T_SPLEEN] = values[T_LIVER] * u(1.6, 2.1)
    fine, coarse = 0.04 * values, 0.02 * values
    for t, (f_fine, f_coarse) in TEXTURE_MR.items():
        fine[t], coarse[t] = f_fine * values[t], f_coarse * values[t]
    noise_sd = u(0.03, 0.06) * 300 * gain
    return values, fine, coarse, noise_sd


def _mr_bias_and_noise(
    rng: np.random.Generator, img: np.ndarray, grid: Grid, noise_sd: float
) -> np.ndarray:
    """A smooth multiplicative bias field (coil sensitivity, x0.70 .. x1.42), then magnitude
    (Rician) noise ``|signal + n1 + i n2|``, rounded and clipped to 0 .. 4095."""
    xn = (grid.X / max(abs(grid.X).max(), 1.0)).astype(np.float32)
    yn = (grid.Y / max(abs(grid.Y).max(), 1.0)).astype(np.float32)
    zn = (grid.Z / max(abs(grid.Z).max(), 1.0)).astype(np.float32)
    c = rng.normal(0.0, 1.0, size=6) * np.array([0.08, 0.15, 0.08, 0.08, 0.12, 0.06])
    log_bias = c[0] * xn + c[1] * yn + c[2] * zn + c[3] * xn * yn + c[4] * yn * yn \
        + c[5] * xn * xn
    img *= np.exp(np.clip(log_bias, -0.35, 0.35)).astype(np.float32)
    shape: Sequence[int] = img.shape
    n1 = rng.standard_normal(shape, dtype=np.float32) * np.float32(noise_sd)
    n2 = rng.standard_normal(shape, dtype=np.float32) * np.float32(noise_sd)
    img = np.sqrt((img + n1) ** 2 + n2**2)
    return np.clip(np.rint(img), 0, 4095)


def _ct_noise(rng: np.random.Generator, img: np.ndarray, noise_sd: float) -> np.ndarray:
    """Noise of sd ``noise_sd`` HU, correlated in-plane (reconstruction kernel), rounded and
    clipped to -1024 .. 3071 HU."""
    n = ndimage.gaussian_filter(rng.standard_normal(img.shape, dtype=np.float32), (0.6, 0.6, 0))
    n *= np.float32(noise_sd / max(float(n.std()), 1e-6))
    return np.clip(np.rint(img + n), -1024, 3071)
