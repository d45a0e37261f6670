"""Post-processing: the largest components per organ, the minimum blob volume, 26-connectivity,
ties, and agreement with a plain scipy.ndimage.label reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from anunet_core.postprocessing import (
    ORGAN_RULES,
    PostprocessRule,
    foreground,
    kept_components,
    postprocess_organ,
    rule_for,
)
from anunet_core.vocabulary import ORGANS

VOXEL_ML = 0.125  # 5 x 5 x 5 mm voxels; exact in binary, so thresholds are exact too

# three blobs on one grid: A 20 mL, B 8 mL, C one voxel (0.125 mL)
BLOBS = {
    "A": (slice(2, 10), slice(2, 6), slice(2, 7)),  # 8 x 4 x 5 = 160 voxels
    "B": (slice(14, 18), slice(2, 6), slice(2, 6)),  # 4 x 4 x 4 = 64 voxels
    "C": (slice(20, 21), slice(10, 11), slice(10, 11)),  # 1 voxel
}


def _mask(names: str, shape: tuple[int, int, int] = (24, 12, 12)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for name in names:
        mask[BLOBS[name]] = 1
    return mask


def scipy_reference(mask: np.ndarray, rule: PostprocessRule, voxel_ml: float) -> tuple[np.ndarray, int, int]:
    """The rule written plainly: scipy labels (26-connectivity), each component's size and first
    voxel (C order), the largest kept (ties: earlier first voxel), then the min-volume check."""
    labels, n = ndimage.label(np.asarray(mask) != 0, structure=np.ones((3, 3, 3), dtype=bool))
    components = []
    for label in range(1, n + 1):
        where = np.flatnonzero(labels == label)
        components.append((-where.size, int(where[0]), label, where.size))
    ranked = sorted(components)[: rule.keep_components]
    keep = [label for _, _, label, size in ranked if size * voxel_ml >= rule.min_blob_ml]
    return np.isin(labels, keep).astype(np.uint8), n, len(keep)


def test_the_organ_rules() -> None:
    assert tuple(ORGAN_RULES) == ORGANS
    assert ORGAN_RULES["liver"] == PostprocessRule(1, 10.0)
    assert ORGAN_RULES["spleen"] == PostprocessRule(1, 5.0)
    assert ORGAN_RULES["kidney"] == PostprocessRule(2, 5.0)
    assert rule_for(" Kidney ") is ORGAN_RULES["kidney"]
    with pytest.raises(TypeError):
        ORGAN_RULES["liver"] = PostprocessRule(3, 0.0)  # type: ignore[index]
    with pytest.raises(ValueError, match="organ must be one of"):
        rule_for("pancreas")


@pytest.mark.parametrize(
    "organ,kept_blobs",
    [("liver", "A"), ("spleen", "A"), ("kidney", "AB")],
)
def test_big_blob_and_small_ones(organ: str, kept_blobs: str) -> None:
    result = postprocess_organ(_mask("ABC"), organ, VOXEL_ML)
    expected = _mask(kept_blobs)
    assert result.mask.dtype == np.uint8 and result.mask.shape == expected.shape
    assert np.array_equal(result.mask, expected)
    assert (result.components, result.kept) == (3, len(kept_blobs))
    assert result.removed_voxels == 225 - int(expected.sum())


@pytest.mark.parametrize("organ", ORGANS)
def test_a_missing_organ_leaves_no_speck(organ: str) -> None:
    """A (20 mL) and a 4 mL blob D: the liver and spleen keep A; the kidney rule would keep D as
    the second kidney but 4 mL is below its 5 mL minimum."""
    mask = _mask("AC")
    mask[14:18, 2:6, 2:4] = 1  # D: 32 voxels = 4 mL
    result = postprocess_organ(mask, organ, VOXEL_ML)
    assert np.array_equal(result.mask, _mask("A"))
    assert (result.components, result.kept, result.removed_voxels) == (3, 1, 33)


@pytest.mark.parametrize("organ", ORGANS)
def test_the_minimum_volume_is_inclusive(organ: str) -> None:
    """A single blob of exactly ``min_blob_ml`` is kept; one voxel less and it is removed."""
    rule = ORGAN_RULES[organ]
    voxels = int(rule.min_blob_ml / VOXEL_ML)  # 80 (liver) or 40
    mask = np.zeros((10, 10, 10), dtype=np.uint8)
    mask.reshape(-1)[:voxels] = 1  # consecutive voxels in C order: one component
    assert postprocess_organ(mask, organ, VOXEL_ML).mask.sum() == voxels
    mask.reshape(-1)[voxels - 1] = 0
    result = postprocess_organ(mask, organ, VOXEL_ML)
    assert result.mask.sum() == 0
    assert (result.components, result.kept, result.removed_voxels) == (1, 0, voxels - 1)


@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("contact", ["corner", "edge", "face"])
def test_26_connectivity(organ: str, contact: str) -> None:
    """Two 4x4x4 cubes (8 mL each) touching by a corner, an edge or a face are one component."""
    mask = np.zeros((12, 12, 12), dtype=np.uint8)
    mask[0:4, 0:4, 0:4] = 1
    offset = {"corner": (4, 4, 4), "edge": (4, 4, 0), "face": (4, 0, 0)}[contact]
    mask[tuple(slice(o, o + 4) for o in offset)] = 1
    result = postprocess_organ(mask, organ, VOXEL_ML)
    assert (result.components, result.kept, result.removed_voxels) == (1, 1, 0)
    assert np.array_equal(result.mask, mask)


@pytest.mark.parametrize("organ", ORGANS)
def test_a_gap_of_one_voxel_separates(organ: str) -> None:
    mask = np.zeros((12, 12, 12), dtype=np.uint8)
    mask[0:5, 0:5, 0:5] = 1  # 125 voxels, 15.6 mL
    mask[6:11, 6:11, 6:11] = 1  # equal size, one voxel apart diagonally: not connected
    result = postprocess_organ(mask, organ, VOXEL_ML)
    expected = mask.copy()
    if organ != "kidney":
        expected[6:11, 6:11, 6:11] = 0  # a tie: the first in C order wins
    assert (result.components, result.kept) == (2, 2 if organ == "kidney" else 1)
    assert np.array_equal(result.mask, expected)


@pytest.mark.parametrize("organ,kept", [("liver", [0]), ("spleen", [0]), ("kidney", [0, 1])])
def test_ties_go_to_the_first_in_c_order(organ: str, kept: list[int]) -> None:
    """Three equal 10 mL cubes; the first voxels in C order are cube 0's, then 1's, then 2's,
    whatever their positions along the fast axes."""
    corners = [(1, 8, 8), (1, 9, 0), (7, 0, 0)]  # C order of the first voxels: 0 < 1 < 2
    mask = np.zeros((12, 14, 14), dtype=np.uint8)
    cubes = []
    for c in corners:
        cube = np.zeros_like(mask)
        cube[c[0] : c[0] + 5, c[1] : c[1] + 4, c[2] : c[2] + 4] = 1  # 80 voxels = 10 mL
        cubes.append(cube)
        mask |= cube
    result = postprocess_organ(mask, organ, VOXEL_ML)
    assert result.components == 3
    assert np.array_equal(result.mask, sum(cubes[i] for i in kept))
    assert np.array_equal(postprocess_organ(np.asfortranarray(mask), organ, VOXEL_ML).mask, result.mask)


@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int16, np.int64])
def test_empty_mask(organ: str, dtype) -> None:
    mask = np.zeros((5, 6, 7), dtype=dtype)
    result = postprocess_organ(mask, organ, VOXEL_ML)
    assert result.mask.dtype == np.uint8 and result.mask.shape == (5, 6, 7) and not result.mask.any()
    assert (result.components, result.kept, result.removed_voxels) == (0, 0, 0)


@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int8, np.int32, np.uint64])
def test_the_input_is_not_modified(organ: str, dtype) -> None:
    mask = _mask("ABC").astype(dtype)
    before = mask.copy()
    result = postprocess_organ(mask, organ, VOXEL_ML)
    assert np.array_equal(mask, before) and mask.dtype == before.dtype
    assert not np.shares_memory(result.mask, mask)
    # an input that is all kept comes back as a copy too
    single = _mask("A").astype(dtype)
    kept = postprocess_organ(single, organ, VOXEL_ML)
    assert np.array_equal(kept.mask, single) and not np.shares_memory(kept.mask, single)
    kept.mask[:] = 0
    assert single.sum() == 160


def _random_mask(seed: int, shape: tuple[int, int, int] = (28, 24, 20)) -> np.ndarray:
    """Blobs of many sizes (thresholded smooth noise) plus single-voxel specks: many ties."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=rng.uniform(0.8, 2.0))
    blobs = smooth > np.quantile(smooth, rng.uniform(0.8, 0.95))
    specks = rng.random(shape) < 0.01
    return (blobs | specks).astype(np.uint8)


