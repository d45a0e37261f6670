"""A spy on the segment job's scan reader that works inside Ray's worker processes.

:func:`install` is a Ray ``worker_process_setup_hook``: a test starts Ray with
``runtime_env=read_counter.runtime_env(folder)``; each worker process then wraps
``anunet_core.archives.load_case`` (before the segment stages import it) so that every scan it
reads appends the scan's path to ``folder/<pid>.log``. :func:`reads` counts them per path, so a
test can assert that a scan was read exactly once, whichever worker read it.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

LOG_ENV = "ANUNET_TEST_READ_LOG"
SUPPORT = Path(__file__).resolve().parent


def runtime_env(folder: Path) -> dict:
    """The ``runtime_env`` of ``ray.init`` that installs the spy in every worker, logging into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(SUPPORT), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {LOG_ENV: str(folder), "PYTHONPATH": path}, "worker_process_setup_hook": "read_counter.install"}


def install() -> None:
    """Wrap the archive reader in this process when ``$ANUNET_TEST_READ_LOG`` names a folder."""
    folder = os.environ.get(LOG_ENV)
    if not folder:
        return
    import anunet_core.archives as archives

    original = archives.load_case
    log = Path(folder) / f"{os.getpid()}.log"

    def counted(case, *args, **kwargs):
        with open(log, "a", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(os.fsdecode(case.image) + "\n")
        return original(case, *args, **kwargs)

    archives.load_case = counted


def reads(folder: Path, under: Path) -> Counter[str]:
    """How many times each scan below ``under`` was read, by path (every worker's log)."""
    counts: Counter[str] = Counter()
    prefix = os.fsdecode(under)
    for log in folder.glob("*.log"):
        for line in log.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
            if line.startswith(prefix):
                counts[line] += 1
    return counts
