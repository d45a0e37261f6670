"""Write a seeded synthetic abdomen archive (CT or MR; NIfTI or DICOM) for demos and tests.

    python jobs/make_synthetic.py --out DIR --cases N --modality CT --format dicom
"""

import logging
import sys

from anunet_core.synthetic import make_archive
from anunet_platform.cli import make_synthetic_parser, run_job

logger = logging.getLogger("anunet_platform.make_synthetic")  # the job's stdout handler shows it


def write_archive(args) -> None:
    written = make_archive(
        args.out, cases=args.cases, modality=args.modality, fmt=args.format,
        layout=None if args.layout == "auto" else args.layout, seed=args.seed,
    )
    logger.info("wrote %d %s case(s) (%d entries) to %s", args.cases, args.modality, len(written), args.out)


if __name__ == "__main__":
    sys.exit(run_job(make_synthetic_parser(), write_archive))