RULES = {
    **{organ: ORGAN_RULES[organ] for organ in ORGANS},
    "keep3": PostprocessRule(3, 0.0),  # the third largest is usually a tie among specks
    "keep5-speck": PostprocessRule(5, 0.25),  # two voxels at least
}


@pytest.mark.parametrize("rule_name", sorted(RULES))
@pytest.mark.parametrize("seed", range(6))
def test_same_result_as_the_scipy_reference(rule_name: str, seed: int) -> None:
    mask = _random_mask(seed)
    rule = RULES[rule_name]
    voxel_ml = 0.25  # liver 40 voxels, spleen and kidney 20
    expected, components, kept = scipy_reference(mask, rule, voxel_ml)
    assert components > 10  # the masks do have many components
    result = postprocess_organ(mask, "liver", voxel_ml, rule=rule)
    assert (result.components, result.kept) == (components, kept)
    assert np.array_equal(result.mask, expected)
    assert result.removed_voxels == int(mask.sum()) - int(expected.sum())


def test_kept_components_ranks_by_size_then_order() -> None:
    sizes = np.array([5, 9, 9, 1, 9])
    assert kept_components(sizes, PostprocessRule(2, 0.0), 1.0).tolist() == [1, 2]
    assert kept_components(sizes, PostprocessRule(4, 0.0), 1.0).tolist() == [1, 2, 4, 0]
    assert kept_components(sizes, PostprocessRule(5, 5.0), 1.0).tolist() == [1, 2, 4, 0]
    assert kept_components(sizes, PostprocessRule(5, 4.5), 0.5).tolist() == [1, 2, 4]
    assert kept_components(np.array([], dtype=np.int64), PostprocessRule(1, 0.0), 1.0).tolist() == []


