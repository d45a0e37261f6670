"""Logging for the jobs: the platform's progress as plain lines on stdout.

Modules log through ``logging.getLogger(__name__)`` (never ``print``). A job calls
:func:`configure_job_logging` once, at start-up; code that runs inside Ray workers (a Ray Train
worker, a Tune trial) calls it too, since a worker process starts with logging unconfigured and
Ray forwards the worker's stdout to the driver.

- ``anunet_platform`` records at INFO and above go to stdout as the bare message (a progress
  line reads as it always did); warnings and errors are prefixed with their level.
- Everything else (Ray, MLflow, PyTorch...) keeps the root logger: warnings and above on
  stderr with a timestamp.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["PLATFORM_LOGGER", "configure_job_logging"]

PLATFORM_LOGGER = "anunet_platform"
_HANDLER_NAME = "anunet-job-stdout"


class _LevelPrefix(logging.Formatter):
    """``message`` for INFO and below, ``LEVEL: message`` above."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno <= logging.INFO else f"{record.levelname}: {text}"


def configure_job_logging(level: int = logging.INFO, *, worker: bool = False) -> logging.Logger:
    """Install the job's stdout handler on the ``anunet_platform`` logger (idempotent).

    ``worker=True`` in a Ray worker process (a Ray Train worker, a Tune trial): Ray has given
    its root logger a handler of its own, so the platform's records stop there instead of
    propagating (each line is printed once, by our handler, and forwarded by Ray).

    Returns the platform logger. Safe to call in every process; a second call changes only the
    level. Records still propagate to the root logger (pytest's ``caplog`` sees them); the
    root's own stderr handler, installed here only where there is none, leaves them out.
    """
    platform = logging.getLogger(PLATFORM_LOGGER)
    platform.setLevel(level)
    if not any(h.get_name() == _HANDLER_NAME for h in platform.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(_LevelPrefix("%(message)s"))
        platform.addHandler(handler)
    if worker:
        platform.propagate = False
    root = logging.getLogger()
    if not root.handlers:
        other = logging.StreamHandler(sys.stderr)
        other.setLevel(logging.WARNING)
        other.addFilter(lambda record: not record.name.startswith(PLATFORM_LOGGER))  # already on stdout
        other.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(other)
        root.setLevel(logging.WARNING)
    return platform
