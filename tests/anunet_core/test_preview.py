"""Preview PNGs: slice choice, outlines, organ colours, upscaling, legend, atomic writing."""

from __future__ import annotations

from itertools import permutations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anunet_core.preview import (
    CAPTION_PX,
    FILL_ALPHA,
    LEGEND_LINE_PX,
    MIN_PANEL_PX,
    ORGAN_RGB,
    PANEL_GAP_PX,
    SWATCH_PX,
    outline,
    pick_slices,
    render_preview,
    write_preview,
)
from anunet_core.vocabulary import ORGAN_MAP_VALUES, ORGANS

ALL_ORGANS = {value: organ for organ, value in ORGAN_MAP_VALUES.items()}  # {1: liver, 2: spleen, 3: kidney}


def _organ(k: int, lo: int, hi: int, size: int = 16, value: int = 1) -> np.ndarray:
    labels = np.zeros((k, size, size), dtype=np.uint8)
    labels[lo : hi + 1, 4:12, 5:11] = value
    return labels


def _three_organs(k: int, size: int) -> np.ndarray:
    """Liver, spleen and kidney as separate blocks of an ``(k, size, size)`` label map, on every slice."""
    labels = np.zeros((k, size, size), dtype=np.uint8)
    q = size // 8
    blocks = {"liver": (slice(q, 4 * q), slice(q, 4 * q)), "spleen": (slice(q, 3 * q), slice(5 * q, 7 * q)),
              "kidney": (slice(5 * q, 7 * q), slice(3 * q, 5 * q))}
    for organ, (rows, cols) in blocks.items():
        labels[:, rows, cols] = ORGAN_MAP_VALUES[organ]
    return labels


def _panel(rgb: np.ndarray, n: int, side: int) -> np.ndarray:
    """Panel ``n`` (0-based) of a preview whose panels are ``side`` pixels square."""
    left = n * (side + PANEL_GAP_PX)
    return rgb[CAPTION_PX : CAPTION_PX + side, left : left + side]


def _is(rgb: np.ndarray, colour) -> np.ndarray:
    return np.all(rgb == np.array(colour, dtype=np.uint8), axis=-1)


# ----------------------------------------------------------------------------------------------
# Slice choice and outline
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k,lo,hi,panels,expected",
    [
        (20, 4, 12, 3, [6, 8, 10]),  # interior of the organ's extent, never its caps
        (20, 7, 7, 3, [7]),  # one organ slice: shown once
        (5, 0, 4, 1, [2]),
    ],
)
@pytest.mark.parametrize("organ", ORGANS)
def test_pick_slices_spreads_over_the_organ(organ: str, k: int, lo: int, hi: int, panels: int,
                                            expected: list[int]) -> None:
    assert pick_slices(_organ(k, lo, hi, value=ORGAN_MAP_VALUES[organ]), panels) == expected


@pytest.mark.parametrize("first, second", list(permutations(ORGANS, 2)))
def test_pick_slices_spreads_over_the_organs_joint_extent(first: str, second: str) -> None:
    labels = _organ(50, 10, 20, value=ORGAN_MAP_VALUES[first]) + _organ(50, 30, 40, value=ORGAN_MAP_VALUES[second])
    assert pick_slices(labels, 3) == [18, 25, 32]  # linspace(10, 40, 5)[1:-1], rounded half to even
    assert pick_slices(labels, 1) == [25]


