"""Tests of anunet_platform.logs: a job's progress on stdout, other libraries' warnings on stderr."""

from __future__ import annotations

import subprocess
import sys

import pytest

JOB = """
import logging, sys
from anunet_platform.logs import configure_job_logging
configure_job_logging(worker={worker})
configure_job_logging(worker={worker})  # twice: still one line per record
logging.getLogger("anunet_platform.ingest").info("[1/2] case_0000 (train): 12 slices")
logging.getLogger("anunet_platform.segment.job").warning("model has no alias 'production'")
logging.getLogger("anunet_platform.ingest").debug("not shown")
logging.getLogger("ray.data").info("ray's chatter is not shown")
logging.getLogger("ray.data").warning("ray warns")
print("propagate", logging.getLogger("anunet_platform").propagate)
"""


@pytest.mark.parametrize("worker", [False, True])
def test_progress_goes_to_stdout_once_and_other_warnings_to_stderr(worker: bool) -> None:
    result = subprocess.run([sys.executable, "-c", JOB.format(worker=worker)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[1/2] case_0000 (train): 12 slices",
        "WARNING: model has no alias 'production'",
        f"propagate {not worker}",
    ]
    err = result.stderr.splitlines()
    assert len(err) == 1 and err[0].endswith("WARNING ray.data: ray warns"), err
