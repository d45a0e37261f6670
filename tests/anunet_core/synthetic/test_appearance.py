"""Tests of anunet_core.synthetic.appearance: CT intensities per tissue (HU), the liver-spleen
overlap across cases, and the MR contrasts of each sequence."""

from __future__ import annotations

import numpy as np
import pytest

from anunet_core.synthetic import TISSUES, make_phantom
from anunet_core.vocabulary import TOTALSEG_LABELS

TISSUE = {name: t for t, name in TISSUES.items()}


def test_ct_intensities_by_tissue(cohort):
    for p in cohort["CT"][:4]:
        img, t = p.image, p.tissue
        assert abs(img[t == TISSUE["air"]].mean() + 1000) < 15
        assert -130 < img[t == TISSUE["fat"]].mean() < -70
        liver = (p.labels == TOTALSEG_LABELS["liver"]) & ~p.lesions
        assert 100 <= np.median(img[liver]) <= 145
        assert 105 <= np.median(img[p.labels == TOTALSEG_LABELS["spleen"]]) <= 155
        assert 145 <= np.median(img[t == TISSUE["renal_cortex"]]) <= 205
        assert np.median(img[p.lesions]) < np.median(img[liver]) - 20  # hypodense lesions
        vertebrae = ((p.labels >= TOTALSEG_LABELS["vertebrae_S1"])
                     & (p.labels <= TOTALSEG_LABELS["vertebrae_T1"]))
        assert img[vertebrae].mean() > 300
        assert np.percentile(img[vertebrae], 90) > 500
        assert img[t == TISSUE["lung"]].mean() < -700


def test_liver_and_spleen_overlap_in_hu_across_cases(cohort):
    """Neither organ is always the brighter one: intensity alone cannot tell them apart."""
    diff = [np.median(p.image[p.labels == TOTALSEG_LABELS["liver"]])
            - np.median(p.image[p.labels == TOTALSEG_LABELS["spleen"]]) for p in cohort["CT"]]
    assert min(diff) < 0 < max(diff)


@pytest.mark.parametrize("sequence", ["T1", "T2SPIR"])
def test_mr_contrasts_differ_from_ct(sequence):
    for seed in (11, 12, 13):
        p = make_phantom(seed, "MR", sequence=sequence)
        liver = np.median(p.image[(p.labels == TOTALSEG_LABELS["liver"]) & ~p.lesions])
        spleen = np.median(p.image[p.labels == TOTALSEG_LABELS["spleen"]])
        fat = np.median(p.image[p.tissue == TISSUE["fat"]])
        if sequence == "T1":
            assert liver > spleen and fat > liver
        else:  # fat suppressed T2: spleen brighter than liver, fat dark
            assert spleen > liver > fat
        assert p.sequence == sequence
