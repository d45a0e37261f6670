"""Preview PNGs: slice choice, outline, colours, atomic writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anunet_core.preview import OUTLINE_RGB, outline, pick_slices, render_preview, write_preview


def _organ(k: int, lo: int, hi: int, size: int = 16) -> np.ndarray:
    mask = np.zeros((k, size, size), dtype=np.uint8)
    mask[lo : hi + 1, 4:12, 5:11] = 1
    return mask


@pytest.mark.parametrize(
    "k,lo,hi,panels,expected",
    [
        (20, 4, 12, 3, [6, 8, 10]),  # interior of the organ's extent, never its caps
        (20, 7, 7, 3, [7]),  # one organ slice: shown once
        (5, 0, 4, 1, [2]),
    ],
)
def test_pick_slices_spreads_over_the_organ(k: int, lo: int, hi: int, panels: int, expected: list[int]) -> None:
    assert pick_slices(_organ(k, lo, hi), panels) == expected


def test_pick_slices_without_organ_spreads_over_the_scan() -> None:
    assert pick_slices(np.zeros((9, 4, 4), np.uint8), 3) == [2, 4, 6]
    assert pick_slices(np.zeros((0, 4, 4), np.uint8), 3) == []
    with pytest.raises(ValueError, match="mask slices must be"):
        pick_slices(np.zeros((4, 4), np.uint8))


def test_outline_is_the_border_of_the_mask() -> None:
    mask = np.zeros((7, 7), np.uint8)
    mask[1:6, 1:6] = 1
    edge = outline(mask)
    assert edge.sum() == 16  # the 5x5 square's ring
    assert not edge[2:5, 2:5].any() and edge[1, 1:6].all() and edge[5, 1:6].all()
    full = outline(np.ones((3, 3)))
    assert full.sum() == 8, "the image border counts as background"


def test_render_preview_shape_grey_and_red_outline() -> None:
    images = np.tile(np.linspace(0.0, 1.0, 16, dtype=np.float32), (20, 16, 1))
    masks = _organ(20, 4, 12)
    rgb = render_preview(images, masks, panels=3)
    assert rgb.shape == (16, 48, 3) and rgb.dtype == np.uint8
    red = np.all(rgb == OUTLINE_RGB, axis=2)
    assert red.sum() == 3 * outline(masks[8]).sum()
    grey = rgb[~red]
    assert np.array_equal(grey[:, 0], grey[:, 1]) and np.array_equal(grey[:, 1], grey[:, 2])
    assert rgb[0, 0, 0] == 0 and rgb[0, 15, 0] == 255, "intensities [0, 1] map to 0..255"


def test_render_preview_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="must both be"):
        render_preview(np.zeros((3, 8, 8)), np.zeros((3, 8, 9)))


def test_write_preview_is_a_png_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = write_preview(tmp_path / "p" / "case.png", np.random.default_rng(0).random((6, 12, 12)), _organ(6, 0, 5, 12))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (36, 12) and image.mode == "RGB"
    assert [p.name for p in path.parent.iterdir()] == ["case.png"]
