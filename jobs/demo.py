"""The whole chain on synthetic data: archive -> ingest -> train -> register -> promote ->
nightly segmentation of new scans -> evaluation, and a per-depth report.

    python jobs/demo.py [--workdir ./anunet-demo] [--cases 10 --epochs 12 --size 128]
"""

import sys

from anunet_platform.cli import demo_parser, run_job
from anunet_platform.demo import DemoConfig, run_demo

if __name__ == "__main__":
    sys.exit(run_job(demo_parser(), lambda args: run_demo(DemoConfig(**vars(args)))))
