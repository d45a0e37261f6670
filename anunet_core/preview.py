"""Preview images for quick human review: a few axial slices with each organ's outline.

Pure NumPy + Pillow. Works on the model's view of a scan (the preprocessed slices of
:func:`anunet_core.preprocessing.preprocess_volume`, intensities in ``[0, 1]``, radiological
view) and a label map on the same slices (organ values, e.g. from
:func:`anunet_core.preprocessing.label_slices`), so a preview needs neither the source volume
nor a second resampling.

Layout, top to bottom: a caption strip (each panel's slice index), the panels side by side
(:func:`pick_slices`, ``PANEL_GAP_PX`` apart), a legend strip (a swatch of each organ's
colour and its name). A panel smaller than ``min_panel_px`` is upscaled by an integer factor:
the scan bilinearly, the label map by nearest neighbour, and the outlines are drawn on the
upscaled label map so they stay thin (1 px at the model's size, 2 px when upscaled). Each
organ has one fixed colour (:data:`ORGAN_RGB`, the Okabe-Ito palette, told apart by
colour-blind viewers): a solid outline over a light fill (``FILL_ALPHA``).
"""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from anunet_core.io.atomic import write_atomic
from anunet_core.vocabulary import validate_organ

__all__ = [
    "CAPTION_PX",
    "DEFAULT_PANELS",
    "FILL_ALPHA",
    "LEGEND_LINE_PX",
    "MIN_PANEL_PX",
    "ORGAN_RGB",
    "PANEL_GAP_PX",
    "SWATCH_PX",
    "outline",
    "pick_slices",
    "render_preview",
    "write_preview",
]

_RGB = tuple[int, int, int]

ORGAN_RGB: Mapping[str, _RGB] = MappingProxyType(
    {
        "liver": (213, 94, 0),  # Okabe-Ito vermillion (red-brown)
        "spleen": (86, 180, 233),  # sky blue
        "kidney": (240, 228, 66),  # yellow
    }
)
"""Each organ's colour in previews (outline, fill and legend swatch)."""

DEFAULT_PANELS = 3
MIN_PANEL_PX = 256
FILL_ALPHA = 0.25  # weight of the organ's colour inside it (the scan keeps 0.75)
CAPTION_PX = 20  # height of the caption strip above the panels
PANEL_GAP_PX = 4  # background columns between two panels
LEGEND_LINE_PX = 24  # height of one line of the legend strip below the panels
SWATCH_PX = 14  # side of a legend swatch
FONT_PX = 14
BACKGROUND_RGB = (0, 0, 0)
TEXT_RGB = (255, 255, 255)
_MARGIN_PX = 6  # left margin of captions and legend lines
_ITEM_GAP_PX = 18  # between two legend items
_SWATCH_GAP_PX = 6  # between a swatch and its organ's name

_Colours = Mapping[int, tuple[str, _RGB]]  # label value -> (organ name, colour)


def pick_slices(label_slices: np.ndarray, panels: int = DEFAULT_PANELS) -> list[int]:
    """Indices of ``panels`` axial slices to show, ascending: evenly spaced through the slices
    holding any organ (the organs' joint extent along the slice axis), or through the whole
    scan when the label map is empty. ``label_slices`` is ``(K, H, W)`` (organ values or a 0/1
    mask); fewer indices when ``K < panels``."""
    label_slices = np.asarray(label_slices)
    if label_slices.ndim != 3:
        raise ValueError(f"label slices must be (K, H, W), got shape {label_slices.shape}")
    k = label_slices.shape[0]
    if k == 0 or panels < 1:
        return []
    present = np.flatnonzero(label_slices.reshape(k, -1).any(axis=1))
    lo, hi = (int(present[0]), int(present[-1])) if present.size else (0, k - 1)
    # interior points of the extent: never the first or last organ slice (tiny caps)
    positions = np.linspace(lo, hi, panels + 2)[1:-1] if hi > lo else np.full(panels, lo)
    return sorted({int(round(p)) for p in positions})


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """bool ``(H, W)``: the mask's pixels less than ``width`` steps (4-neighbourhood) from a
    background pixel; the image border counts as background. Default ``width`` 1."""
    inside = np.asarray(mask).astype(bool)
    interior = inside
    for _ in range(width):
        padded = np.pad(interior, 1, constant_values=False)
        interior = (
            padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        )
    return inside & ~interior


