"""Tests of anunet_core.io.labels: a label grid onto its image's, exactly, or a one-line refusal."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from dicom_series import oblique_affine, rotation
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from testkit import REAL_MR, need_real_data

from anunet_core.io import LabelMismatchError, Volume, align_label_to_image, read_label_nifti, read_nifti

# ----------------------------------------------------------------------------------------------
# align_label_to_image
# ----------------------------------------------------------------------------------------------

_ORNTS = [
    np.array([[axis, flip] for axis, flip in zip(perm, flips)], dtype=float)
    for perm in itertools.permutations(range(3))
    for flips in itertools.product((1, -1), repeat=3)
]


def _reoriented(labels: np.ndarray, affine: np.ndarray, ornt: np.ndarray):
    """The same voxels stored in another axis order/direction (nibabel's own transform)."""
    return apply_orientation(labels, ornt), affine @ inv_ornt_aff(ornt, labels.shape)


@pytest.fixture(scope="module")
def image_and_labels():
    rng = np.random.default_rng(5)
    image = Volume(rng.normal(size=(7, 5, 4)).astype(np.float32), oblique_affine(), "CT", "img")
    labels = rng.integers(0, 6, size=(7, 5, 4)).astype(np.uint8)
    return image, labels


def _ornt_id(ornt) -> str:
    return "".join(f"{int(a)}{'+' if f > 0 else '-'}" for a, f in ornt)


@pytest.mark.parametrize("ornt", _ORNTS, ids=_ornt_id)
def test_align_label_permutations_and_flips(image_and_labels, ornt):
    image, labels = image_and_labels
    lab2, aff2 = _reoriented(labels, image.affine, ornt)
    out = align_label_to_image(lab2, aff2, image)
    assert out.dtype == labels.dtype
    np.testing.assert_array_equal(out, labels)


def test_align_label_identical_grid_returned_as_is(image_and_labels):
    image, labels = image_and_labels
    assert align_label_to_image(labels, image.affine.copy(), image) is labels


def _scaled(aff, factors):
    out = aff.copy()
    out[:3, :3] = out[:3, :3] @ np.diag(factors)
    return out


def _shifted(aff, voxels):
    out = aff.copy()
    out[:3, 3] = aff[:3, 3] + aff[:3, :3] @ np.asarray(voxels, float)
    return out


def _rotated(aff, degrees):
    out = aff.copy()
    out[:3, :3] = rotation((0, 0, 1), degrees) @ aff[:3, :3]
    return out


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda lab, aff: (lab, _scaled(aff, (1.0, 1.0, 1.2))), "spacing"),
        (lambda lab, aff: (lab, _shifted(aff, (0, 0, 1))), "shifted by"),
        (lambda lab, aff: (lab, _shifted(aff, (0.5, 0, 0))), "mm off"),
        (lambda lab, aff: (lab, _rotated(aff, 10.0)), "mm off"),
        (lambda lab, aff: (lab, _rotated(aff, 45.0)), "rotated"),
        (lambda lab, aff: (lab[:, :, :3], aff), "grid 7x5x3 .* does not cover image grid 7x5x4"),
        (lambda lab, aff: (np.pad(lab, ((0, 1), (0, 0), (0, 0))), aff), "is larger than"),
        (lambda lab, aff: (lab[..., 0], aff), "3-D"),
    ],
    ids=["spacing", "shift-1-voxel", "shift-half-voxel", "rotation-10", "rotation-45",
         "smaller", "larger", "2d"],
)
def test_align_label_mismatch_raises(image_and_labels, make, message):
    image, labels = image_and_labels
    lab, aff = make(labels, image.affine)
    with pytest.raises(LabelMismatchError, match=message) as exc:
        align_label_to_image(lab, aff, image)
    assert "\n" not in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_align_label_tolerates_float32_affine_rounding(image_and_labels):
    image, labels = image_and_labels
    lab2, aff2 = _reoriented(labels, image.affine, _ORNTS[13])
    out = align_label_to_image(lab2, aff2.astype(np.float32).astype(np.float64), image)
    np.testing.assert_array_equal(out, labels)


def test_real_ct_labels_align_through_affines(real_ct):
    image, labels, label_affine = real_ct
    assert nib.aff2axcodes(label_affine) == ("L", "A", "S")
    aligned = align_label_to_image(labels, label_affine, image)
    assert aligned.shape == image.shape and aligned.dtype == np.uint8
    # Independent route: nibabel's orientation transform between the two axis codes.
    transform = ornt_transform(io_orientation(label_affine), io_orientation(image.affine))
    np.testing.assert_array_equal(aligned, apply_orientation(labels, transform))
    for value in (1, 5):  # spleen, liver
        assert (aligned == value).sum() == (labels == value).sum() > 10_000
        hu_aligned = float(image.array[aligned == value].mean())
        hu_raw = float(image.array[labels == value].mean())  # deliberately not aligned
        assert 0 < hu_aligned < 200, (value, hu_aligned)
        assert not 0 < hu_raw < 200, (value, hu_raw)
        assert hu_aligned - hu_raw > 100


def test_real_mr_labels_on_the_same_grid():
    image = read_nifti(need_real_data(REAL_MR / "image.nii.gz"), "MR")
    labels, label_affine = read_label_nifti(need_real_data(REAL_MR / "labels.nii.gz"))
    assert image.shape == labels.shape == (117, 91, 20)
    np.testing.assert_allclose(image.spacing, (3.0, 3.0, 3.0), atol=1e-4)
    aligned = align_label_to_image(labels, label_affine, image)
    voxel_ml = float(np.prod(image.spacing)) / 1000.0
    for value in (1, 2, 3, 5):
        before = (labels == value).sum() * float(np.prod(image.spacing)) / 1000.0
        after = (aligned == value).sum() * voxel_ml
        assert after == pytest.approx(before)
    assert 100 < (aligned == 5).sum() * voxel_ml < 5000  # a liver, in mL
