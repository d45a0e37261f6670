"""What several benchmarks share: peak memory of a job's whole process tree."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

import psutil


def run_with_peak_rss(command: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Run ``command``; return its stdout and the peak resident memory (bytes) of its process
    tree (the driver, and the raylet and workers of a local Ray it starts), sampled every 0.1 s.
    A non-zero exit raises ``RuntimeError``."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed with exit code {process.returncode}")
    return stdout, peak
