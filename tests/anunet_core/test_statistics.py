"""Organ statistics: constructed boxes in known geometries (RAS, LPS-like, permuted, oblique),
the synthetic phantom (volumes, HU, the RAS sign convention) and the field-of-view border."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from anunet_core.preprocessing import label_to_mask
from anunet_core.statistics import INTENSITY_UNITS, OrganStatistics, organ_statistics
from anunet_core.synthetic import make_phantom
from anunet_core.synthetic.tissues import TISSUE_TABLE
from anunet_core.vocabulary import ORGAN_LABEL_VALUES, ORGANS

SHAPE = (10, 8, 12)
BOX = (slice(2, 6), slice(1, 4), slice(4, 9))  # i 2..5, j 1..3, k 4..8: 4 x 3 x 5 = 60 voxels
C30, S30 = math.sqrt(3) / 2, 0.5

# affine, expected bbox min, bbox max, centroid (RAS+ mm), worked out by hand for BOX
# (index means 3.5, 2, 6)
GEOMETRIES = {
    "RAS": (
        [[0.8, 0, 0, -4], [0, 0.8, 0, 2], [0, 0, 2.5, -300], [0, 0, 0, 1]],
        (-2.4, 2.8, -290.0), (0.0, 4.4, -280.0), (-1.2, 3.6, -285.0),
    ),
    "LPS": (  # i runs to the left, j posterior: x = 100 - 0.8 i, y = 50 - 0.8 j
        [[-0.8, 0, 0, 100], [0, -0.8, 0, 50], [0, 0, 2.5, -300], [0, 0, 0, 1]],
        (96.0, 47.6, -290.0), (98.4, 49.2, -280.0), (97.2, 48.4, -285.0),
    ),
    "permuted": (  # i runs superior, j right, k posterior: x = 0.8 j, y = -2.5 k, z = 0.8 i
        [[0, 0.8, 0, 0], [0, 0, -2.5, 0], [0.8, 0, 0, 0], [0, 0, 0, 1]],
        (0.8, -20.0, 1.6), (2.4, -10.0, 4.0), (1.6, -15.0, 2.8),
    ),
    "oblique": (  # i, j rotated 30 degrees about z: x = c i - s j, y = s i + c j (1 mm voxels)
        [[C30, -S30, 0, 10], [S30, C30, 0, 20], [0, 0, 2, 0], [0, 0, 0, 1]],
        (10 + 2 * C30 - 3 * S30, 20 + 2 * S30 + 1 * C30, 8.0),
        (10 + 5 * C30 - 1 * S30, 20 + 5 * S30 + 3 * C30, 16.0),
        (10 + 3.5 * C30 - 2 * S30, 20 + 3.5 * S30 + 2 * C30, 12.0),
    ),
}
VOXEL_ML = {"RAS": 0.0016, "LPS": 0.0016, "permuted": 0.0016, "oblique": 0.002}


def _box_case() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[BOX] = 1
    i, j, k = np.indices(SHAPE)
    return mask, (i + 10 * j + 100 * k).astype(np.float32)


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_a_box_in_a_known_geometry(geometry: str) -> None:
    affine, low, high, centroid = GEOMETRIES[geometry]
    mask, image = _box_case()
    stats = organ_statistics(mask, image, np.array(affine, dtype=float), "liver", "CT")
    assert (stats.organ, stats.voxels, stats.intensity_unit) == ("liver", 60, "HU")
    assert stats.volume_ml == pytest.approx(60 * VOXEL_ML[geometry], rel=1e-12)
    # intensity i + 10 j + 100 k over a product of ranges: means and variances add;
    # the variance of n consecutive integers is (n^2 - 1) / 12
    assert stats.mean_intensity == pytest.approx(3.5 + 10 * 2 + 100 * 6, rel=1e-12)
    assert stats.std_intensity == pytest.approx(math.sqrt(15 / 12 + 100 * 8 / 12 + 10000 * 24 / 12), rel=1e-12)
    assert stats.bbox_min_mm == pytest.approx(low, abs=1e-9)
    assert stats.bbox_max_mm == pytest.approx(high, abs=1e-9)
    assert stats.centroid_mm == pytest.approx(centroid, abs=1e-9)
    assert (stats.touches_border, stats.border_sides) == (False, ())


@pytest.mark.parametrize(
    "geometry,box,sides",
    [
        ("RAS", (slice(0, 3), slice(2, 4), slice(2, 4)), ("L",)),  # i = 0: i runs to the right
        ("LPS", (slice(0, 3), slice(2, 4), slice(2, 4)), ("R",)),  # i = 0: i runs to the left
        ("LPS", (slice(3, 10), slice(2, 4), slice(2, 4)), ("L",)),
        ("LPS", (slice(3, 5), slice(0, 4), slice(2, 4)), ("A",)),
        ("LPS", (slice(3, 5), slice(2, 8), slice(2, 4)), ("P",)),
        ("LPS", (slice(3, 5), slice(2, 4), slice(9, 12)), ("S",)),
        ("LPS", (slice(3, 5), slice(2, 4), slice(0, 12)), ("I", "S")),
        ("LPS", (slice(0, 10), slice(0, 8), slice(0, 1)), ("A", "I", "L", "P", "R")),
        ("permuted", (slice(3, 10), slice(0, 4), slice(2, 4)), ("L", "S")),  # i superior, j right
        ("permuted", (slice(3, 5), slice(2, 4), slice(11, 12)), ("P",)),  # k posterior
        ("oblique", (slice(3, 5), slice(7, 8), slice(2, 4)), ("A",)),  # j is nearest to anterior
    ],
)
def test_border_sides(geometry: str, box: tuple[slice, ...], sides: tuple[str, ...]) -> None:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[box] = True
    stats = organ_statistics(mask, np.zeros(SHAPE, np.float32), np.array(GEOMETRIES[geometry][0]), "kidney", "MR")
    assert stats.touches_border and stats.border_sides == sides
    assert stats.to_dict()["border_sides"] == list(sides)


@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_an_empty_mask(organ: str, modality: str) -> None:
    stats = organ_statistics(np.zeros(SHAPE, np.uint8), np.ones(SHAPE), np.eye(4), organ, modality)
    assert stats == OrganStatistics(organ, 0, 0.0, None, None, INTENSITY_UNITS[modality], None, None, None, False, ())
    assert json.loads(json.dumps(stats.to_dict())) == {
        "organ": organ, "voxels": 0, "volume_ml": 0.0, "mean_intensity": None, "std_intensity": None,
        "intensity_unit": {"CT": "HU", "MR": "a.u."}[modality], "bbox_min_mm": None, "bbox_max_mm": None,
        "centroid_mm": None, "touches_border": False, "border_sides": [],
    }


def test_to_dict_is_json_ready_and_rounded() -> None:
    mask, image = _box_case()
    affine = np.array(GEOMETRIES["oblique"][0], dtype=float)
    affine[0, 3] -= 10 + 3.5 * C30 - 2 * S30 + 0.001  # centroid x = -0.001: rounds to 0.0, not -0.0
    stats = organ_statistics(mask, image, affine, "spleen", "CT")
    text = json.dumps(stats.to_dict())
    assert "-0.0," not in text
    assert json.loads(text) == {
        "organ": "spleen", "voxels": 60, "volume_ml": 0.12, "mean_intensity": 623.5,
        "std_intensity": round(math.sqrt(15 / 12 + 800 / 12 + 240000 / 12), 2), "intensity_unit": "HU",
        "bbox_min_mm": [round(-1.5 * C30 - S30 - 0.001, 2), round(20 + 2 * S30 + C30, 2), 8.0],
        "bbox_max_mm": [round(1.5 * C30 + S30 - 0.001, 2), round(20 + 5 * S30 + 3 * C30, 2), 16.0],
        "centroid_mm": [0.0, round(20 + 3.5 * S30 + 2 * C30, 2), 12.0],
        "touches_border": False, "border_sides": [],
    }


def test_intensities_are_float64_and_population_std() -> None:
    """float32 intensities of a large offset: the sums are float64, the std uses ddof 0."""
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1:3, 1:3, 1:3] = 1  # 8 voxels
    image = np.full((4, 4, 4), 1e7, dtype=np.float32)
    image[1:3, 1:3, 1] += 1  # four voxels of 1e7 + 1, four of 1e7
    image[0] = np.nan  # outside the mask: ignored
    stats = organ_statistics(mask, image, np.eye(4), "liver", "CT")
    assert stats.mean_intensity == 1e7 + 0.5 and stats.std_intensity == 0.5


@pytest.mark.parametrize(
    "mask,image,affine,organ,modality,message",
    [
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.eye(4), "liver", "CT", "mask must be bool or integer"),
        (np.full((2, 2, 2), 5, np.uint8), np.zeros((2, 2, 2)), np.eye(4), "liver", "CT", "mask values must be 0 or 1"),
        (np.zeros((2, 2), np.uint8), np.zeros((2, 2)), np.eye(4), "liver", "CT", "mask must be 3-D"),
        (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3)), np.eye(4), "liver", "CT",
         "mask shape 2x2x2 differs from intensities shape 2x2x3"),
        (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2)), np.eye(3), "liver", "CT", r"affine must be 4x4, got shape \(3, 3\)"),
        (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2)), np.diag([1, 1, np.nan, 1]), "liver", "CT", "non-finite"),
        (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2)), np.diag([1, 1, 0, 1]), "liver", "CT", "singular"),
        (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2)), np.eye(4), "lung", "CT", "organ must be one of"),
        (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2)), np.eye(4), "liver", "PET", "modality must be one of"),
        (np.ones((2, 2, 2), np.uint8), np.full((2, 2, 2), np.inf), np.eye(4), "liver", "CT",
         "intensities under the liver mask are not all finite"),
    ],
)
def test_bad_arguments(mask, image, affine, organ, modality, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        organ_statistics(mask, image, affine, organ, modality)


# --- the synthetic phantom ---------------------------------------------------------------

SEEDS = range(7)
INSIDE_SEED = 6  # every organ of this phantom lies well inside its field of view


@pytest.fixture(scope="module")
def phantoms() -> dict[int, object]:
    return {seed: make_phantom(seed, "CT") for seed in SEEDS}


def _stored_lps(image: np.ndarray, labels: np.ndarray, affine: np.ndarray):
    """The same scan stored with i and j reversed (LPS-like): the same world positions."""
    flipped = affine.copy()
    flipped[:3, 3] += (image.shape[0] - 1) * affine[:3, 0] + (image.shape[1] - 1) * affine[:3, 1]
    flipped[:3, :2] *= -1
    return image[::-1, ::-1], labels[::-1, ::-1], flipped


def _organ_mask(labels: np.ndarray, organ: str) -> np.ndarray:
    return label_to_mask(labels, ORGAN_LABEL_VALUES[organ])


@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("seed", SEEDS)
def test_phantom_volume_and_intensity_match_the_labels(phantoms, organ: str, seed: int) -> None:
    p = phantoms[seed]
    stats = organ_statistics(_organ_mask(p.labels, organ), p.image, p.affine, organ, "CT")
    inside = np.isin(p.labels, ORGAN_LABEL_VALUES[organ])
    voxel_mm3 = p.spacing[0] * p.spacing[1] * p.spacing[2]  # 3 x 3 x 5 mm = 45 mm^3
    assert stats.voxels == int(inside.sum()) > 1000
    assert stats.volume_ml == pytest.approx(inside.sum() * voxel_mm3 / 1000, rel=1e-12)
    values = p.image[inside].astype(np.float64)
    assert stats.mean_intensity == pytest.approx(values.mean(), rel=1e-12)
    assert stats.std_intensity == pytest.approx(values.std(), rel=1e-12)


@pytest.mark.parametrize("organ,tissue", [("liver", "liver"), ("spleen", "spleen")])
@pytest.mark.parametrize("seed", SEEDS)
def test_phantom_mean_hu_lies_in_the_tissue_range(phantoms, organ: str, tissue: str, seed: int) -> None:
    """The per-case mean is drawn in the tissue's range; texture, noise (zero mean), partial
    volume at the edges, and the liver's lesions and vessels move the mean under the label by
    a few HU at most: 10 HU of margin."""
    low, high = next(row.ct_hu for row in TISSUE_TABLE if row.name == tissue)
    p = phantoms[seed]
    stats = organ_statistics(_organ_mask(p.labels, organ), p.image, p.affine, organ, "CT")
    assert low - 10 <= stats.mean_intensity <= high + 10
    assert 5 <= stats.std_intensity <= 40  # noise 10-20 HU sd plus texture


@pytest.mark.parametrize("storage", ["RAS", "LPS"])
@pytest.mark.parametrize("seed", SEEDS)
def test_phantom_liver_is_right_of_the_spleen(phantoms, storage: str, seed: int) -> None:
    """RAS+: the liver (the patient's right) has the larger x; however the grid is stored."""
    p = phantoms[seed]
    image, labels, affine = (p.image, p.labels, p.affine) if storage == "RAS" else _stored_lps(p.image, p.labels, p.affine)
    liver = organ_statistics(_organ_mask(labels, "liver"), image, affine, "liver", "CT")
    spleen = organ_statistics(_organ_mask(labels, "spleen"), image, affine, "spleen", "CT")
    assert liver.centroid_mm[0] > spleen.centroid_mm[0] + 50  # about 12 cm apart
    assert liver.bbox_max_mm[0] > spleen.bbox_max_mm[0] and liver.bbox_min_mm[0] > spleen.bbox_min_mm[0]
    if storage == "LPS":  # the same world positions as the RAS-stored scan
        ras = organ_statistics(_organ_mask(p.labels, "liver"), p.image, p.affine, "liver", "CT")
        assert liver.centroid_mm == pytest.approx(ras.centroid_mm, abs=1e-9)
        assert liver.bbox_min_mm == pytest.approx(ras.bbox_min_mm, abs=1e-9)
        assert liver.bbox_max_mm == pytest.approx(ras.bbox_max_mm, abs=1e-9)
        assert (liver.voxels, liver.border_sides) == (ras.voxels, ras.border_sides)


@pytest.mark.parametrize("organ", ORGANS)
def test_phantom_organs_inside_the_field_of_view(phantoms, organ: str) -> None:
    p = phantoms[INSIDE_SEED]
    stats = organ_statistics(_organ_mask(p.labels, organ), p.image, p.affine, organ, "CT")
    assert (stats.touches_border, stats.border_sides) == (False, ())


@pytest.mark.parametrize("seed,organ,sides", [(0, "liver", ("S",)), (1, "kidney", ("I",))])
def test_phantom_cut_by_its_own_scan_range(phantoms, seed: int, organ: str, sides: tuple[str, ...]) -> None:
    """The phantom's scan range crops the liver dome (seed 0) and the lower renal poles (seed 1)."""
    p = phantoms[seed]
    stats = organ_statistics(_organ_mask(p.labels, organ), p.image, p.affine, organ, "CT")
    assert (stats.touches_border, stats.border_sides) == (True, sides)


# which end of which stored axis holds each side: (axis, "high" = the last index, or "low")
SIDE_OF = {
    "RAS": {"R": (0, "high"), "L": (0, "low"), "A": (1, "high"), "P": (1, "low"), "S": (2, "high"), "I": (2, "low")},
    "LPS": {"R": (0, "low"), "L": (0, "high"), "A": (1, "low"), "P": (1, "high"), "S": (2, "high"), "I": (2, "low")},
}


@pytest.mark.parametrize("storage", ["RAS", "LPS"])
@pytest.mark.parametrize("side", ["R", "L", "A", "P", "S", "I"])
@pytest.mark.parametrize("organ", ORGANS)
def test_a_scan_cropped_through_the_organ(phantoms, organ: str, side: str, storage: str) -> None:
    """Crop the scan so that its ``side`` face runs through the organ (a quarter into the slices
    holding it: through one kidney, not between the two; the affine's origin moved with a
    crop of the low end): that side is reported, and the box ends at the cut slice's world
    position."""
    p = phantoms[INSIDE_SEED]
    image, labels, affine = (p.image, p.labels, p.affine) if storage == "RAS" else _stored_lps(p.image, p.labels, p.affine)
    axis, end = SIDE_OF[storage][side]
    present = np.flatnonzero(np.moveaxis(_organ_mask(labels, organ), axis, 0).reshape(labels.shape[axis], -1).any(axis=1))
    cut = int(present[len(present) // 4])
    keep = [slice(None)] * 3
    keep[axis] = slice(0, cut + 1) if end == "high" else slice(cut, None)
    cropped = affine.copy()
    if end == "low":
        cropped[:3, 3] += cut * affine[:3, axis]
    mask = _organ_mask(labels[tuple(keep)], organ)
    stats = organ_statistics(mask, image[tuple(keep)], cropped, organ, "CT")
    assert (stats.touches_border, stats.border_sides) == (True, (side,))
    whole = organ_statistics(_organ_mask(labels, organ), image, affine, organ, "CT")
    assert 0 < stats.voxels < whole.voxels
    world_axis = int(np.argmax(np.abs(affine[:3, axis])))
    cut_mm = (affine @ np.r_[np.eye(3)[axis] * cut, 1.0])[world_axis]  # the cut slice's position
    box_end = stats.bbox_max_mm if side in ("R", "A", "S") else stats.bbox_min_mm
    assert box_end[world_axis] == pytest.approx(cut_mm, abs=1e-9)


def test_mr_intensities_in_arbitrary_units() -> None:
    p = make_phantom(INSIDE_SEED, "MR", shape=(48, 40, 12), spacing=(8.0, 9.6, 20.0))
    inside = label_to_mask(p.labels, ORGAN_LABEL_VALUES["kidney"])
    stats = organ_statistics(inside, p.image, p.affine, "kidney", "MR")
    assert stats.intensity_unit == "a.u." and stats.to_dict()["intensity_unit"] == "a.u."
    assert stats.mean_intensity == pytest.approx(p.image[inside == 1].astype(np.float64).mean(), rel=1e-12)
    assert stats.volume_ml == pytest.approx(inside.sum() * 8.0 * 9.6 * 20.0 / 1000, rel=1e-12)
