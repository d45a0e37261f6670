"""The segment job's settings: checks, and defaults that are the depth policy's."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from anunet_platform.segment import SegmentConfig, SegmentError
from anunet_platform.selection import DepthPolicy


def test_paths_become_paths_and_defaults_match_the_depth_policy() -> None:
    config = SegmentConfig(archive="a", out="o", model="anunet-liver-ct")
    assert (config.archive, config.out) == (Path("a"), Path("o"))
    policy = DepthPolicy()
    assert (config.max_dice_drop, config.latency_budget_ms) == (policy.max_dice_drop, policy.latency_budget_ms) == (0.01, None)
    assert DepthPolicy.from_flags(config.depth, config.max_dice_drop, config.latency_budget_ms) == policy


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"num_actors": 0}, "num_actors must be >= 1, got 0"),
        ({"cpus_per_actor": 0}, "cpus_per_actor must be > 0, got 0"),
    ],
)
def test_bad_settings_are_segment_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(SegmentError, match=message):
        SegmentConfig(archive="a", out="o", model="anunet-liver-ct", **kwargs)


def test_segment_error_is_a_value_error() -> None:
    # jobs end with exit code 2 and one line on a ValueError (cli.run_job)
    assert issubclass(SegmentError, ValueError)


def test_fields_follow_the_job_flags() -> None:
    from anunet_platform.cli import segment_parser

    flags = set(vars(segment_parser().parse_args(["--archive", "A", "--out", "O", "--model", "anunet-liver-ct"])))
    assert flags <= {f.name for f in fields(SegmentConfig)}
