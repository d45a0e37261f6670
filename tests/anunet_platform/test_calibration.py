"""Registration's measurements on the validation split: per-case Dice, post-processing, the
exit rule of adaptive depth, QC thresholds and the training cases' organ volumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from anunet_core.exit_rule import ExitRule
from anunet_platform.calibration import (
    ValidationCase,
    VolumeStats,
    case_qc_features,
    postprocessing_tags,
    registration_tags,
    score_validation,
    training_volumes,
    validation_cases,
    volume_dice,
)
from anunet_platform.qc import QcThresholds


class _IntensityHeads(torch.nn.Module):
    """A stand-in network with two heads that read the answer off the image: head 1 sees every
    pixel above 0.5 (the organ and a speck), head 2 only those above 0.9 (the organ)."""

    depth = 2

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [(x > 0.5).float() * 2 - 1, (x > 0.9).float() * 2 - 1]


def _write_case(data: Path, case_id: str, image: np.ndarray, mask: np.ndarray, spacing=(2.0, 2.0, 5.0),
                split: str = "val") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from anunet_platform.contracts import SLICE_SCHEMA, encode_masks, encode_slices

    k, size = image.shape[0], image.shape[1]
    rows = [{"case_id": case_id, "patient_id": case_id, "slice_index": i, "split": split, "organ": "liver",
             "modality": "CT", "image": encode_slices(image[i]), "mask": encode_masks(mask[i]), "size": size,
             "spacing": list(spacing), "source": "x", "source_sha256": "0", "preprocessing_version": "p"}
            for i in reversed(range(k))]  # shuffled order: the case is put back in slice order
    (data / split).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SLICE_SCHEMA), data / split / f"{case_id}.parquet")


def test_validation_cases_decide_post_processing_where_it_helps_and_where_it_hurts(tmp_path: Path) -> None:
    """Post-processing is decided per depth on the validation cases: on where it removes a false
    speck (head 1 sees one), off where nothing changes (head 2), off where it would remove a true
    second piece of the organ."""
    organ = np.zeros((6, 32, 32), np.float32)
    organ[1:5, 8:20, 8:20] = 1.0  # 4 x 12 x 12 voxels of 20 mm^3: 11.5 mL, above the liver's 10 mL
    speck = organ.copy()
    speck[2, 28:30, 28:30] = 0.7  # head 1 sees it, head 2 does not; the truth does not have it
    _write_case(tmp_path / "helps", "speck", speck, organ > 0.5)
    _write_case(tmp_path / "helps", "clean", organ, organ > 0.5)
    two_pieces = organ.copy()
    two_pieces[1:3, 24:30, 24:30] = 1.0  # a second true piece: post-processing keeps only the largest
    _write_case(tmp_path / "hurts", "pieces", two_pieces, two_pieces > 0.5)

    helps = validation_cases(_IntensityHeads(), tmp_path / "helps", "liver")
    by_case = {d: {c["case_id"]: c for c in cases} for d, cases in helps.items()}
    assert sorted(by_case) == [1, 2] and sorted(by_case[1]) == ["clean", "speck"]
    assert by_case[1]["speck"]["dice"] == pytest.approx(volume_dice(speck > 0.5, organ > 0.5))
    assert by_case[1]["speck"]["dice"] < 1.0 and by_case[1]["speck"]["dice_postprocessed"] == 1.0, "the speck removed"
    assert by_case[2]["speck"]["dice"] == by_case[2]["speck"]["dice_postprocessed"] == 1.0
    metrics, tags = postprocessing_tags(helps)
    assert (tags[1]["postprocess"], tags[2]["postprocess"]) == ("on", "off"), "L1 gains, L2 has nothing to gain"
    assert tags[1]["val_cases"] == "2" and "raises the mean volume Dice" in tags[1]["postprocess_reason"]
    assert metrics[1]["val_volume_dice"] < metrics[1]["val_volume_dice_postprocessed"] == 1.0

    hurts = validation_cases(_IntensityHeads(), tmp_path / "hurts", "liver")
    (pieces,) = hurts[2]
    assert pieces["dice"] == 1.0 > pieces["dice_postprocessed"], "a true piece lost"
    metrics, tags = postprocessing_tags(hurts)
    assert (tags[1]["postprocess"], tags[2]["postprocess"]) == ("off", "off")
    assert "does not raise" in tags[2]["postprocess_reason"]


def _speck_dataset(data: Path) -> np.ndarray:
    organ = np.zeros((6, 32, 32), np.float32)
    organ[1:5, 8:20, 8:20] = 1.0
    speck = organ.copy()
    speck[2, 28:30, 28:30] = 0.7
    _write_case(data, "speck", speck, organ > 0.5)
    _write_case(data, "clean", organ, organ > 0.5)
    return organ


def test_registration_tags_hold_case_dice_qc_thresholds_and_an_exit_rule_on_the_deepest_depth(tmp_path: Path) -> None:
    """Head 2 is perfect, head 1 sees a false speck on one slice: the organ-free slices (0 and 5,
    each standing for 4 scan slices at empty_slice_fraction 0.25) can stop at L1 at no Dice
    cost, the rest must reach L2. The calibrated rule finds exactly that."""
    _speck_dataset(tmp_path)
    cases = score_validation(_IntensityHeads(), tmp_path, "liver", empty_slice_fraction=0.25)
    assert [c.case_id for c in cases] == ["clean", "speck"]
    assert cases[0].slice_weight.tolist() == [4.0, 1.0, 1.0, 1.0, 1.0, 4.0], "organ-free slices stand for 4"
    assert cases[0].heads.shape == (2, 6, 32, 32) and cases[0].heads.dtype == np.float16
    gflops = {1: 1.0, 2: 3.0}
    measured = registration_tags(cases, VolumeStats(11.5, 2.0, 7), gflops, adaptive_max_dice_drop=0.005)
    tags = measured.tags
    for d in (1, 2):
        assert json.loads(tags[d]["val_case_dice"]) == pytest.approx([c.dice[d - 1] for c in cases], abs=1e-6)
        assert QcThresholds.from_tags(tags[d]).n_validation == 2
        assert (tags[d]["organ_ml_mean"], tags[d]["organ_ml_std"], tags[d]["organ_ml_cases"]) == ("11.5", "2", "7")
    assert json.loads(tags[2]["val_case_dice"]) == [1.0, 1.0]
    assert not any(k.startswith("exit_") for k in tags[1]), "the exit rule lives on the deepest version"
    rule = ExitRule.from_tags(tags[2])
    assert rule.max_depth == 2 and rule.empty_max_prob > 0.27, "the organ-free slices (p 0.27) stop at L1"
    assert not rule.exits_by_agreement, "2 validation cases: only the organ-absent exit"
    # so the deep-slice share is no QC feature there (it would only measure the organ's extent)
    assert QcThresholds.from_tags(tags[2]).max_deep_slice_fraction == QcThresholds().max_deep_slice_fraction
    calibration = measured.exit_calibration
    assert calibration.dice == pytest.approx(1.0) and calibration.reference_dice == pytest.approx(1.0)
    # per case: 2 organ-free slices x weight 4 at 1 GFLOP, 4 organ slices at 3 GFLOP
    assert calibration.gflop == pytest.approx((8 * 1.0 + 4 * 3.0) / 12)
    assert float(tags[2]["exit_expected_speedup"]) == pytest.approx(3.0 / (20 / 12), rel=1e-3)


def test_registration_without_validation_cases_keeps_the_deepest_depth_for_every_slice() -> None:
    measured = registration_tags([], None, {1: 1.0, 2: 2.0})
    assert measured.tags == {} and measured.metrics == {}


def test_training_volumes_are_the_organ_mask_volumes_in_ml(tmp_path: Path) -> None:
    image = np.zeros((4, 16, 16), np.float32)
    for case_id, side in (("a", 4), ("b", 6)):
        mask = np.zeros((4, 16, 16), bool)
        mask[1:3, :side, :side] = True  # 2 * side^2 voxels of 2 x 2 x 5 mm = 20 mm^3
        _write_case(tmp_path, case_id, image, mask, split="train")
    _write_case(tmp_path, "empty", image, np.zeros((4, 16, 16), bool), split="train")
    stats = training_volumes(tmp_path)
    volumes = [2 * 16 * 0.02, 2 * 36 * 0.02]  # mL
    assert stats.cases == 2, "a training case without the organ has no volume"
    assert stats.mean_ml == pytest.approx(np.mean(volumes)) and stats.std_ml == pytest.approx(np.std(volumes))


@pytest.mark.parametrize("exit_depth,agreement", [(2, 2 * 8 / (8 + 16)), (1, 1.0)])
def test_qc_features_of_a_validation_case(exit_depth: int, agreement: float) -> None:
    """Head 2 masks 16 pixels, head 1 half of them: at L2 the agreement is the Dice of the two
    masks; a slice that stops at L1 agrees with itself."""
    heads = np.zeros((2, 2, 8, 8), np.float16)
    heads[1, 0, 2:6, 2:6] = 0.95  # 16 pixels
    heads[0, 0, 2:6, 2:4] = 0.95  # 8 of them
    heads[1, 0, 0, 0] = 0.5  # one uncertain pixel
    if exit_depth == 1:
        heads[0] = heads[1]
    case = ValidationCase("c", heads, heads[1] > 0.9, voxel_ml=0.5, slice_weight=np.ones(2))
    features = case_qc_features(case, np.full(2, exit_depth), VolumeStats(8.0, 1.0, 5))
    assert features.head_agreement == pytest.approx(agreement)
    assert features.uncertain_fraction == pytest.approx(1 / heads[0].size)
    assert features.touches_border is False
    assert features.deep_slice_fraction is None, "a fixed depth has no deep-slice share"
    assert features.volume_z is not None and abs(features.volume_z) < 1.0, "16 pixels x 0.5 mL = the mean volume"
    mixed = case_qc_features(case, np.array([2, 1]), None, adaptive=True)
    assert mixed.deep_slice_fraction == pytest.approx(0.5) and mixed.volume_z is None
