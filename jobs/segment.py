"""Segment every scan of an archive with the registered ANU-Net at an automatically chosen depth.

    python jobs/segment.py --archive DIR --out DIR --model anunet-liver-ct [--depth auto|1..4]
        [--max-dice-drop 0.01 | --latency-budget-ms MS] [--use-gpu] [--batch-size 16]
"""

import sys

from anunet_platform.cli import run_job, segment_parser
from anunet_platform.segment import SegmentConfig, run_segmentation

if __name__ == "__main__":
    sys.exit(run_job(segment_parser(), lambda args: run_segmentation(SegmentConfig(**vars(args)))))
