"""Tests of anunet_core.io.lock: one run per output, with real processes and real kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anunet_core.io.lock import OutputLocked, output_lock, read_holder

HOLD = """
import sys, time
from anunet_core.io.lock import output_lock
with output_lock(sys.argv[1], "segment", lease_s=float(sys.argv[2])):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(lock_file: Path, lease_s: float = 120.0) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_file), str(lease_s)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_held_then_released(tmp_path: Path) -> None:
    lock = tmp_path / "out" / ".anunet.lock"
    with output_lock(lock, "ingest") as holder:
        assert read_holder(lock) == holder and holder["pid"] == os.getpid() and holder["job"] == "ingest"
        with pytest.raises(OutputLocked, match=rf"is being written by ingest \(pid {os.getpid()} on "):
            with output_lock(lock, "ingest"):
                pass
    assert not lock.exists()


def test_a_second_run_refuses_while_the_first_lives_and_takes_over_once_it_is_killed(tmp_path: Path) -> None:
    lock = tmp_path / ".anunet.lock"
    first = _holder(lock)
    try:
        with pytest.raises(OutputLocked) as refused:
            with output_lock(lock, "segment"):
                pass
        message = str(refused.value)
        assert "\n" not in message and f"segment (pid {first.pid} on " in message and str(lock) in message
        os.kill(first.pid, signal.SIGKILL)  # a killed run leaves its lease behind
        first.wait(timeout=30)
        assert read_holder(lock)["pid"] == first.pid
        started = time.monotonic()
        with output_lock(lock, "segment") as holder:  # its pid is gone on this host: taken over at once
            assert read_holder(lock)["token"] == holder["token"]
        assert time.monotonic() - started < 5
    finally:
        first.kill()
        first.wait(timeout=30)


@pytest.mark.parametrize("age_s,stale", [(10.0, False), (300.0, True)])
def test_a_lease_from_another_host_is_stale_once_it_lapses(tmp_path: Path, age_s: float, stale: bool) -> None:
    lock = tmp_path / ".anunet.lock"
    lock.write_text(json.dumps({"job": "segment", "pid": 1, "host": "another-pod", "started": "then", "token": "x"}))
    os.utime(lock, (time.time() - age_s, time.time() - age_s))
    if stale:
        with output_lock(lock, "segment", lease_s=120.0):
            assert read_holder(lock)["host"] != "another-pod"
    else:
        with pytest.raises(OutputLocked, match="segment \\(pid 1 on another-pod, since then\\)"):
            with output_lock(lock, "segment", lease_s=120.0):
                pass


def test_the_holder_refreshes_its_lease(tmp_path: Path) -> None:
    lock = tmp_path / ".anunet.lock"
    first = _holder(lock, lease_s=0.8)  # heartbeat every 0.2 s
    try:
        os.utime(lock, (time.time() - 100, time.time() - 100))
        time.sleep(0.6)
        assert time.time() - lock.stat().st_mtime < 0.5, "the heartbeat touched it"
        with pytest.raises(OutputLocked):
            with output_lock(lock, "segment", lease_s=0.8):
                pass
    finally:
        first.kill()
        first.wait(timeout=30)


def test_an_unreadable_lease_waits_for_its_lease_to_lapse(tmp_path: Path) -> None:
    lock = tmp_path / ".anunet.lock"
    lock.write_text('{"job": "segm')  # a run killed while writing it
    with pytest.raises(OutputLocked, match="an unreadable lease"):
        with output_lock(lock, "segment", lease_s=120.0):
            pass
    os.utime(lock, (time.time() - 200, time.time() - 200))
    with output_lock(lock, "segment", lease_s=120.0):
        pass
    assert not lock.exists() and not list(tmp_path.glob("*.stale-*"))
