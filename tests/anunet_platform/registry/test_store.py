"""Where the store is: the tracking URI, the reachability check of a server, experiments; and the
whole cycle (register, promote, load) through a real ``mlflow server``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from anunet_platform import registry
from anunet_platform.registry import RegistryError
from testkit import free_port, running_mlflow_server


def test_tracking_uri_from_environment_or_workspace_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_mlflow: None
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    assert registry.tracking_uri(tmp_path / "ignored") == f"sqlite:///{tmp_path / 'env.db'}"

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    uri = registry.tracking_uri()
    assert uri == f"sqlite:///{tmp_path / 'anunet-workspace' / 'mlflow.db'}"
    assert (tmp_path / "anunet-workspace").is_dir() and Path(uri[len("sqlite:///") :]).is_absolute()
    assert mlflow.get_tracking_uri() == uri and mlflow.get_registry_uri() == uri
    assert "MLFLOW_TRACKING_URI" not in os.environ, "the environment is left as the caller had it"
    other = registry.tracking_uri(tmp_path / "other")
    assert other == f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}", "a second workspace is not pinned to the first"
    assert registry.current_uri() == other, "uri=None: the store this process uses"


def test_ensure_experiment_creates_restores_and_keeps_artifacts_beside_the_db(sqlite_uri: str, tmp_path: Path) -> None:
    first = registry.ensure_experiment("anunet/a test", uri=sqlite_uri)
    assert registry.ensure_experiment("anunet/a test", uri=sqlite_uri) == first, "found again, not created twice"
    client = MlflowClient(tracking_uri=sqlite_uri)
    experiment = client.get_experiment(first)
    assert experiment.artifact_location == (tmp_path / "mlartifacts" / "anunet_a_test").as_uri()
    client.delete_experiment(first)
    assert registry.ensure_experiment("anunet/a test", uri=sqlite_uri) == first
    assert client.get_experiment(first).lifecycle_stage == "active"


def test_unreachable_tracking_server_fails_fast() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.perf_counter()
    with pytest.raises(RegistryError) as info:
        registry.check_tracking_server(uri)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert message.startswith(f"MLflow tracking server at {uri} is unreachable: ") and "\n" not in message
    assert "Connection refused" in message
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_local_stores_need_no_check(tmp_path: Path) -> None:
    registry.check_tracking_server(f"sqlite:///{tmp_path / 'x.db'}")


@pytest.mark.slow
def test_register_and_load_through_a_real_mlflow_server(
    tmp_path: Path, isolated_mlflow: None, trained_like, depth_metrics, size: int, table6_params: dict[int, int]
) -> None:
    with running_mlflow_server(tmp_path) as uri:
        registry.check_tracking_server(uri)
        experiment_id = registry.ensure_experiment("anunet-server-test", uri=uri)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        run_id = client.create_run(experiment_id).info.run_id
        model, metrics = trained_like(5), depth_metrics(5)
        rows = registry.register_depths(
            model, run_id=run_id, organ="spleen", modality="MR", metrics=metrics, alpha=0.5, gamma=1.0,
            dataset_checksum="sha256-server", input_size=size, uri=uri,
        )
        assert [(r.name, r.version) for r in rows] == [(f"anunet-spleen-mr-L{d}", "1") for d in range(1, 5)]
        assert registry.promote(run_id, uri=uri) == [(r.name, "1") for r in rows]
        network, mv = registry.load_registered("anunet-spleen-mr-L3", uri=uri)
        assert mv.tags["params"] == str(table6_params[3])
        x = torch.randn(2, 1, size, size)
        with torch.no_grad():
            torch.testing.assert_close(network(x)[-1], model(x, depth=3)[-1], atol=1e-5, rtol=0)
        assert any((tmp_path / "artifacts").rglob("model.pt2")), "artifacts went through the server's proxy"
