"""One run at a time per output: a lease file that a second run refuses and a dead run's is taken over.

A job that writes an output folder holds ``output_lock(lock_file, job)`` while it runs. The
lease file holds who holds it (job, pid, host, start time, a random token) and is refreshed
(its mtime touched) every ``lease_s / 4`` seconds by a daemon thread. Another run finds it and:

- refuses with :class:`OutputLocked` (a ``ValueError``: a job exits 2 with one line naming the
  holder) while the holder is alive;
- takes it over when the holder is gone: on the same host, its pid no longer runs (a killed
  run); on any host, the lease was not refreshed for ``lease_s`` (a lost node or pod). An
  unreadable lease file (a run killed while writing it) counts as stale once it is older than
  ``lease_s``.

Taking over is race-free: the stale file is first renamed to a unique name (only one of two
racing runs succeeds), then the lease is created with ``O_CREAT | O_EXCL``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["DEFAULT_LEASE_S", "OutputLocked", "output_lock", "read_holder"]

DEFAULT_LEASE_S = 120.0


class OutputLocked(ValueError):
    """Another run holds this output; the message names it (one line)."""


def read_holder(lock_file: Path) -> dict | None:
    """The lease's holder (``job``, ``pid``, ``host``, ``started``, ``token``), or None when the
    file is gone or unreadable."""
    try:
        holder = json.loads(Path(lock_file).read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _is_stale(lock_file: Path, holder: dict | None, lease_s: float) -> bool:
    try:
        age = time.time() - lock_file.stat().st_mtime
    except FileNotFoundError:
        return True
    if age > lease_s:
        return True
    if holder is None:
        return False  # being written right now, or just killed: wait for the lease to lapse
    same_host = holder.get("host") == socket.gethostname()
    return same_host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"])


def _describe(holder: dict | None, lock_file: Path) -> str:
    if holder is None:
        return f"an unreadable lease {lock_file}"
    return (f"{holder.get('job', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"since {holder.get('started', '?')})")


def _create(lock_file: Path, holder: dict) -> bool:
    try:
        fd = os.open(lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(holder, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _acquire(lock_file: Path, holder: dict, lease_s: float) -> None:
    for _ in range(3):  # a stale lease moved aside, then created again: a racing run may win
        if _create(lock_file, holder):
            return
        current = read_holder(lock_file)
        if not _is_stale(lock_file, current, lease_s):
            raise OutputLocked(
                f"{lock_file.parent} is being written by {_describe(current, lock_file)}: wait for it to finish, "
                f"or delete {lock_file} if that run is gone"
            )
        aside = lock_file.with_name(f"{lock_file.name}.stale-{uuid.uuid4().hex[:12]}")
        with contextlib.suppress(FileNotFoundError):  # another run moved it first
            os.rename(lock_file, aside)
            aside.unlink()
    raise OutputLocked(f"{lock_file.parent}: another run took over the stale lease {lock_file} first")


@contextlib.contextmanager
def output_lock(lock_file: str | os.PathLike, job: str, lease_s: float = DEFAULT_LEASE_S) -> Iterator[dict]:
    """Hold the lease ``lock_file`` for the duration of the block (see the module docstring).

    Yields the holder record written. Raises :class:`OutputLocked` when a live run holds it.
    The lease is removed on exit only if it is still this run's (its token).
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    holder = {
        "job": job, "pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _acquire(lock_file, holder, lease_s)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(lease_s / 4):
            with contextlib.suppress(FileNotFoundError):
                os.utime(lock_file)

    beat = threading.Thread(target=heartbeat, name=f"lease {lock_file.name}", daemon=True)
    beat.start()
    try:
        yield holder
    finally:
        stop.set()
        beat.join(timeout=5)
        current = read_holder(lock_file)
        if current is not None and current.get("token") == holder["token"]:
            lock_file.unlink(missing_ok=True)
