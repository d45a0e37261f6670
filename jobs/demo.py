"""The whole chain on synthetic data, locally: archive -> ingest -> train -> per-depth report.

    python jobs/demo.py [--workdir ./anunet-demo]
"""

import sys

from anunet_platform.cli import demo_parser, run_job
from anunet_platform.demo import DemoConfig, run_demo

if __name__ == "__main__":
    sys.exit(run_job(demo_parser(), lambda args: run_demo(DemoConfig(workdir=args.workdir))))
