"""The flags of every job, in one place.

Each ``jobs/<name>.py`` is ``run_job(<name>_parser(), <platform function>)``: flags in, one
call out. The parsers are also what the Kubernetes manifest tests parse entrypoints with, so
a renamed flag breaks those tests rather than a nightly run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from anunet_core.archives import LAYOUTS
from anunet_core.preprocessing import DEFAULT_SIZE, ORGANS

MODALITIES = ("CT", "MR")


def _modality(value: str) -> str:
    upper = value.upper()
    if upper not in MODALITIES:
        raise argparse.ArgumentTypeError(f"must be CT or MR, got {value!r}")
    return upper


def _label_values(value: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in value.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected label values like '5' or '2,3', got {value!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"label values must be positive integers, got {value!r}")
    return values


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return number


def make_synthetic_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/make_synthetic.py",
        description="Write a seeded synthetic abdomen archive (liver, spleen, kidneys) as NIfTI or DICOM.",
    )
    parser.add_argument("--out", type=Path, required=True, help="archive folder to write")
    parser.add_argument("--cases", type=_positive_int, required=True, help="number of cases (patients)")
    parser.add_argument("--modality", type=_modality, required=True, help="CT or MR")
    parser.add_argument("--format", choices=("nifti", "dicom"), required=True, help="image file format")
    parser.add_argument(
        "--layout",
        choices=("auto", *LAYOUTS),
        default="auto",
        help="archive layout (default auto: pairs for nifti, dicom for dicom)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed: same seed, same archive (default 0)")
    return parser


def ingest_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/ingest.py",
        description="Ingest a scan archive into a Parquet dataset of preprocessed slices (Ray Data), split by patient.",
    )
    parser.add_argument("--source", type=Path, required=True, help="archive folder")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    parser.add_argument("--organ", choices=ORGANS, required=True, help="organ to segment")
    parser.add_argument("--modality", type=_modality, required=True, help="CT or MR")
    parser.add_argument("--layout", choices=("auto", *LAYOUTS), default="auto", help="archive layout (default auto)")
    parser.add_argument(
        "--label-values",
        type=_label_values,
        default=None,
        help="label values forming the organ, e.g. 5 (TotalSegmentator liver); default: the layout's",
    )
    parser.add_argument("--size", type=_positive_int, default=DEFAULT_SIZE, help=f"slice side (default {DEFAULT_SIZE})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient split (default 0)")
    parser.add_argument(
        "--val-fraction", type=_fraction, default=0.2, help="share of training patients for validation (default 0.2)"
    )
    parser.add_argument(
        "--empty-slice-fraction",
        type=_fraction,
        default=0.25,
        help="share of organ-free slices kept per case (default 0.25; all organ slices are kept)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    return parser


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/demo.py",
        description="The whole chain on synthetic data, locally: archive -> ingest -> train -> report.",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("anunet-demo"), help="where everything is written (default ./anunet-demo)"
    )
    return parser


PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "make_synthetic": make_synthetic_parser,
    "ingest": ingest_parser,
    "demo": demo_parser,
}


def run_job(parser: argparse.ArgumentParser, action: Callable[[argparse.Namespace], Any], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``action(args)``; a bad input ends the job with one line and exit 2.

    Errors of bad input (``ValueError`` and its subclasses: unreadable archives, refused
    outputs, bad flags, ``FileNotFoundError``) are printed as ``error: <one line>``; anything
    else is a bug and keeps its traceback.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        action(args)
    except (ValueError, FileNotFoundError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0
