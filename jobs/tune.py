"""Tune the hybrid loss's alpha and gamma (and the learning rate) with Ray Tune and ASHA.

    python jobs/tune.py --data DATASET_DIR --num-samples 8 --epochs 10 [--register]
"""

import sys

from anunet_platform.cli import run_job, tune_parser
from anunet_platform.tune import SearchConfig, run_tuning

if __name__ == "__main__":
    sys.exit(run_job(tune_parser(), lambda args: run_tuning(SearchConfig(**vars(args)))))