def test_pick_slices_without_organ_spreads_over_the_scan() -> None:
    assert pick_slices(np.zeros((9, 4, 4), np.uint8), 3) == [2, 4, 6]
    assert pick_slices(np.zeros((0, 4, 4), np.uint8), 3) == []
    with pytest.raises(ValueError, match="label slices must be"):
        pick_slices(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize("width, expected", [(1, 16), (2, 24), (3, 25)])
def test_outline_is_the_border_of_the_mask(width: int, expected: int) -> None:
    mask = np.zeros((7, 7), np.uint8)
    mask[1:6, 1:6] = 1
    edge = outline(mask, width)
    assert edge.sum() == expected  # the 5x5 square's outer ring, two rings, all of it
    assert edge[1, 1:6].all() and edge[5, 1:6].all() and not edge[0].any()
    assert not outline(mask)[2:5, 2:5].any()
    assert outline(np.ones((3, 3))).sum() == 8, "the image border counts as background"


# ----------------------------------------------------------------------------------------------
# Panels: size, grey, organ colours
# ----------------------------------------------------------------------------------------------


def test_organ_colours_cover_the_vocabulary_and_differ() -> None:
    assert set(ORGAN_RGB) == set(ORGANS)
    assert len(set(ORGAN_RGB.values())) == len(ORGANS)
    assert all(len(set(colour)) > 1 for colour in ORGAN_RGB.values()), "no organ colour is a grey"


@pytest.mark.parametrize("size, side", [(64, 256), (128, 256), (256, 256), (100, 300), (300, 300)])
def test_panels_are_upscaled_to_at_least_min_panel_px(size: int, side: int) -> None:
    rgb = render_preview(np.full((12, size, size), 0.5, np.float32), _three_organs(12, size), ALL_ORGANS)
    assert MIN_PANEL_PX == 256
    assert rgb.dtype == np.uint8
    assert rgb.shape == (CAPTION_PX + side + LEGEND_LINE_PX, 3 * side + 2 * PANEL_GAP_PX, 3)


@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("size", [64, 128, 256])
def test_each_organ_is_outlined_and_filled_in_its_own_colour(organ: str, size: int) -> None:
    labels = _three_organs(12, size)
    rgb = render_preview(np.full((12, size, size), 0.4, np.float32), labels, ALL_ORGANS)
    factor, grey = 256 // size, round(0.4 * 255)
    up = labels[0].repeat(factor, axis=0).repeat(factor, axis=1)  # every slice is the same
    mask = up == ORGAN_MAP_VALUES[organ]
    edge = outline(mask, 1 if factor == 1 else 2)
    colour = ORGAN_RGB[organ]
    fill = np.rint((1 - FILL_ALPHA) * grey + FILL_ALPHA * np.array(colour)).astype(np.uint8)
    for n in range(3):
        panel = _panel(rgb, n, 256)
        np.testing.assert_array_equal(_is(panel, colour), edge)  # this colour is the outline, all of it
        assert _is(panel[mask & ~edge], fill).all(), "a light fill inside the outline"
        assert _is(panel[up == 0], (grey, grey, grey)).all(), "the scan in grey elsewhere"
        for other in ORGANS:
            if other != organ:
                assert not _is(panel[mask], ORGAN_RGB[other]).any()


def test_no_upscaling_at_256_keeps_the_grey_values() -> None:
    images = np.random.default_rng(0).random((12, 256, 256), dtype=np.float32)
    labels = _three_organs(12, 256)
    rgb = render_preview(images, labels, ALL_ORGANS)
    for n, k in enumerate(pick_slices(labels)):
        panel, background = _panel(rgb, n, 256), labels[k] == 0
        expected = np.rint(images[k] * 255).astype(np.uint8)
        np.testing.assert_array_equal(panel[background], np.repeat(expected[background][:, None], 3, axis=1))


def test_upscaling_keeps_a_constant_scan_constant_and_bilinear_in_between() -> None:
    images = np.zeros((3, 64, 64), np.float32)
    images[:, :, 32:] = 1.0  # a vertical edge: black | white
    rgb = render_preview(images, np.zeros((3, 64, 64), np.uint8), {1: "liver"}, panels=1)
    panel = _panel(rgb, 0, 256)[:, :, 0]
    assert (panel[:, :126] == 0).all() and (panel[:, 130:] == 255).all()
    # bilinear x4 across the edge (pixel centres at 4 c + 1.5): 1/8, 3/8, 5/8, 7/8 of white
    np.testing.assert_array_equal(panel[0, 126:130], np.rint(255 * np.array([1, 3, 5, 7]) / 8))


@pytest.mark.parametrize("organ", ORGANS)
def test_slices_are_chosen_through_the_organs_joint_extent(organ: str) -> None:
    k = 50
    images = np.broadcast_to((np.arange(k, dtype=np.float32) / (k - 1))[:, None, None], (k, 64, 64))
    labels = _organ(k, 10, 20, 64, ORGAN_MAP_VALUES[organ])
    labels[30:41, 40:50, 40:50] = ORGAN_MAP_VALUES["kidney" if organ != "kidney" else "liver"]
    rgb = render_preview(images, labels, ALL_ORGANS)
    shown = [int(_panel(rgb, n, 256)[0, 0, 0]) for n in range(3)]  # a background corner of each panel
    assert shown == [round(index * 255 / 49) for index in (18, 25, 32)]


@pytest.mark.parametrize("organ", ORGANS)
def test_an_empty_label_map_renders_whole_scan_spread(organ: str) -> None:
    k = 9
    images = np.broadcast_to((np.arange(k, dtype=np.float32) / 10)[:, None, None], (k, 64, 64))
    rgb = render_preview(images, np.zeros((k, 64, 64), np.uint8), {ORGAN_MAP_VALUES[organ]: organ})
    assert rgb.shape == (CAPTION_PX + 256 + LEGEND_LINE_PX, 3 * 256 + 2 * PANEL_GAP_PX, 3)
    for n, slice_index in enumerate([2, 4, 6]):
        assert (_panel(rgb, n, 256) == round(slice_index * 25.5)).all()
    assert _is(rgb, ORGAN_RGB[organ]).sum() == SWATCH_PX**2, "only the legend swatch has the colour"


def test_a_binary_mask_renders_as_the_organ_of_value_1() -> None:
    labels = _organ(6, 1, 4, 64) > 0
    rgb = render_preview(np.zeros((6, 64, 64), np.float32), labels, {1: "spleen"})
    assert _is(_panel(rgb, 0, 256), ORGAN_RGB["spleen"]).sum() == outline(labels[2].repeat(4, 0).repeat(4, 1), 2).sum()


# ----------------------------------------------------------------------------------------------
# Legend and captions
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("listed", [(organ,) for organ in ORGANS] + [ORGANS, ("liver", "kidney")])
def test_the_legend_has_a_swatch_for_each_organ_listed(listed: tuple[str, ...]) -> None:
    organs = {ORGAN_MAP_VALUES[organ]: organ for organ in listed}
    labels = np.zeros((6, 64, 64), np.uint8)
    labels[2:4, 10:20, 10:20] = min(organs)
    rgb = render_preview(np.full((6, 64, 64), 0.5, np.float32), labels, organs)
    legend = rgb[CAPTION_PX + 256 :]
    assert legend.shape[0] == LEGEND_LINE_PX
    for organ in ORGANS:
        swatch = _is(legend, ORGAN_RGB[organ])
        if organ not in listed:
            assert not swatch.any()
            continue
        rows, cols = np.flatnonzero(swatch.any(axis=1)), np.flatnonzero(swatch.any(axis=0))
        assert swatch.sum() == SWATCH_PX**2 and len(rows) == len(cols) == SWATCH_PX, "one full square"
    text = legend[~np.any([_is(legend, ORGAN_RGB[o]) for o in listed], axis=0)]
    assert np.array_equal(text[:, 0], text[:, 1]) and np.array_equal(text[:, 1], text[:, 2])
    assert (text == 255).any(), "the organ names are written"


def test_the_legend_wraps_when_the_organs_do_not_fit_on_one_line() -> None:
    rgb = render_preview(np.zeros((3, 64, 64), np.float32), _three_organs(3, 64), ALL_ORGANS, panels=1,
                         min_panel_px=64)
    assert rgb.shape == (CAPTION_PX + 64 + 3 * LEGEND_LINE_PX, 64, 3)  # one organ a line
    for line, organ in enumerate(ORGANS):
        top = CAPTION_PX + 64 + line * LEGEND_LINE_PX
        assert _is(rgb[top : top + LEGEND_LINE_PX], ORGAN_RGB[organ]).sum() == SWATCH_PX**2


def test_captions_are_white_text_above_each_panel() -> None:
    rgb = render_preview(np.zeros((9, 64, 64), np.float32), np.zeros((9, 64, 64), np.uint8), ALL_ORGANS)
    captions = rgb[:CAPTION_PX]
    assert np.array_equal(captions[..., 0], captions[..., 1]) and np.array_equal(captions[..., 1], captions[..., 2])
    for n in range(3):
        assert (captions[:, n * (256 + PANEL_GAP_PX) : n * (256 + PANEL_GAP_PX) + 256] == 255).any()


# ----------------------------------------------------------------------------------------------
# Bad input and writing
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images, labels, organs, kwargs, message",
    [
        ((3, 8, 8), (3, 8, 9), ALL_ORGANS, {}, "must both be \\(K, H, W\\)"),
        ((8, 8), (8, 8), ALL_ORGANS, {}, "must both be \\(K, H, W\\)"),
        ((0, 8, 8), (0, 8, 8), ALL_ORGANS, {}, "at least one slice"),
        ((3, 8, 8), (3, 8, 8), ALL_ORGANS, {"panels": 0}, "panels must be >= 1, got 0"),
        ((3, 8, 8), (3, 8, 8), ALL_ORGANS, {"min_panel_px": 0}, "min_panel_px must be >= 1, got 0"),
        ((3, 8, 8), (3, 8, 8), {}, {}, "at least one organ"),
        ((3, 8, 8), (3, 8, 8), {1: "pancreas"}, {}, "organ must be one of .*'pancreas'"),
        ((3, 8, 8), (3, 8, 8), {0: "liver"}, {}, "integers in 1..255, got 0"),
        ((3, 8, 8), (3, 8, 8), {256: "liver"}, {}, "integers in 1..255, got 256"),
        ((3, 8, 8), (3, 8, 8), {1: "liver", 2: "Liver"}, {}, "'liver' appears twice"),
    ],
)
def test_render_preview_refuses_bad_input(images, labels, organs, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        render_preview(np.zeros(images), np.zeros(labels, np.uint8), organs, **kwargs)


@pytest.mark.parametrize("organ", ORGANS)
def test_render_preview_refuses_labels_that_are_no_listed_organ(organ: str) -> None:
    organs = {ORGAN_MAP_VALUES[organ]: organ}
    other = next(v for v in ORGAN_MAP_VALUES.values() if v != ORGAN_MAP_VALUES[organ])
    with pytest.raises(ValueError, match=f"label value {other} is no organ of organs \\[{ORGAN_MAP_VALUES[organ]}\\]"):
        render_preview(np.zeros((3, 8, 8)), _organ(3, 0, 2, 8, other), organs)
    with pytest.raises(ValueError, match="integer organ values, got dtype float32"):
        render_preview(np.zeros((3, 8, 8)), np.zeros((3, 8, 8), np.float32), organs)
    with pytest.raises(ValueError, match="within 0..255, got \\[-1, 0\\]"):
        render_preview(np.zeros((3, 8, 8)), -_organ(3, 0, 2, 8, 1).astype(np.int16), organs)


@pytest.mark.parametrize("organ", ORGANS)
def test_write_preview_is_a_png_and_leaves_no_temporary(tmp_path: Path, organ: str) -> None:
    labels = _organ(6, 0, 5, 64, ORGAN_MAP_VALUES[organ])
    images = np.random.default_rng(0).random((6, 64, 64))
    path = write_preview(tmp_path / "p" / "case.png", images, labels, ALL_ORGANS)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.size == (3 * 256 + 2 * PANEL_GAP_PX, CAPTION_PX + 256 + LEGEND_LINE_PX)
        np.testing.assert_array_equal(np.asarray(image), render_preview(images, labels, ALL_ORGANS))
    assert [p.name for p in path.parent.iterdir()] == ["case.png"]
