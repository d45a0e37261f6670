"""Move the production alias to the four depth versions one training run registered (MLflow).

    python jobs/promote.py --run-id RUN_ID [--alias production]

The tracking store comes from ``MLFLOW_TRACKING_URI`` (default: the workspace's SQLite file).
"""

import sys

from anunet_platform.cli import promote_parser, run_job
from anunet_platform.registry import run_promote

if __name__ == "__main__":
    sys.exit(run_job(promote_parser(), lambda args: run_promote(args.run_id, alias=args.alias)))
