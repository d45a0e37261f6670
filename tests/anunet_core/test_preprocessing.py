"""Tests for anunet_core.preprocessing: intensity, reorientation, resize and the inverse."""

from __future__ import annotations

import json
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from anunet_core.preprocessing import (
    CT_WINDOW_HU,
    MR_PERCENTILES,
    OUTPUT_RANGE,
    PREPROCESSING_VERSION,
    label_slices,
    label_to_mask,
    normalize_intensity,
    preprocess_label,
    preprocess_volume,
    restore_label_map,
    restore_mask,
)
from anunet_core.io import SliceGeometry, Volume, align_label_to_image
from anunet_core.vocabulary import ORGAN_MAP_VALUES, ORGANS, validate_organ

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def _zeros(shape, affine=None) -> Volume:
    return Volume(np.zeros(shape, np.float32), np.eye(4) if affine is None else affine, "CT", "c")


def _oblique(affine: np.ndarray, degrees: float = 12.0) -> np.ndarray:
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    out = affine.copy()
    out[:3, :3] = rot @ affine[:3, :3]
    return out


_RAS_AFF = np.diag([0.8, 0.8, 2.5, 1.0])
_DICOM_AFF = LPS_TO_RAS @ np.array(  # standard axial DICOM: i -> L, j -> P
    [[0.8, 0, 0, -100.0], [0, 0.8, 0, -80.0], [0, 0, 2.5, 40.0], [0, 0, 0, 1]]
)
# A coronal acquisition: i -> L, j -> I (down), k -> A; in-plane axes are not axial.
_CORONAL_AFF = np.array([[-0.8, 0, 0, 10.0], [0, 0, 2.5, 5.0], [0, -0.8, 0, 7.0], [0, 0, 0, 1]])
ORIENTED_AFFINES = {
    "ras": _RAS_AFF,
    "dicom-lps": _DICOM_AFF,
    "las": np.diag([-0.8, 0.8, 2.5, 1.0]),
    "coronal": _CORONAL_AFF,
    "oblique-lps": _oblique(_DICOM_AFF),
}


# ----------------------------------------------------------------------------------------------
# Intensity
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hu, expected",
    [(-3000, 0.0), (-1000, 0.0), (-200, 0.0), (-100, 0.25), (0, 0.5), (100, 0.75), (200, 1.0),
     (1000, 1.0), (3000, 1.0)],
)
def test_ct_window(hu, expected):
    out, window, pct = normalize_intensity(np.full((2, 2, 2), hu, np.float32), "CT")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert window == CT_WINDOW_HU == (-200.0, 200.0) and pct is None
    assert OUTPUT_RANGE == (0.0, 1.0)


def test_ct_window_end_to_end_through_preprocess_volume():
    hu = np.array([-1000.0, 0.0, 1000.0, 100.0], np.float32)
    array = np.broadcast_to(hu[:, None, None], (4, 4, 3)).copy()  # i varies, j/k constant
    slices, geometry = preprocess_volume(Volume(array, np.eye(4), "CT", "c"), size=4)
    assert slices.shape == (3, 4, 4)
    # RAS volume: column c of the radiological view is i = 3 - c.
    np.testing.assert_allclose(slices[0, 0], [0.75, 1.0, 0.5, 0.0], atol=1e-6)
    assert geometry.intensity_window == (-200.0, 200.0) and geometry.modality == "CT"


def test_mr_normalisation_robust_to_an_outlier():
    rng = np.random.default_rng(0)
    body = rng.normal(300.0, 40.0, size=(40, 40, 10)).astype(np.float32)
    body[:5] = 0.0  # zero padding, left out of the percentiles
    spiked = body.copy()
    spiked[20, 20, 5] = 1e7  # one hot voxel
    a, win_a, pct = normalize_intensity(body, "MR")
    b, win_b, _ = normalize_intensity(spiked, "MR")
    assert pct == MR_PERCENTILES == (0.5, 99.5)
    np.testing.assert_allclose(win_a, win_b, rtol=0.01)
    fg = body != 0
    expected = np.percentile(body[fg], [0.5, 99.5])
    np.testing.assert_allclose(win_a, expected, rtol=1e-5)
    assert win_a[0] > 150  # zeros did not pull the lower percentile down
    assert b[20, 20, 5] == 1.0 and a.min() == 0.0 and a.max() == 1.0
    mask = np.ones_like(fg)
    mask[20, 20, 5] = False
    np.testing.assert_allclose(a[mask], b[mask], atol=0.01)
    assert 0.4 < float(np.median(b[fg])) < 0.6


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_intensity_degenerate_inputs(modality):
    const = np.full((3, 3, 3), 7.0, np.float32)
    out, _, _ = normalize_intensity(const, modality)
    assert np.all(np.isfinite(out))
    with_nan = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    with_nan[0, 0, 0] = np.nan
    with_nan[1, 1, 1] = np.inf
    out, window, _ = normalize_intensity(with_nan, modality)
    assert np.all(np.isfinite(out)) and out[0, 0, 0] == 0.0 and out[1, 1, 1] == 0.0
    assert np.all(np.isfinite(window))
    with pytest.raises(ValueError, match="modality"):
        normalize_intensity(const, "PET")


