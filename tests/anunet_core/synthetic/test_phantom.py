"""Tests of anunet_core.synthetic.phantom: reproducibility, arrays, geometry and argument checks."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest

from anunet_core import synthetic as syn
from anunet_core.synthetic import make_phantom
from anunet_core.vocabulary import MODALITIES, TOTALSEG_LABELS


@pytest.mark.parametrize("modality", MODALITIES)
def test_same_seed_same_arrays_other_seed_differs(small_grid, modality):
    a, b, c = (make_phantom(s, modality, **small_grid) for s in (5, 5, 6))
    for name in ("image", "labels", "lesions", "tissue", "affine"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


def test_modalities_share_the_anatomy_of_a_seed(small_grid):
    ct, mr = make_phantom(8, "CT", **small_grid), make_phantom(8, "MR", **small_grid)
    np.testing.assert_array_equal(ct.labels, mr.labels)
    np.testing.assert_array_equal(ct.affine, mr.affine)
    assert not np.array_equal(ct.image, mr.image)


@pytest.mark.parametrize("modality", MODALITIES)
def test_arrays_dtypes_and_geometry(cohort, modality):
    p = cohort[modality][0]
    assert p.image.shape == p.labels.shape == p.lesions.shape == syn.DEFAULT_SHAPE
    assert (p.image.dtype, p.labels.dtype, p.lesions.dtype) == (np.float32, np.uint8, bool)
    np.testing.assert_array_equal(p.image, np.rint(p.image))  # whole numbers: DICOM-exact
    assert nib.aff2axcodes(p.affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.diag(p.affine)[:3], syn.DEFAULT_SPACING)
    centre = p.affine @ np.append((np.array(p.shape) - 1) / 2, 1.0)
    np.testing.assert_allclose(centre[:2], 0.0, atol=1e-9)  # field of view on the isocentre
    assert p.spacing == syn.DEFAULT_SPACING
    assert set(np.unique(p.labels)) <= {0, *TOTALSEG_LABELS.values()}
    assert {1, 2, 3, 5} <= set(np.unique(p.labels))
    if modality == "CT":
        assert p.image.min() >= -1024
    else:
        assert p.image.min() >= 0


def test_one_ct_phantom_takes_well_under_a_second():
    make_phantom(0, "CT")  # warm-up
    start = time.process_time()  # CPU time: other processes on the machine do not count
    make_phantom(1, "CT")
    assert time.process_time() - start < 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"modality": "PET"}, "modality"),
        ({"modality": "CT", "sequence": "T1"}, "sequence"),
        ({"modality": "MR", "sequence": "FLAIR"}, "sequence"),
        ({"modality": "CT", "shape": (64, 64)}, "shape"),
        ({"modality": "CT", "spacing": (1.0, 0.0, 1.0)}, "spacing"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_phantom(0, **kwargs)


def test_case_seed_spreads_archive_seeds_apart():
    assert syn.case_seed(0, 3) == 3
    assert syn.case_seed(4, 1) == 4 * 100003 + 1
