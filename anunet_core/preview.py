"""Preview images for quick human review: a few axial slices with the mask's outline.

Pure NumPy + Pillow. Works on the model's view of a scan (the preprocessed slices of
:func:`anunet_core.preprocessing.preprocess_volume`, intensities in ``[0, 1]``, radiological
view), so a preview needs neither the source volume nor a second resampling.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from anunet_core.io.atomic import write_atomic

OUTLINE_RGB = (255, 40, 40)
DEFAULT_PANELS = 3


def pick_slices(mask_slices: np.ndarray, panels: int = DEFAULT_PANELS) -> list[int]:
    """Indices of ``panels`` axial slices to show, ascending: evenly spaced through the slices
    holding the organ (its extent along the slice axis), or through the whole scan when the
    mask is empty. ``mask_slices`` is ``(K, H, W)``; fewer indices when ``K < panels``."""
    mask_slices = np.asarray(mask_slices)
    if mask_slices.ndim != 3:
        raise ValueError(f"mask slices must be (K, H, W), got shape {mask_slices.shape}")
    k = mask_slices.shape[0]
    if k == 0 or panels < 1:
        return []
    present = np.flatnonzero(mask_slices.reshape(k, -1).any(axis=1))
    lo, hi = (int(present[0]), int(present[-1])) if present.size else (0, k - 1)
    # interior points of the extent: never the first or last organ slice (tiny caps)
    positions = np.linspace(lo, hi, panels + 2)[1:-1] if hi > lo else np.full(panels, lo)
    return sorted({int(round(p)) for p in positions})


def outline(mask: np.ndarray) -> np.ndarray:
    """bool ``(H, W)``: the mask's pixels that touch a background pixel (4-neighbourhood);
    the image border counts as background."""
    inside = np.asarray(mask).astype(bool)
    padded = np.pad(inside, 1, constant_values=False)
    interior = (
        padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )
    return inside & ~interior


def render_preview(image_slices: np.ndarray, mask_slices: np.ndarray, panels: int = DEFAULT_PANELS) -> np.ndarray:
    """RGB uint8 ``(H, panels * W, 3)``: :func:`pick_slices` side by side, the scan in grey
    (``[0, 1]`` -> 0..255) with the mask outline in red.

    Args:
        image_slices: ``(K, H, W)`` preprocessed intensities in ``[0, 1]``.
        mask_slices: ``(K, H, W)`` 0/1 mask on the same slices.
    """
    images, masks = np.asarray(image_slices), np.asarray(mask_slices)
    if images.ndim != 3 or images.shape != masks.shape:
        raise ValueError(f"image slices {images.shape} and mask slices {masks.shape} must both be (K, H, W)")
    chosen = pick_slices(masks, panels)
    if not chosen:
        raise ValueError("a preview needs at least one slice")
    tiles = []
    for k in chosen:
        grey = np.clip(np.nan_to_num(images[k].astype(np.float32)), 0.0, 1.0)
        grey = np.rint(grey * 255.0).astype(np.uint8)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        rgb[outline(masks[k])] = OUTLINE_RGB
        tiles.append(rgb)
    return np.concatenate(tiles, axis=1)


def write_preview(path: str | os.PathLike, image_slices: np.ndarray, mask_slices: np.ndarray,
                  panels: int = DEFAULT_PANELS) -> Path:
    """:func:`render_preview` written atomically as a PNG at ``path``; returns the path."""
    picture = Image.fromarray(render_preview(image_slices, mask_slices, panels))
    return write_atomic(path, lambda tmp: picture.save(tmp, format="PNG"))
