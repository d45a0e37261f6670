"""Connecting to Ray: the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``), else a local one."""

from __future__ import annotations

import logging
import os


def init_ray() -> None:
    """Connect to the cluster in ``RAY_ADDRESS`` or start a local Ray; idempotent.

    With Ray >= 2.59 token authentication is on: the token comes from ``RAY_AUTH_TOKEN`` or
    ``~/.ray/auth_token`` (see the README's "Run on a cluster").
    """
    import ray

    if ray.is_initialized():
        return
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, logging_level=logging.WARNING)
