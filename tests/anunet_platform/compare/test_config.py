"""What a comparison runs: the architectures in the paper's order, the grid, bad flags (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from anunet_core.vocabulary import ARCH_NAMES, ARCHS
from anunet_platform.compare import PAPER_ORDER, CompareConfig, parse_archs


def test_all_is_every_architecture_in_the_papers_row_order() -> None:
    assert parse_archs("all") == PAPER_ORDER
    assert sorted(PAPER_ORDER) == sorted(ARCHS)
    assert [ARCH_NAMES[a] for a in PAPER_ORDER] == [
        "U-Net", "R2U-Net", "UNet++", "Attention U-Net", "Attention R2U-Net", "ANU-Net"]  # Tables 2-5, top to bottom


@pytest.mark.parametrize("text,expected", [
    ("anunet,unet", ("unet", "anunet")),
    (" UNETPP , anunet,unetpp", ("unetpp", "anunet")),
    (("attunet", "r2unet"), ("r2unet", "attunet")),
])
def test_a_list_is_put_in_table_order_once_each(text, expected) -> None:
    assert parse_archs(text) == expected


@pytest.mark.parametrize("text,message", [
    ("", "--archs must be 'all' or a comma-separated list"),
    ("anunet,vnet", "--archs: arch must be one of anunet, unet"),
    ("all,unet", "--archs: arch must be one of"),
])
def test_bad_archs_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_archs(text)
    assert "\n" not in str(info.value)


def test_the_grid_is_every_arch_times_every_seed() -> None:
    config = CompareConfig(data="d", epochs=2, archs="anunet,unet", seeds=3)
    assert config.data == Path("d")
    assert config.num_samples == 6
    assert config.grid() == [("unet", 0), ("unet", 1), ("unet", 2), ("anunet", 0), ("anunet", 1), ("anunet", 2)]


@pytest.mark.parametrize("changes,message", [
    ({"epochs": 0}, "--epochs and --seeds must be >= 1"),
    ({"seeds": 0}, "--epochs and --seeds must be >= 1"),
    ({"timed_slices": 0}, "--timed-slices must be >= 1"),
    ({"max_concurrent_trials": 0}, "--max-concurrent-trials must be >= 1"),
])
def test_bad_settings_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompareConfig(**({"data": "d", "epochs": 1} | changes))


def test_the_grid_never_runs_more_trials_at_once_than_the_cluster_fits() -> None:
    from anunet_platform.tune.sizing import max_concurrent_trials

    # a training streams its data: its worker's CPU plus one for the input pipeline
    assert max_concurrent_trials(2, 0, CompareConfig(data="d", epochs=1)) == 1
    assert max_concurrent_trials(16, 0, CompareConfig(data="d", epochs=1, seeds=2)) == 8
    assert max_concurrent_trials(16, 0, CompareConfig(data="d", epochs=1, archs="unet", seeds=3)) == 3
    assert max_concurrent_trials(16, 2, CompareConfig(data="d", epochs=1, use_gpu=True)) == 2
    with pytest.raises(ValueError, match="one trial needs 3 CPUs"):
        max_concurrent_trials(2, 0, CompareConfig(data="d", epochs=1, num_workers=2))
