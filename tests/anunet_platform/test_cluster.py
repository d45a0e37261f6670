"""Running inside `ray job submit`: defaults that would vanish with the job are called out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from anunet_platform import registry
from anunet_platform.cluster import in_submitted_job
from anunet_platform.train import default_storage_path

JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


@pytest.fixture
def in_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ANUNET_STORAGE", raising=False)
    return tmp_path


def test_defaults_inside_a_submitted_job_warn(in_workdir: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv(JOB_ENV, "{}")
    assert in_submitted_job()
    with caplog.at_level(logging.WARNING):
        uri = registry.tracking_uri()
        storage = default_storage_path()
    assert uri == f"sqlite:///{in_workdir / 'anunet-workspace' / 'mlflow.db'}"
    assert storage == in_workdir / "anunet-workspace" / "ray_results"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "MLflow store" in warnings[0] and "Set MLFLOW_TRACKING_URI" in warnings[0]
    assert "checkpoint storage" in warnings[1] and "--storage-path or ANUNET_STORAGE" in warnings[1]


def test_no_warning_outside_a_job_or_when_set(in_workdir: Path, monkeypatch, caplog) -> None:
    monkeypatch.delenv(JOB_ENV, raising=False)
    with caplog.at_level(logging.WARNING):
        registry.tracking_uri()
        default_storage_path()
    monkeypatch.setenv(JOB_ENV, "{}")
    monkeypatch.setenv("ANUNET_STORAGE", str(in_workdir / "shared"))
    with caplog.at_level(logging.WARNING):
        registry.tracking_uri(workspace=in_workdir / "w")  # an explicit workspace is the caller's choice
        assert default_storage_path() == in_workdir / "shared"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
