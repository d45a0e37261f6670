"""Write a seeded synthetic abdomen archive (CT or MR; NIfTI or DICOM) for demos and tests.

    python jobs/make_synthetic.py --out DIR --cases N --modality CT --format dicom
"""

import sys

from anunet_core.synthetic import make_archive
from anunet_platform.cli import make_synthetic_parser, run_job


def write_archive(args) -> None:
    written = make_archive(
        args.out, cases=args.cases, modality=args.modality, fmt=args.format,
        layout=None if args.layout == "auto" else args.layout, seed=args.seed,
    )
    print(f"wrote {args.cases} {args.modality} case(s) ({len(written)} entries) to {args.out}")


if __name__ == "__main__":
    sys.exit(run_job(make_synthetic_parser(), write_archive))