@pytest.mark.parametrize(
    "mask,message",
    [
        (np.zeros((4, 4), np.uint8), "mask must be 3-D"),
        (np.full((2, 2, 2), 2, np.uint8), "mask values must be 0 or 1, got values from 2 to 2"),
        (np.full((2, 2, 2), -1, np.int16), "mask values must be 0 or 1"),
        (np.zeros((2, 2, 2), np.float32), "mask must be bool or integer 0/1"),
    ],
)
def test_foreground_refuses_what_is_not_a_mask(mask: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        foreground(mask)
    with pytest.raises(ValueError, match=message):
        postprocess_organ(mask, "liver", VOXEL_ML)


@pytest.mark.parametrize("voxel_ml", [0, -0.1, float("nan"), float("inf"), True, "0.1", None])
def test_voxel_ml_must_be_a_positive_number(voxel_ml) -> None:
    with pytest.raises(ValueError, match="voxel_ml must be a finite number of mL > 0, got"):
        postprocess_organ(_mask("A"), "liver", voxel_ml)


@pytest.mark.parametrize(
    "keep,min_ml,message",
    [
        (0, 1.0, "keep_components must be an integer >= 1, got 0"),
        (1.5, 1.0, "keep_components must be an integer >= 1, got 1.5"),
        (True, 1.0, "keep_components must be an integer >= 1, got True"),
        (1, -1.0, "min_blob_ml must be a finite number of mL >= 0, got -1.0"),
        (1, float("nan"), "min_blob_ml must be a finite number of mL >= 0, got nan"),
        (1, "5", "min_blob_ml must be a finite number of mL >= 0, got '5'"),
    ],
)
def test_rule_checks(keep, min_ml, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PostprocessRule(keep, min_ml)


def test_rule_must_be_a_rule_and_organ_known() -> None:
    with pytest.raises(ValueError, match="rule must be a PostprocessRule"):
        postprocess_organ(_mask("A"), "liver", VOXEL_ML, rule=(1, 5.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="organ must be one of"):
        postprocess_organ(_mask("A"), "heart", VOXEL_ML)
