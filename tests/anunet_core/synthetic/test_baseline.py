"""Tests of anunet_core.synthetic.baseline: predictors that learn nothing score badly (run with
``-s`` to see the scores)."""

from __future__ import annotations

import pytest

from anunet_core.synthetic import make_phantom, trivial_predictor_dice
from anunet_core.vocabulary import MODALITIES, ORGANS


@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("modality", MODALITIES)
def test_trivial_predictors_score_badly(cohort, modality, organ):
    phantoms = cohort[modality]
    r = trivial_predictor_dice(phantoms[:12], phantoms[12:], organ)
    print(f"\n{modality} {organ}: all-background {r['all_background']:.3f}, "
          f"fixed blob {r['fixed_blob']:.3f} (tuned {r['fixed_blob_tuned']:.3f} at "
          f"{r['blob_level']:.2f}), intensity window {r['intensity_window']:.3f} "
          f"[{r['window_lo']:.3g}, {r['window_hi']:.3g})")
    assert r["all_background"] == 0.0
    assert r["fixed_blob"] < 0.7
    assert r["fixed_blob_tuned"] < 0.7
    assert r["intensity_window"] < 0.7


def test_trivial_predictor_sanity_on_a_copy(small_grid):
    """Trained and tested on the same phantom, the fixed blob is the truth itself."""
    p = make_phantom(2, "CT", **small_grid)
    r = trivial_predictor_dice([p], [p], "liver")
    assert r["fixed_blob"] == 1.0 and r["fixed_blob_tuned"] == 1.0
    assert 0.0 < r["intensity_window"] < 1.0
    with pytest.raises(ValueError, match="organ"):
        trivial_predictor_dice([p], [p], "pancreas")