def render_preview(
    image_slices: np.ndarray,
    label_slices: np.ndarray,
    organs: Mapping[int, str],
    panels: int = DEFAULT_PANELS,
    min_panel_px: int = MIN_PANEL_PX,
) -> np.ndarray:
    """RGB uint8 preview of :func:`pick_slices` with each organ outlined in its colour.

    Args:
        image_slices: ``(K, H, W)`` preprocessed intensities in ``[0, 1]`` (grey 0..255).
        label_slices: ``(K, H, W)`` organ values on the same slices (0 background), integers.
        organs: label value (1..255) -> organ name (:data:`anunet_core.vocabulary.ORGANS`);
            every organ is listed in the legend, every non-zero label value must be one.
        panels: how many slices to show. Default ``DEFAULT_PANELS``.
        min_panel_px: a panel's shorter side is upscaled by the smallest integer factor ``f``
            that reaches it. Default ``MIN_PANEL_PX``.

    Returns:
        ``(CAPTION_PX + f * H + n_lines * LEGEND_LINE_PX, n * f * W + (n - 1) * PANEL_GAP_PX, 3)``
        for ``n`` panels (``n < panels`` when the scan has fewer slices) and a legend of
        ``n_lines`` lines (one unless the organs do not fit on one).
    """
    images, labels = np.asarray(image_slices), np.asarray(label_slices)
    if images.ndim != 3 or images.shape != labels.shape:
        raise ValueError(f"image slices {images.shape} and label slices {labels.shape} must both be (K, H, W)")
    if panels < 1:
        raise ValueError(f"panels must be >= 1, got {panels}")
    if min_panel_px < 1:
        raise ValueError(f"min_panel_px must be >= 1, got {min_panel_px}")
    colours = _organ_colours(organs)
    labels = _organ_values(labels, colours)
    chosen = pick_slices(labels, panels)
    if not chosen:
        raise ValueError("a preview needs at least one slice")
    height, width = labels.shape[1:]
    factor = max(1, math.ceil(min_panel_px / min(height, width)))
    gap = np.full((height * factor, PANEL_GAP_PX, 3), BACKGROUND_RGB, dtype=np.uint8)
    parts = []
    for k in chosen:
        parts += [gap] if parts else []
        parts.append(_panel(images[k], labels[k], colours, factor))
    row = np.concatenate(parts, axis=1)
    captions = _caption_strip(chosen, width * factor, row.shape[1])
    legend = _legend_strip(colours, row.shape[1])
    return np.concatenate([captions, row, legend], axis=0)


def write_preview(
    path: str | os.PathLike,
    image_slices: np.ndarray,
    label_slices: np.ndarray,
    organs: Mapping[int, str],
    panels: int = DEFAULT_PANELS,
    min_panel_px: int = MIN_PANEL_PX,
) -> Path:
    """:func:`render_preview` written atomically as a PNG at ``path``; returns the path."""
    picture = Image.fromarray(render_preview(image_slices, label_slices, organs, panels, min_panel_px))
    return write_atomic(path, lambda tmp: picture.save(tmp, format="PNG"))


# ----------------------------------------------------------------------------------------------
# Parts
# ----------------------------------------------------------------------------------------------


def _organ_colours(organs: Mapping[int, str]) -> _Colours:
    """Checked ``organs``: label value -> (organ name, colour), by ascending value."""
    if not organs:
        raise ValueError(f"organs must name at least one organ, got {dict(organs)!r}")
    out = {}
    for value, name in organs.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= 255:
            raise ValueError(f"organ label values must be integers in 1..255, got {value!r}")
        name = validate_organ(name)
        if any(name == other for other, _ in out.values()):
            raise ValueError(f"organ {name!r} appears twice in organs {dict(organs)!r}")
        out[int(value)] = (name, ORGAN_RGB[name])
    return dict(sorted(out.items()))


