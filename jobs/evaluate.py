"""Score segmentation masks against a labelled archive (Dice, IoU, precision, recall, HD95).

    python jobs/evaluate.py --pred OUT --labels DIR --organ liver [--modality CT] [--out DIR]
"""

import sys

from anunet_platform.cli import evaluate_parser, run_job
from anunet_platform.evaluate import run_evaluate

if __name__ == "__main__":
    sys.exit(run_job(evaluate_parser(), lambda args: run_evaluate(**vars(args))))
