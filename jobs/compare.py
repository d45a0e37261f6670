"""The paper's comparison on your data: ANU-Net and its five baselines, Tables 2-6 and Fig. 13.

    python jobs/compare.py --data DATASET_DIR --archs all --epochs 12 [--seeds 3] [--register] [--name NAME]
"""

import sys

from anunet_platform.cli import compare_parser, run_job
from anunet_platform.compare import CompareConfig, run_compare

if __name__ == "__main__":
    sys.exit(run_job(compare_parser(), lambda args: run_compare(CompareConfig(**vars(args)))))
