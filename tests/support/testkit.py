"""What several test packages share: the real scans, trained-looking networks and a real MLflow server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

#: The real scans with labels (../shared/data/real, see its README).
REAL_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
REAL_CT_DICOM = REAL_DATA / "totalseg-ct-dicom"
REAL_MR = REAL_DATA / "totalseg-mr"


def need_real_data(path: Path) -> Path:
    """``path`` when it exists; else the test is skipped (a clone without ../shared/data/real)."""
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (a clone without ../shared/data/real)")
    return path


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so that an eval-mode
    comparison exercises them (a fresh BatchNorm is the identity), as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(n, generator=generator) - 0.5)
    return model


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_mlflow_server(workdir: Path, timeout_s: float = 120) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, artifacts under ``workdir``);
    yields its URI and stops it by its own process group (never a broad kill)."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = (workdir / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
            "--artifacts-destination", str(workdir / "artifacts"), "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not come up: " + (workdir / "mlflow-server.log").read_text()[-2000:])
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


def ingest_synthetic_ct(root: Path, cases: int, shape: tuple[int, int, int], size: int) -> Path:
    """``root/ds``: ``cases`` seeded synthetic CT cases (``root/archive``) ingested at ``size`` px
    on a local Ray cluster of 2 CPUs started and stopped here: the tuning tests' dataset."""
    import ray

    from anunet_core.synthetic import make_archive
    from anunet_platform.ingest import IngestConfig, run_ingest

    make_archive(root / "archive", cases=cases, modality="CT", fmt="nifti", seed=8, shape=shape)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        run_ingest(IngestConfig(source=root / "archive", out=root / "ds", organ="liver", modality="CT", size=size))
    finally:
        ray.shutdown()
    return root / "ds"
