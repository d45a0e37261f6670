"""Train ANU-Net (or a baseline: --arch unet|r2unet|unetpp|attunet|attr2unet) with Ray Train on an ingested dataset; --register puts every depth in MLflow.

    python jobs/train.py --data DATASET_DIR --epochs 10 --num-workers 2 [--use-gpu] [--register]
"""

import sys

from anunet_platform.cli import run_job, train_parser
from anunet_platform.train import TrainConfig, run_training

if __name__ == "__main__":
    sys.exit(run_job(train_parser(), lambda args: run_training(TrainConfig(**vars(args)))))
