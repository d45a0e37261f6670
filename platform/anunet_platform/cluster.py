"""Connecting to Ray: the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``), else a local one."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

# set by Ray's job supervisor in the environment of a `ray job submit` entrypoint
_SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def init_ray() -> None:
    """Connect to the cluster in ``RAY_ADDRESS`` or start a local Ray; idempotent.

    With Ray >= 2.59 token authentication is on: the token comes from ``RAY_AUTH_TOKEN`` or
    ``~/.ray/auth_token`` (see the README's "Run on a cluster").
    """
    import ray

    if ray.is_initialized():
        return
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, logging_level=logging.WARNING)


def cluster_shape() -> tuple[float, float, float]:
    """``(largest node's CPUs, cluster CPUs, cluster GPUs)`` of the connected Ray cluster:
    the numbers Ray schedules with (a pod's limits on Kubernetes), not this host's cores."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    node_cpus = max((float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes), default=0.0)
    total = ray.cluster_resources()
    return node_cpus, float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0))


def in_submitted_job() -> bool:
    """True in the entrypoint of a ``ray job submit``: the working directory is then Ray's
    temporary copy of ``--working-dir``, deleted with the job's session."""
    return _SUBMITTED_JOB_ENV in os.environ


def warn_if_ephemeral(path: os.PathLike | str, what: str, setting: str) -> None:
    """Log a warning when ``what`` defaults to ``path`` inside a submitted job's temporary
    working directory (results would vanish with the job); ``setting`` says how to fix it."""
    if in_submitted_job():
        logger.warning(
            "%s defaults to %s, inside this job's temporary working directory: it is lost when the "
            "job's files are cleaned up and differs per node. Set %s.", what, path, setting,
        )