def _organ_values(labels: np.ndarray, colours: _Colours) -> np.ndarray:
    """uint8 label slices, every non-zero value one of ``colours``' (``ValueError`` otherwise)."""
    if labels.dtype == np.bool_:
        labels = labels.view(np.uint8)
    elif not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label slices must hold integer organ values, got dtype {labels.dtype}")
    elif labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError(f"label values must be within 0..255, got [{labels.min()}, {labels.max()}]")
        labels = labels.astype(np.uint8)
    present = np.flatnonzero(np.bincount(labels.reshape(-1), minlength=256))
    unknown = [int(v) for v in present if v and v not in colours]
    if unknown:
        raise ValueError(f"label value {unknown[0]} is no organ of organs {sorted(colours)}")
    return labels


def _panel(image: np.ndarray, labels: np.ndarray, colours: _Colours, factor: int) -> np.ndarray:
    """One slice, ``factor`` times larger: the scan in grey, each organ filled and outlined."""
    grey = np.clip(np.nan_to_num(image.astype(np.float32)), 0.0, 1.0)
    if factor > 1:
        height, width = grey.shape
        grey = np.asarray(Image.fromarray(grey).resize((width * factor, height * factor), Image.Resampling.BILINEAR))
        labels = labels.repeat(factor, axis=0).repeat(factor, axis=1)
    grey = np.rint(np.clip(grey, 0.0, 1.0) * 255.0).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    width_px = 1 if factor == 1 else 2
    for value, (_, colour) in colours.items():
        organ = labels == value
        if not organ.any():
            continue
        tinted = (1.0 - FILL_ALPHA) * rgb[organ] + FILL_ALPHA * np.array(colour, dtype=np.float64)
        rgb[organ] = np.rint(tinted).astype(np.uint8)
        rgb[outline(organ, width_px)] = colour
    return rgb


@cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_PX)


def _strip(height: int, width: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    strip = Image.new("RGB", (width, height), BACKGROUND_RGB)
    return strip, ImageDraw.Draw(strip)


def _caption_strip(chosen: list[int], panel_width: int, width: int) -> np.ndarray:
    """``(CAPTION_PX, width, 3)``: "slice k" above each panel (left out where it does not fit)."""
    strip, draw = _strip(CAPTION_PX, width)
    for n, k in enumerate(chosen):
        text = f"slice {k}"
        if _MARGIN_PX + _font().getlength(text) <= panel_width:
            x = n * (panel_width + PANEL_GAP_PX) + _MARGIN_PX
            draw.text((x, CAPTION_PX // 2), text, fill=TEXT_RGB, font=_font(), anchor="lm")
    return np.asarray(strip)


def _legend_strip(colours: _Colours, width: int) -> np.ndarray:
    """``(n_lines * LEGEND_LINE_PX, width, 3)``: a swatch and the name of each organ, items
    wrapped onto further lines when they do not fit on one."""
    items = [
        (name, colour, SWATCH_PX + _SWATCH_GAP_PX + math.ceil(_font().getlength(name)))
        for name, colour in colours.values()
    ]
    lines: list[list[tuple[int, str, _RGB]]] = [[]]
    x = _MARGIN_PX
    for name, colour, item_px in items:
        if lines[-1] and x + item_px > width:
            lines.append([])
            x = _MARGIN_PX
        lines[-1].append((x, name, colour))
        x += item_px + _ITEM_GAP_PX
    strip, draw = _strip(len(lines) * LEGEND_LINE_PX, width)
    for n, line in enumerate(lines):
        middle = n * LEGEND_LINE_PX + LEGEND_LINE_PX // 2
        for x, name, colour in line:
            top = middle - SWATCH_PX // 2
            draw.rectangle((x, top, x + SWATCH_PX - 1, top + SWATCH_PX - 1), fill=colour)
            draw.text((x + SWATCH_PX + _SWATCH_GAP_PX, middle), name, fill=TEXT_RGB, font=_font(), anchor="lm")
    return np.asarray(strip)
