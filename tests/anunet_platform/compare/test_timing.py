"""Table 6's timing: every output depth of a nested network, on the evaluation node's device (no Ray)."""

from __future__ import annotations

import pytest
import torch

from anunet_core.baselines import build_network
from anunet_platform.compare.job import time_depths, timing_device


def test_table6_is_timed_on_the_gpu_only_when_the_comparison_uses_one_and_this_node_has_it() -> None:
    assert timing_device(False) == torch.device("cpu")
    assert timing_device(True) == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("arch", ["anunet", "unetpp", "unet"])
def test_every_output_depth_is_timed_and_scaled_to_the_table_s_slices(arch: str) -> None:
    torch.manual_seed(0)
    model = build_network(arch, filters=[4, 8, 16, 32, 64])
    seconds = time_depths(model.eval(), size=32, timed_slices=16, slices=2000)
    assert sorted(seconds) == ([4] if arch == "unet" else [1, 2, 3, 4])
    assert all(0 < s < 2000 for s in seconds.values())
