"""Ingest a scan archive into a Parquet dataset of preprocessed 2D slices (Ray Data).

    python jobs/ingest.py --source DIR --out DATASET_DIR --organ liver --modality CT
"""

import sys

from anunet_platform.cli import ingest_parser, run_job
from anunet_platform.ingest import IngestConfig, run_ingest

if __name__ == "__main__":
    sys.exit(run_job(ingest_parser(), lambda args: run_ingest(IngestConfig(**vars(args)))))
