"""Tests of anunet_core.archives.chaos: discovery and the PNG ground truth placed by slice position."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from archive_builders import (
    CHAOS_CODES,
    KIDNEYS,
    SHAPE,
    assert_one_line,
    copy_chaos,
    read_png,
    truth_on_grid,
    write_filtered_png,
)

from anunet_core.archives import ArchiveError, detect_layout, discover_cases, load_case


def test_chaos_pngs_follow_the_slice_positions_not_the_name_order(archives):
    root, expected = archives["chaos"]
    cases = {c.case_id: c for c in discover_cases(root)}
    phantom = expected["chaos-1-t1in"][1]
    masks = []
    for case_id in ("chaos-1-t1in", "chaos-1-t1out"):
        case = cases[case_id]
        assert case.label.name == "Ground" and case.label.parent.name == "T1DUAL"
        image, mask = load_case(case, "liver")
        # the shuffled names must not matter: slices come back in position order
        np.testing.assert_array_equal(image.array, phantom.image)
        np.testing.assert_array_equal(mask, (phantom.labels == 5).astype(np.uint8))
        masks.append(mask)
    assert masks[0].sum() > 0
    # spot-check one slice by hand: the PNG named like the DICOM file of slice k holds slice k
    perm = np.random.default_rng(5).permutation(SHAPE[2])
    k = int(np.argmax((phantom.labels == 5).sum(axis=(0, 1))))
    png = read_png(cases["chaos-1-t1in"].label / f"gt_{perm[k]:03d}.png")
    np.testing.assert_array_equal((png == CHAOS_CODES[5]).T, masks[0][:, :, k] == 1)


def test_chaos_root_may_be_the_mr_folder_or_above_it(archives, tmp_path):
    root, expected = archives["chaos"]
    ids = sorted(expected)
    assert [c.case_id for c in discover_cases(root / "MR")] == ids
    assert detect_layout(root / "MR") == "chaos"
    (tmp_path / "Train_Sets").symlink_to(root, target_is_directory=True)  # CHAOS zip layout
    assert detect_layout(tmp_path) == "chaos"
    assert [c.case_id for c in discover_cases(tmp_path)] == ids


def test_chaos_png_count_mismatch(archives, tmp_path):
    root = copy_chaos(archives, tmp_path)
    ground = root / "MR" / "2" / "T2SPIR" / "Ground"
    sorted(ground.glob("*.png"))[3].unlink()
    (case,) = discover_cases(root)
    with pytest.raises(ArchiveError) as info:
        load_case(case, "liver")
    message = assert_one_line(info.value)
    assert str(ground) in message and f"{SHAPE[2] - 1} ground-truth PNGs" in message
    assert f"but {SHAPE[2]} DICOM files" in message
    image, mask = load_case(case, "liver", with_label=False)
    assert mask is None and image.modality == "MR"


def test_chaos_missing_ground_is_no_label(archives, tmp_path):
    root = copy_chaos(archives, tmp_path)
    shutil.rmtree(root / "MR" / "2" / "T2SPIR" / "Ground")
    (case,) = discover_cases(root, require_labels=True)
    assert case.label is None
    assert load_case(case, "liver")[1] is None


def test_chaos_pngs_with_all_filter_types_and_ranges(archives, tmp_path):
    """Real CHAOS PNGs are written by other encoders (filtered rows) with grey values
    anywhere in the README ranges."""
    root = copy_chaos(archives, tmp_path)
    _, expected = archives["chaos"]
    phantom = expected["chaos-2-t2spir"][1]
    ground = root / "MR" / "2" / "T2SPIR" / "Ground"
    (case,) = discover_cases(root)
    image, before = load_case(case, "kidney")
    rng = np.random.default_rng(0)
    greys = {0: (0, 54), 5: (55, 70), 2: (110, 135), 3: (175, 200), 1: (240, 255)}
    for png in sorted(ground.glob("*.png")):
        codes = read_png(png)
        out = np.zeros(codes.shape, dtype=np.int64)
        for value, (low, high) in greys.items():
            code = CHAOS_CODES.get(value, 0)
            where = codes == code
            out[where] = rng.integers(low, high + 1, size=int(where.sum()))
        write_filtered_png(png, out)
    image, after = load_case(case, "kidney")
    np.testing.assert_array_equal(after, before)
    kidneys = np.isin(phantom.labels, KIDNEYS).astype(np.uint8)
    np.testing.assert_array_equal(after, truth_on_grid(kidneys, phantom.affine, image))


def test_chaos_bad_png_is_a_one_line_error_naming_it(archives, tmp_path):
    root = copy_chaos(archives, tmp_path)
    ground = root / "MR" / "2" / "T2SPIR" / "Ground"
    pngs = sorted(ground.glob("*.png"))
    (case,) = discover_cases(root)
    write_filtered_png(pngs[0], np.zeros((SHAPE[1], SHAPE[0]), dtype=np.uint8), color_type=2)
    with pytest.raises(ArchiveError, match=re.escape(str(pngs[0]))) as info:
        load_case(case, "liver")
    assert_one_line(info.value)
    write_filtered_png(pngs[0], np.zeros((SHAPE[0], SHAPE[1]), dtype=np.uint8))  # transposed shape
    wrong_shape = rf"{re.escape(pngs[0].name)}: {SHAPE[0]}x{SHAPE[1]} pixels"
    with pytest.raises(ArchiveError, match=wrong_shape):
        load_case(case, "liver")
    pngs[0].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ArchiveError, match=re.escape(str(pngs[0]))) as info:
        load_case(case, "liver")
    assert_one_line(info.value)

