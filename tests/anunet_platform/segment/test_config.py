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


@pytest.mark.parametrize("value,expected", [
    ("nifti", ("nifti",)), ("nifti,dicom-seg", ("nifti", "dicom-seg")), ("dicom-seg, nifti", ("nifti", "dicom-seg")),
    (["NIfTI", "dicom-seg"], ("nifti", "dicom-seg")),
])
def test_output_formats_are_parsed_in_one_order(value, expected) -> None:
    assert SegmentConfig(archive="a", out="o", model="anunet-liver-ct", output_format=value).output_format == expected


@pytest.mark.parametrize("value,message", [
    ("dicom-seg", "NIfTI masks are always written"), ("nifti,png", "takes nifti and dicom-seg"),
    ("nifti,nifti", "names a format twice"), ("", "takes nifti and dicom-seg"),
])
def test_bad_output_formats_are_one_line_errors(value: str, message: str) -> None:
    with pytest.raises(SegmentError, match=message):
        SegmentConfig(archive="a", out="o", model="anunet-liver-ct", output_format=value)


def test_several_models_become_a_tuple_and_a_family_named_twice_is_refused() -> None:
    assert SegmentConfig(archive="a", out="o", model="anunet-liver-ct").model == ("anunet-liver-ct",)
    config = SegmentConfig(archive="a", out="o", model=["anunet-liver-ct", "anunet-spleen-ct"])
    assert config.model == ("anunet-liver-ct", "anunet-spleen-ct")
    with pytest.raises(SegmentError, match="a family is named twice"):
        SegmentConfig(archive="a", out="o", model=["anunet-liver-ct", "anunet-liver-ct"])
    with pytest.raises(SegmentError, match="--postprocess must be one of auto, on, off"):
        SegmentConfig(archive="a", out="o", model="anunet-liver-ct", postprocess="maybe")


def test_the_flags_repeat_model_and_take_formats_and_postprocessing() -> None:
    from anunet_platform.cli import segment_parser

    args = segment_parser().parse_args(["--archive", "A", "--out", "O", "--model", "anunet-liver-ct", "--model",
                                        "anunet-kidney-ct", "--output-format", "nifti,dicom-seg", "--postprocess", "off"])
    config = SegmentConfig(**vars(args))
    assert (config.model, config.output_format, config.postprocess) == (
        ("anunet-liver-ct", "anunet-kidney-ct"), ("nifti", "dicom-seg"), "off")
    defaults = SegmentConfig(**vars(segment_parser().parse_args(["--archive", "A", "--out", "O", "--model", "m"])))
    assert (defaults.output_format, defaults.postprocess) == (("nifti",), "auto")
    with pytest.raises(SystemExit):
        segment_parser().parse_args(["--archive", "A", "--out", "O", "--model", "m", "--output-format", "png"])