@pytest.mark.parametrize("modality", ["CT", "MR"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_scan_without_a_finite_voxel_is_refused(modality: str, value: float) -> None:
    volume = Volume(np.full((8, 8, 3), value, np.float32), np.eye(4), modality, case_id="broken")
    with pytest.raises(ValueError, match="broken: the scan has no finite voxel"):
        preprocess_volume(volume, size=8)


# ----------------------------------------------------------------------------------------------
# Geometry record
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["CT", "MR"])
@pytest.mark.parametrize("name", list(ORIENTED_AFFINES))
def test_geometry_json_round_trip(name, modality):
    rng = np.random.default_rng(1)
    array = rng.normal(100, 50, (9, 7, 5)).astype(np.float32)
    vol = Volume(array, ORIENTED_AFFINES[name], modality, "c")
    _, geometry = preprocess_volume(vol, size=16)
    text = json.dumps(geometry.to_dict())
    back = SliceGeometry.from_dict(json.loads(text))
    assert back == geometry
    assert back.version == PREPROCESSING_VERSION
    assert geometry.original_shape == (9, 7, 5) and geometry.size == 16
    np.testing.assert_array_equal(back.affine, vol.affine)
    assert (geometry.percentiles is None) == (modality == "CT")


def test_geometry_from_dict_validates():
    _, geometry = preprocess_volume(_zeros((4, 4, 2)), 4)
    data = geometry.to_dict()
    with pytest.raises(ValueError, match="missing keys"):
        SliceGeometry.from_dict({k: v for k, v in data.items() if k != "ornt"})
    with pytest.raises(ValueError, match="unknown keys"):
        SliceGeometry.from_dict({**data, "colour": "red"})
    with pytest.raises(ValueError, match="orientation"):
        SliceGeometry.from_dict({**data, "ornt": [[0, 1], [0, 1], [2, 1]]})


def test_geometry_pixel_spacing_and_slice_count():
    vol = Volume(np.zeros((100, 80, 6), np.float32), _CORONAL_AFF, "CT", "c")
    slices, geometry = preprocess_volume(vol, size=50)
    # coronal volume: the axial (S) axis is j (80 voxels); in-plane: A (k, 6) x R (i, 100)
    assert geometry.num_slices == 80 and slices.shape == (80, 50, 50)
    assert geometry.inplane_shape == (6, 100)
    np.testing.assert_allclose(geometry.pixel_spacing_mm, (2.5 * 6 / 50, 0.8 * 100 / 50))
    assert nib.aff2axcodes(geometry.canonical_affine) == ("R", "A", "S")


# ----------------------------------------------------------------------------------------------
# Orientation
# ----------------------------------------------------------------------------------------------


def _anatomy(shape=(12, 10, 6)) -> np.ndarray:
    """An asymmetric RAS-ordered test volume: value = 100*x + 10*y + z (+ noise-free)."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (100 * x + 10 * y + z).astype(np.float32)


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "PIR", "SAL", "ILA"])
def test_same_anatomy_same_slices_whatever_the_storage_order(codes):
    ras = _anatomy()
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    ornt = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(codes)))
    stored = apply_orientation(ras, ornt)
    stored_affine = affine @ inv_ornt_aff(ornt, ras.shape)
    assert "".join(nib.aff2axcodes(stored_affine)) == codes
    ref, _ = preprocess_volume(Volume(ras, affine, "MR", "a"), size=8)
    got, geometry = preprocess_volume(Volume(stored, stored_affine, "MR", "b"), size=8)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert geometry.num_slices == 6


def test_radiological_view_equals_dicom_pixel_array():
    """For a standard axial DICOM series the model sees pixel_array (rows A->P, cols R->L)."""
    rng = np.random.default_rng(2)
    pixel_arrays = rng.normal(0, 100, size=(4, 6, 6)).astype(np.float32)  # (K, rows, cols)
    array = np.stack([p.T for p in pixel_arrays], axis=-1)  # the DICOM reader's layout
    slices, geometry = preprocess_volume(Volume(array, _DICOM_AFF, "CT", "c"), size=6)
    assert geometry.inplane_shape == (6, 6)
    normalised, _, _ = normalize_intensity(pixel_arrays, "CT")
    np.testing.assert_allclose(slices, normalised, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Labels and the inverse
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ORIENTED_AFFINES))
def test_restore_is_exact_inverse_at_native_size(name):
    rng = np.random.default_rng(3)
    affine = ORIENTED_AFFINES[name]
    shape = (16, 16, 16) if name == "coronal" else (16, 16, 5)
    vol = Volume(rng.normal(size=shape).astype(np.float32), affine, "CT", "c")
    labels = (rng.random(shape) > 0.6).astype(np.uint8)
    slices, geometry = preprocess_volume(vol, size=16)
    assert geometry.inplane_shape == (16, 16)
    label_slices = preprocess_label(labels, geometry)
    assert label_slices.dtype == np.uint8 and label_slices.shape == slices.shape
    restored = restore_mask(label_slices, geometry)
    assert restored.dtype == np.uint8 and restored.shape == shape
    np.testing.assert_array_equal(restored, labels)


def _blob(shape, center, radii) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii))
    return (dist <= 1.0).astype(np.uint8)


@pytest.mark.parametrize("name", ["ras", "dicom-lps", "oblique-lps"])
def test_restore_after_512_to_256_to_512(name):
    shape = (512, 512, 3)
    blob = _blob(shape, (230, 290, 1), (90, 60, 3))
    vol = Volume(np.zeros(shape, np.float32), ORIENTED_AFFINES[name], "CT", "c")
    _, geometry = preprocess_volume(vol, size=256)
    label_slices = preprocess_label(blob, geometry)
    assert label_slices.shape == (3, 256, 256)
    assert abs(int(label_slices.sum()) * 4 - int(blob.sum())) < 0.02 * blob.sum()
    restored = restore_mask(label_slices, geometry)
    assert restored.shape == shape
    assert _dice(restored, blob) > 0.97


def test_restore_non_square_inplane_and_probabilities():
    shape = (60, 40, 4)  # in-plane 40 rows x 60 cols in the radiological view
    blob = _blob(shape, (30, 20, 2), (18, 12, 3))
    vol = Volume(np.zeros(shape, np.float32), np.eye(4), "MR", "c")
    _, geometry = preprocess_volume(vol, size=32)
    label_slices = preprocess_label(blob, geometry).astype(np.float32)
    probs = 0.1 + 0.8 * label_slices  # soft probabilities, same decision at 0.5
    restored = restore_mask(torch.from_numpy(probs)[:, None], geometry)  # (K, 1, S, S) tensor
    assert restored.shape == shape and _dice(restored, blob) > 0.93
    assert restore_mask(probs, geometry, threshold=0.95).sum() == 0


def test_restore_rejects_bad_input():
    _, geometry = preprocess_volume(_zeros((8, 8, 3)), 8)
    with pytest.raises(ValueError, match="logits"):
        restore_mask(np.full((3, 8, 8), 3.0, np.float32), geometry)
    with pytest.raises(ValueError, match="expected"):
        restore_mask(np.zeros((2, 8, 8), np.float32), geometry)
    with pytest.raises(ValueError, match="label shape"):
        preprocess_label(np.zeros((8, 8, 2), np.uint8), geometry)


def test_preprocess_label_keeps_label_values():
    rng = np.random.default_rng(4)
    labels = rng.choice([0, 1, 2, 3, 5], size=(40, 40, 2)).astype(np.int16)
    _, geometry = preprocess_volume(_zeros((40, 40, 2), _DICOM_AFF), 20)
    out = preprocess_label(labels, geometry)
    assert out.dtype == np.uint8 and out.shape == (2, 20, 20)
    assert set(np.unique(out)) <= {0, 1, 2, 3, 5}
    # nearest-exact picks source pixel 2r+1, 2c+1 of each radiological-view slice
    view = labels[::-1, ::-1, :].transpose(2, 1, 0)[:, ::-1, ::-1]  # LPS -> RAS flips, then view
    np.testing.assert_array_equal(out, view[:, 1::2, 1::2])


@pytest.mark.parametrize(
    "values, expected",
    [({5}, [0, 0, 0, 0, 1, 0]), ({2, 3}, [0, 0, 1, 1, 0, 0]), ([1], [0, 1, 0, 0, 0, 0])],
)
def test_label_to_mask(values, expected):
    labels = np.array([0, 1, 2, 3, 5, 117], dtype=np.uint8)
    out = label_to_mask(labels, values)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_label_to_mask_and_organs_validation():
    with pytest.raises(ValueError):
        label_to_mask(np.zeros(3, np.uint8), set())
    assert ORGANS == ("liver", "spleen", "kidney")
    assert validate_organ(" Liver ") == "liver"
    with pytest.raises(ValueError, match="organ"):
        validate_organ("pancreas")


# ----------------------------------------------------------------------------------------------
# Several organs: one label map
# ----------------------------------------------------------------------------------------------

# (source shape, affine name, model size): square and non-square in-plane shapes, flipped and
# permuted storage orders, up- and down-sampling, and more slices than one chunk (70 > 64).
LABEL_MAP_GEOMETRIES = [
    ((20, 12, 5), "ras", 16),
    ((20, 12, 5), "dicom-lps", 8),
    ((9, 70, 7), "coronal", 12),
    ((14, 10, 4), "las", 14),
    ((18, 18, 3), "oblique-lps", 18),
    ((11, 13, 70), "dicom-lps", 6),
]


def _geometry(shape, name: str, size: int) -> SliceGeometry:
    return preprocess_volume(_zeros(shape, ORIENTED_AFFINES[name]), size)[1]


def _smooth_probabilities(shape, seed: int) -> np.ndarray:
    """Blobby probabilities in [0, 1] (many values near the threshold after resizing)."""
    coarse = torch.from_numpy(np.random.default_rng(seed).random((shape[0], 1, 3, 3), dtype=np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=tuple(shape[1:]), mode="bilinear", align_corners=False)
    return fine[:, 0].numpy()


@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("shape, name, size", LABEL_MAP_GEOMETRIES)
def test_one_organ_label_map_is_restore_mask_times_its_value(organ, shape, name, size):
    geometry = _geometry(shape, name, size)
    probs = _smooth_probabilities((geometry.num_slices, size, size), seed=size)
    value = ORGAN_MAP_VALUES[organ]
    expected = restore_mask(probs, geometry) * np.uint8(value)
    assert expected.dtype == np.uint8 and 0 < np.count_nonzero(expected) < expected.size
    half = probs[None].astype(np.float16)  # the segment job's stored dtype, read-only as decoded
    half.flags.writeable = False
    np.testing.assert_array_equal(restore_label_map(half, geometry, [value])[0],
                                  restore_mask(half[0], geometry) * np.uint8(value))
    for given in (probs[None], probs[None].astype(np.float64), torch.from_numpy(probs[None])):
        label_map, overlap, lost = restore_label_map(given, geometry, [value])
        assert label_map.dtype == np.uint8 and label_map.shape == shape and label_map.flags.c_contiguous
        np.testing.assert_array_equal(label_map, expected)
        assert overlap.dtype == lost.dtype == np.int64 and overlap.tolist() == lost.tolist() == [0]
    high = restore_label_map(probs[None], geometry, [value], threshold=0.7)[0]
    np.testing.assert_array_equal(high, restore_mask(probs, geometry, threshold=0.7) * np.uint8(value))


@pytest.mark.parametrize("shape, name, size", LABEL_MAP_GEOMETRIES)
def test_label_map_of_three_organs_agrees_with_each_organs_mask(shape, name, size):
    geometry = _geometry(shape, name, size)
    values = [ORGAN_MAP_VALUES[organ] for organ in ORGANS]
    probs = np.stack([_smooth_probabilities((geometry.num_slices, size, size), seed=n) for n in range(3)])
    label_map, overlap, lost = restore_label_map(probs, geometry, values)
    masks = np.stack([restore_mask(p, geometry).astype(bool) for p in probs])
    claims = masks.sum(axis=0)
    assert (claims > 1).any() and (claims == 1).any(), "the case must have overlaps and sole claims"
    np.testing.assert_array_equal(label_map[claims == 0], 0)
    sole = claims == 1
    np.testing.assert_array_equal(label_map[sole], np.array(values, np.uint8)[np.argmax(masks, axis=0)][sole])
    for o, value in enumerate(values):
        assert not (label_map == value)[~masks[o]].any(), "a voxel only goes to an organ that claims it"
        assert overlap[o] == np.count_nonzero(masks[o] & (claims > 1))
        assert lost[o] == np.count_nonzero(masks[o] & (label_map != value))
    assert lost.sum() == (claims - 1).clip(0).sum()  # each shared voxel: all claimants but one lose it


def _ruled_probabilities():
    """Five pixels of one slice, one column each (liver, spleen, kidney): the winner rule by hand."""
    return np.array(
        [
            # a: liver only, b: spleen beats liver, c: spleen ties kidney, d: 0.5 is not above, e: all three
            [0.9, 0.6, 0.0, 0.5, 0.9],
            [0.1, 0.8, 0.7, 0.5, 0.95],
            [0.2, 0.0, 0.7, 0.5, 0.6],
        ],
        np.float32,
    )


@pytest.mark.parametrize("order", [ORGANS, ORGANS[::-1], ("kidney", "liver", "spleen"), ("spleen", "kidney", "liver")])
def test_winner_rule_overlap_and_lost_by_hand(order):
    per_organ = dict(zip(ORGANS, _ruled_probabilities()))
    probs = np.stack([per_organ[organ] for organ in order])[:, None, None, :]  # (3, K=1, 1, 5)
    values = [ORGAN_MAP_VALUES[organ] for organ in order]
    tie = "spleen" if order.index("spleen") < order.index("kidney") else "kidney"
    winners = ["liver", "spleen", tie, None, "spleen"]
    expected = [ORGAN_MAP_VALUES[w] if w else 0 for w in winners]
    np.testing.assert_array_equal(label_slices(probs, values), [[expected]])
    overlap = {"liver": 2, "spleen": 3, "kidney": 2}  # b, e / b, c, e / c, e
    lost = {"liver": 2, "spleen": int(tie == "kidney"), "kidney": 2 if tie == "spleen" else 1}  # e always
    # The same on the source grid: a 5 x 5 x 1 scan at native size (restoring only reorients),
    # each of its 5 rows the five pixels.
    geometry = _geometry((5, 5, 1), "ras", 5)
    label_map, got_overlap, got_lost = restore_label_map(np.repeat(probs, 5, axis=2), geometry, values)
    np.testing.assert_array_equal(preprocess_label(label_map, geometry), np.repeat([[expected]], 5, axis=1))
    np.testing.assert_array_equal(got_overlap, [5 * overlap[organ] for organ in order])
    np.testing.assert_array_equal(got_lost, [5 * lost[organ] for organ in order])


@pytest.mark.parametrize("organ", ORGANS)
def test_label_slices_is_the_label_map_in_the_model_view(organ):
    geometry = _geometry((16, 16, 70), "dicom-lps", 16)  # native size: restoring is reorienting only
    probs = np.stack([_smooth_probabilities((70, 16, 16), seed=n) for n in range(3)])
    before = probs.copy()
    first = ORGANS.index(organ)  # each organ listed first in turn
    order = [first, *(n for n in range(3) if n != first)]
    values = [ORGAN_MAP_VALUES[ORGANS[n]] for n in order]
    view = label_slices(probs[order], values)
    assert view.dtype == np.uint8 and view.shape == (70, 16, 16)
    label_map, _, _ = restore_label_map(probs[order], geometry, values)
    np.testing.assert_array_equal(preprocess_label(label_map, geometry), view)
    np.testing.assert_array_equal(probs, before)  # the caller's probabilities are never written


@pytest.mark.parametrize(
    "probs_shape, values, message",
    [
        ((3, 5, 8, 8), (1, 2, 3), "differs from expected"),  # 5 slices, the geometry has 3
        ((3, 3, 8, 4), (1, 2, 3), "differs from expected"),
        ((3, 8, 8), (1, 2, 3), "must be \\(O, K, S, S\\)"),
        ((0, 3, 8, 8), (), "must be \\(O, K, S, S\\)"),
        ((2, 3, 8, 8), (1, 2, 3), "one label value per organ \\(2\\)"),
        ((2, 3, 8, 8), (1, 0), "integers in 1..255, got \\(1, 0\\)"),
        ((2, 3, 8, 8), (1, 256), "integers in 1..255"),
        ((2, 3, 8, 8), (1, 2.0), "integers in 1..255"),
        ((2, 3, 8, 8), (True, 2), "integers in 1..255"),
        ((2, 3, 8, 8), (3, 3), "distinct, got \\(3, 3\\)"),
    ],
)
def test_restore_label_map_rejects_bad_shapes_and_values(probs_shape, values, message):
    geometry = _geometry((8, 8, 3), "ras", 8)
    with pytest.raises(ValueError, match=message):
        restore_label_map(np.zeros(probs_shape, np.float32), geometry, values)
    if "expected" not in message:
        with pytest.raises(ValueError, match=message):
            label_slices(np.zeros(probs_shape, np.float32), values)


@pytest.mark.parametrize("bad, shown", [(3.0, "3"), (-0.5, "-0.5"), (np.nan, "nan")])
@pytest.mark.parametrize("organ", ORGANS)
def test_restore_label_map_rejects_values_outside_0_1(organ, bad, shown):
    geometry = _geometry((8, 8, 3), "ras", 8)
    probs = np.full((3, 3, 8, 8), 0.25, np.float32)
    probs[ORGANS.index(organ), 1, 2, 3] = bad
    values = [ORGAN_MAP_VALUES[o] for o in ORGANS]
    value = ORGAN_MAP_VALUES[organ]
    message = f"slices of label value {value} must be probabilities in \\[0, 1\\], got range .*{shown}.*logits"
    with pytest.raises(ValueError, match=message):
        restore_label_map(probs, geometry, values)
    with pytest.raises(ValueError, match="logits"):
        label_slices(probs, values)
    with pytest.raises(ValueError, match="must be numbers"):
        label_slices(np.zeros((1, 1, 2, 2), dtype="<U1"), [1])


def test_restore_label_map_holds_no_full_size_float_volume():
    geometry = _geometry((128, 128, 320), "ras", 64)  # 5 chunks of 64 slices
    probs = np.stack([_smooth_probabilities((320, 64, 64), seed=n) for n in range(3)])
    full_float = 128 * 128 * 320 * 4  # one organ's probabilities on the source grid (21 MB)
    tracemalloc.start()
    try:
        label_map, _, _ = restore_label_map(probs, geometry, [1, 2, 3])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert label_map.shape == (128, 128, 320)
    assert peak < 1.5 * full_float, f"peak {peak / 1e6:.1f} MB"


# ----------------------------------------------------------------------------------------------
# Real CT (TotalSegmentator reference files)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_ct_aligned(real_ct):
    """The real CT series and its labels on its own voxel grid."""
    image, labels, affine = real_ct
    return image, align_label_to_image(labels, affine, image)


def test_real_ct_preprocess_and_restore(real_ct_aligned):
    image, labels = real_ct_aligned
    slices, geometry = preprocess_volume(image)
    assert slices.shape == (20, 256, 256) and slices.dtype == np.float32
    assert slices.min() >= 0.0 and slices.max() <= 1.0
    assert geometry.inplane_shape == (512, 512)
    liver = label_to_mask(labels, {5})
    liver_slices = preprocess_label(liver, geometry)
    # The liver is soft tissue: inside the window, around mid-range (~0.6 for ~+50..+100 HU).
    assert 0.5 < float(slices[liver_slices == 1].mean()) < 0.8
    restored = restore_mask(liver_slices, geometry)
    assert restored.shape == image.shape
    assert _dice(restored, liver) > 0.97
    spleen = label_to_mask(labels, {1})
    assert _dice(restore_mask(preprocess_label(spleen, geometry), geometry), spleen) > 0.97
    native = SliceGeometry.from_dict({**geometry.to_dict(), "size": 512})  # no resizing
    np.testing.assert_array_equal(restore_mask(preprocess_label(liver, native), native), liver)
