"""Tests of anunet_core.synthetic.anatomy: where the organs lie, their sizes, that each is one
piece, and the lesions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anunet_core import synthetic as syn
from anunet_core.synthetic import Phantom
from anunet_core.vocabulary import ORGAN_LABEL_VALUES, ORGANS, TOTALSEG_LABELS


def _vertebrae(p: Phantom) -> np.ndarray:
    return (p.labels >= TOTALSEG_LABELS["vertebrae_S1"]) & (p.labels <= TOTALSEG_LABELS["vertebrae_T1"])


def _world_centroid(p: Phantom, mask: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).mean(axis=0)
    return (p.affine @ np.append(ijk, 1.0))[:3]


def test_liver_on_the_patients_right_kidneys_below(cohort):
    # RAS+: world x grows toward the patient's right, z toward the head
    for p in cohort["CT"]:
        liver = _world_centroid(p, p.labels == TOTALSEG_LABELS["liver"])
        spleen = _world_centroid(p, p.labels == TOTALSEG_LABELS["spleen"])
        k_right = _world_centroid(p, p.labels == TOTALSEG_LABELS["kidney_right"])
        k_left = _world_centroid(p, p.labels == TOTALSEG_LABELS["kidney_left"])
        spine = _world_centroid(p, _vertebrae(p))
        assert liver[0] > spleen[0] + 50
        assert k_right[0] > spine[0] > k_left[0]
        assert liver[2] > max(k_right[2], k_left[2])
        assert spleen[1] < liver[1] and spine[1] < liver[1]  # spleen, spine posterior


def test_organ_volumes_in_a_plausible_range(cohort):
    ml = float(np.prod(syn.DEFAULT_SPACING)) / 1000.0
    for p in cohort["CT"]:
        volumes = {name: np.count_nonzero(p.labels == TOTALSEG_LABELS[name]) * ml
                   for name in ("liver", "spleen", "kidney_right", "kidney_left")}
        assert 500 < volumes["liver"] < 2500, volumes
        assert 50 < volumes["spleen"] < 400, volumes
        assert 60 < volumes["kidney_right"] < 250, volumes
        assert 60 < volumes["kidney_left"] < 250, volumes


def test_organs_are_single_pieces_and_lesions_lie_in_the_liver(cohort):
    for p in cohort["CT"][:6]:
        masks = [np.isin(p.labels, ORGAN_LABEL_VALUES[o]) for o in ORGANS]
        assert int(np.sum(masks, axis=0).max()) == 1  # one label per voxel: no overlap
        for name in ("liver", "spleen", "kidney_right", "kidney_left"):
            comp, n = ndimage.label(p.labels == TOTALSEG_LABELS[name])
            sizes = np.bincount(comp.ravel())[1:]
            assert sizes.max() >= 0.9 * sizes.sum(), (p.case_id, name, n)
        assert p.lesions.any()
        assert not (p.lesions & (p.labels != TOTALSEG_LABELS["liver"])).any()
        assert 1 <= ndimage.label(p.lesions)[1] <= 3
