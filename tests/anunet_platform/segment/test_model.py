"""Which registered model the job runs: the family name and depth flags -> a policy (no MLflow)."""

from __future__ import annotations

import pytest

from anunet_platform.segment import SegmentConfig, SegmentError, depth_policy, model_uri
from anunet_platform.selection import DepthPolicy


def _config(model: str, **kwargs) -> SegmentConfig:
    return SegmentConfig(archive="a", out="o", model=model, **kwargs)


def test_model_uri() -> None:
    assert model_uri("anunet-liver-ct-L2", "7") == "models:/anunet-liver-ct-L2/7"


@pytest.mark.parametrize(
    "model,kwargs,expected",
    [
        ("anunet-liver-ct", {}, ("liver", "CT", DepthPolicy())),
        ("anunet-liver-ct", {"depth": "3"}, ("liver", "CT", DepthPolicy(depth=3))),
        ("anunet-kidney-mr", {"max_dice_drop": 0.05}, ("kidney", "MR", DepthPolicy(max_dice_drop=0.05))),
        ("anunet-liver-ct", {"latency_budget_ms": 4}, ("liver", "CT", DepthPolicy(latency_budget_ms=4.0))),
        ("anunet-spleen-ct-L3", {}, ("spleen", "CT", DepthPolicy(depth=3))),  # the name fixes the depth
        ("anunet-spleen-ct-L3", {"depth": 3}, ("spleen", "CT", DepthPolicy(depth=3))),
        ("anunet-spleen-ct-L3", {"depth": "AUTO"}, ("spleen", "CT", DepthPolicy(depth=3))),
        ("unetpp-liver-ct", {"depth": "2"}, ("liver", "CT", DepthPolicy(depth=2))),  # nested like ANU-Net
        ("unetpp-liver-ct", {"depth": "adaptive"}, ("liver", "CT", DepthPolicy(adaptive=True))),
        ("unet-liver-ct", {}, ("liver", "CT", DepthPolicy(depth=4))),  # one output: its one depth
        ("attr2unet-kidney-mr", {"depth": 4}, ("kidney", "MR", DepthPolicy(depth=4))),
    ],
)
def test_depth_policy_of_the_flags(model: str, kwargs: dict, expected) -> None:
    assert depth_policy(_config(model, **kwargs)) == expected


def test_a_model_name_and_another_depth_are_refused() -> None:
    with pytest.raises(SegmentError, match="--model anunet-spleen-ct-L3 names depth 3 but --depth is 2"):
        depth_policy(_config("anunet-spleen-ct-L3", depth=2))
    with pytest.raises(ValueError, match="depth must be 'auto', 'adaptive' or one of 1..4, got 'deep'"):
        depth_policy(_config("anunet-liver-ct", depth="deep"))


@pytest.mark.parametrize("arch", ["unet", "r2unet", "attunet", "attr2unet"])
def test_a_network_with_one_output_runs_only_its_depth(arch: str) -> None:
    with pytest.raises(SegmentError, match=f"--depth adaptive: {arch}-liver-ct has one output and no shallower head"):
        depth_policy(_config(f"{arch}-liver-ct", depth="adaptive"))
    with pytest.raises(SegmentError, match=f"--model {arch}-liver-ct has one output, of depth 4 but --depth is 2"):
        depth_policy(_config(f"{arch}-liver-ct", depth=2))


def test_each_model_of_a_run_has_its_own_policy() -> None:
    config = SegmentConfig(archive="a", out="o", model=("anunet-liver-ct", "anunet-spleen-ct-L2"), max_dice_drop=0.05)
    assert depth_policy(config, "anunet-liver-ct") == ("liver", "CT", DepthPolicy(max_dice_drop=0.05))
    assert depth_policy(config, "anunet-spleen-ct-L2") == ("spleen", "CT", DepthPolicy(depth=2, max_dice_drop=0.05))


@pytest.mark.parametrize("models,message", [
    (("anunet-liver-ct", "anunet-spleen-mr"), "the families are of CT and MR; one run segments one modality"),
    (("anunet-liver-ct", "anunet-liver-ct-L2"), "two families segment the liver"),
    (("anunet-liver-ct", "anunet-pancreas-ct"), "organ 'pancreas' has no label-map value"),
])
def test_several_models_must_be_one_per_organ_of_one_modality(models, message: str) -> None:
    from anunet_platform.segment import select_models

    # refused from the names alone, before the registry is asked (there is none here)
    with pytest.raises(SegmentError, match=message):
        select_models(SegmentConfig(archive="a", out="o", model=models, tracking_uri="sqlite:////nonexistent/x.db"))
