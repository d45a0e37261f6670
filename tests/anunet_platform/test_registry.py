"""MLflow registry: one registered model per depth, tags, aliases, promotion and loading back.

Everything runs against a real MLflow store: a SQLite file in a temporary folder (and, in the
slow test, a real ``mlflow server``). Registering is the expensive part (``torch.export`` per
depth), so three training runs are registered once per module and shared:

- ``liver1``: liver/CT, model A, a FINISHED run resumed by ``register_depths``;
- ``kidney``: kidney/MR, model B;
- ``liver2``: liver/CT again (version 2 of each model), model C, registered from inside the
  active run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from anunet_core import ANUNet
from anunet_platform import registry
from anunet_platform.registry import RegistryError
from testkit import free_port, randomize_batchnorm, running_mlflow_server

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
TABLE6_PARAMS = {1: 103812, 2: 513387, 3: 2191829, 4: 8950594}
NAMES = {
    "liver1": [f"anunet-liver-ct-L{d}" for d in range(1, 5)],
    "liver2": [f"anunet-liver-ct-L{d}" for d in range(1, 5)],
    "kidney": [f"anunet-kidney-mr-L{d}" for d in range(1, 5)],
}
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def trained_like(seed: int) -> ANUNet:
    torch.manual_seed(seed)
    return randomize_batchnorm(ANUNet(), seed).eval()


def depth_metrics(seed: int) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(seed)
    return {
        d: {
            "val_dice": round(0.80 + 0.03 * d + float(rng.uniform(0, 0.01)), 6),
            "val_iou": round(0.70 + 0.03 * d, 6),
            "val_precision": 0.9,
            "val_recall": 0.88,
        }
        for d in range(1, 5)
    }


def _reset_mlflow_uri(mp: pytest.MonkeyPatch) -> None:
    """Isolate MLflow's process-wide tracking/registry URI (restored by ``mp`` afterwards)."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    mp.setattr(tracking_utils, "_tracking_uri", None)
    mp.setattr(registry_utils, "_registry_uri", None)
    for name in _URI_ENV:
        mp.delenv(name, raising=False)


@dataclass
class Registration:
    run_id: str
    model: ANUNet
    metrics: dict[int, dict[str, float]]
    organ: str
    modality: str
    alpha: float
    gamma: float
    dataset: str
    rows: list[registry.RegisteredDepth]


@dataclass
class Store:
    uri: str
    root: Path
    experiment_id: str
    runs: dict[str, Registration]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with pytest.MonkeyPatch.context() as mp:
        _reset_mlflow_uri(mp)
        root = tmp_path_factory.mktemp("mlflow")
        uri = f"sqlite:///{root / 'mlflow.db'}"
        experiment_id = registry.ensure_experiment("anunet-registry-test", uri=uri)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)

        def register(key: str, seed: int, organ: str, modality: str, active: bool) -> Registration:
            run_id = client.create_run(experiment_id, run_name=key).info.run_id
            reg = Registration(
                run_id=run_id,
                model=trained_like(seed),
                metrics=depth_metrics(seed),
                organ=organ,
                modality=modality,
                alpha=0.25 + 0.1 * seed,
                gamma=2.0,
                dataset=f"sha256-{key}",
                rows=[],
            )

            def call() -> list[registry.RegisteredDepth]:
                return registry.register_depths(
                    reg.model, run_id=run_id, organ=organ, modality=modality, metrics=reg.metrics,
                    alpha=reg.alpha, gamma=reg.gamma, dataset_checksum=reg.dataset, input_size=SIZE, uri=uri,
                )

            if active:  # the training job's own run, still active
                registry.current_uri(uri)
                with mlflow.start_run(run_id=run_id):
                    reg.rows = call()
                    assert mlflow.active_run().info.run_id == run_id, "the caller's run stays active"
            else:  # a finished run, resumed for registering
                client.set_terminated(run_id, "FINISHED")
                reg.rows = call()
            return reg

        runs = {
            "liver1": register("liver1", 0, "liver", "CT", active=False),
            "kidney": register("kidney", 1, "kidney", "MR", active=False),
            "liver2": register("liver2", 2, "liver", "CT", active=True),
        }
        yield Store(uri=uri, root=root, experiment_id=experiment_id, runs=runs)


@pytest.fixture
def client(store: Store, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A client of the module's store, which is also MLflow's current store for the test."""
    _reset_mlflow_uri(monkeypatch)
    registry.current_uri(store.uri)
    return MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)


# ----------------------------------------------------------------------------------------------
# Names and URIs
# ----------------------------------------------------------------------------------------------


def test_registered_model_name_is_the_design_contract() -> None:
    assert registry.registered_model_name("liver", "CT", 3) == "anunet-liver-ct-L3"
    assert registry.registered_model_name("Kidney", "mr", 1) == "anunet-kidney-mr-L1"
    for organ, modality, depth in [("liver", "PET", 1), ("liver", "CT", 5), ("liver", "CT", 0), ("li ver", "CT", 1)]:
        with pytest.raises(RegistryError):
            registry.registered_model_name(organ, modality, depth)


def test_tracking_uri_from_environment_or_workspace_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _reset_mlflow_uri(monkeypatch)
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


# ----------------------------------------------------------------------------------------------
# register_depths
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["liver1", "kidney"])
def test_register_depths_names_tags_and_candidate_alias(store: Store, client: MlflowClient, key: str) -> None:
    reg = store.runs[key]
    assert [r.name for r in reg.rows] == NAMES[key]
    assert [r.version for r in reg.rows] == ["1"] * 4
    for row in reg.rows:
        d = row.depth
        mv = client.get_model_version(row.name, row.version)
        assert mv.run_id == reg.run_id
        tags = mv.tags
        assert tags["depth"] == str(d)
        assert int(tags["params"]) == TABLE6_PARAMS[d]
        assert float(tags["val_dice"]) == reg.metrics[d]["val_dice"]
        assert float(tags["val_iou"]) == reg.metrics[d]["val_iou"]
        assert float(tags["val_recall"]) == reg.metrics[d]["val_recall"]
        assert tags["dataset"] == reg.dataset
        assert float(tags["alpha"]) == reg.alpha and float(tags["gamma"]) == reg.gamma
        assert tags["input_size"] == str(SIZE)
        assert float(tags["latency_ms_per_slice"]) > 0
        assert row.tags == {k: v for k, v in tags.items() if k in row.tags}
    assert all(str(client.get_model_version_by_alias(name, "candidate").version) == "1" for name in NAMES["kidney"])


def test_latency_grows_with_depth(store: Store) -> None:
    latency = [r.latency_ms_per_slice for r in store.runs["liver1"].rows]
    assert latency[0] < latency[3], f"L1 should be faster than L4: {latency}"


def test_registering_again_makes_version_2_and_moves_candidate(store: Store, client: MlflowClient) -> None:
    assert [r.version for r in store.runs["liver2"].rows] == ["2"] * 4
    for name in NAMES["liver2"]:
        assert str(client.get_model_version_by_alias(name, "candidate").version) == "2"
        assert "candidate" not in client.get_model_version(name, "1").aliases


def test_runs_get_the_tradeoff_chart_and_keep_their_status(store: Store, client: MlflowClient, tmp_path: Path) -> None:
    for reg in store.runs.values():
        assert "tradeoff.png" in [a.path for a in client.list_artifacts(reg.run_id)]
    png = Path(client.download_artifacts(store.runs["liver1"].run_id, "tradeoff.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert client.get_run(store.runs["liver1"].run_id).info.status == "FINISHED", "resumed run is left FINISHED"
    assert client.get_run(store.runs["liver2"].run_id).info.status == "FINISHED"


def test_artifacts_stay_in_the_store_folder(store: Store) -> None:
    assert any((store.root / "mlartifacts").rglob("anunet_state_dict.pt"))
    assert not (Path.cwd() / "mlruns").exists()


def test_register_depths_refuses_incomplete_metrics_before_logging(store: Store, client: MlflowClient) -> None:
    run_id = client.create_run(store.experiment_id).info.run_id
    metrics = depth_metrics(0)
    del metrics[3]["val_iou"]
    common = dict(
        run_id=run_id, organ="spleen", modality="CT", alpha=0.5, gamma=2.0, dataset_checksum="x", uri=store.uri
    )
    with pytest.raises(RegistryError, match="depth 3 lack val_iou"):
        registry.register_depths(ANUNet(), metrics=metrics, input_size=SIZE, **common)
    with pytest.raises(RegistryError, match="input_size"):
        registry.register_depths(ANUNet(), metrics=depth_metrics(0), input_size=40, **common)
    assert client.search_registered_models("name LIKE 'anunet-spleen%'") == []


# ----------------------------------------------------------------------------------------------
# Loading back
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key,version", [("liver1", "1"), ("liver2", "2")])
def test_load_registered_is_the_plain_network(store: Store, client: MlflowClient, key: str, version: str) -> None:
    reg = store.runs[key]
    x = torch.randn(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    for row in reg.rows:
        network, mv = registry.load_registered(row.name, version=version, uri=store.uri)
        assert type(network) is ANUNet and network.depth == row.depth and not network.training
        assert str(mv.version) == version and mv.run_id == reg.run_id
        with torch.no_grad():
            expected = reg.model(x, depth=row.depth)
            got = network(x)
        assert len(got) == row.depth
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_the_mlflow_model_is_a_pickle_free_export_of_the_deepest_head(store: Store, client: MlflowClient) -> None:
    reg = store.runs["liver1"]
    exported = mlflow.pytorch.load_model(f"models:/{NAMES['liver1'][1]}/1")  # data/model.pt2, no unpickling
    x = torch.randn(5, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))  # any batch size
    with torch.no_grad():
        torch.testing.assert_close(exported(x), reg.model(x, depth=2)[-1], atol=1e-5, rtol=0)


def test_load_registered_by_alias_and_its_errors(store: Store, client: MlflowClient) -> None:
    registry.promote(store.runs["liver2"].run_id, uri=store.uri)
    network, mv = registry.load_registered("anunet-liver-ct-L1", uri=store.uri)
    assert str(mv.version) == "2" and network.depth == 1
    with pytest.raises(RegistryError, match="no registered model named 'anunet-spleen-ct-L1'"):
        registry.load_registered("anunet-spleen-ct-L1", uri=store.uri)
    with pytest.raises(RegistryError, match="has no alias 'production'"):
        registry.load_registered("anunet-kidney-mr-L1", uri=store.uri)
    with pytest.raises(RegistryError, match="no version 9"):
        registry.load_registered("anunet-kidney-mr-L1", version="9", uri=store.uri)


# ----------------------------------------------------------------------------------------------
# Promotion
# ----------------------------------------------------------------------------------------------


def test_promote_moves_production_between_runs(store: Store, client: MlflowClient) -> None:
    first = registry.promote(store.runs["liver1"].run_id, uri=store.uri)
    assert first == [(name, "1") for name in NAMES["liver1"]]
    assert all(str(client.get_model_version_by_alias(n, "production").version) == "1" for n in NAMES["liver1"])

    second = registry.promote(store.runs["liver2"].run_id, organ="liver", modality="CT", uri=store.uri)
    assert second == [(name, "2") for name in NAMES["liver2"]]
    for name in NAMES["liver2"]:
        assert str(client.get_model_version_by_alias(name, "production").version) == "2"
        assert "production" not in client.get_model_version(name, "1").aliases


def test_promote_refuses_unknown_or_incomplete_runs(store: Store, client: MlflowClient) -> None:
    with pytest.raises(RegistryError, match="no MLflow run 0123456789abcdef"):
        registry.promote("0123456789abcdef0123456789abcdef", uri=store.uri)
    with pytest.raises(RegistryError, match="not an MLflow run id"):
        registry.promote("x' OR name LIKE '%", uri=store.uri)
    empty = client.create_run(store.experiment_id).info.run_id
    with pytest.raises(RegistryError, match="registered no model versions"):
        registry.promote(empty, uri=store.uri)
    with pytest.raises(RegistryError, match="exactly one .* per depth"):
        registry.promote(store.runs["kidney"].run_id, organ="liver", uri=store.uri)


def _job(*args: str, uri: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _URI_ENV} | {"MLFLOW_TRACKING_URI": uri}
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / "promote.py"), *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=cwd,
    )


def test_promote_job(store: Store, client: MlflowClient, tmp_path: Path) -> None:
    result = _job("--run-id", store.runs["liver1"].run_id, uri=store.uri, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for row in store.runs["liver1"].rows:
        line = next(line for line in result.stdout.splitlines() if line.startswith(row.name + " "))
        assert line.split()[1] == "1" and f"{row.val_dice:.4f}" in line
        assert str(client.get_model_version_by_alias(row.name, "production").version) == "1"
    assert "latency" in result.stdout and "val_dice" in result.stdout

    bad = _job("--run-id", "0123456789abcdef0123456789abcdef", uri=store.uri, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0, bad.stderr
    assert bad.stderr.startswith("jobs/promote.py: error: no MLflow run")
    assert not (tmp_path / "anunet-workspace").exists(), "MLFLOW_TRACKING_URI was used"


# ----------------------------------------------------------------------------------------------
# What segmentation reads
# ----------------------------------------------------------------------------------------------


def test_production_depths(store: Store, client: MlflowClient, caplog: pytest.LogCaptureFixture) -> None:
    registry.promote(store.runs["liver2"].run_id, uri=store.uri)
    chosen = registry.production_depths("liver", "CT", uri=store.uri)
    assert sorted(chosen) == [1, 2, 3, 4]
    assert all(chosen[d].version == "2" and "production" in chosen[d].aliases for d in chosen)
    assert chosen[3].tags["val_dice"] == str(store.runs["liver2"].metrics[3]["val_dice"])
    assert chosen[4].params == TABLE6_PARAMS[4]

    with caplog.at_level(logging.WARNING, logger="anunet_platform.registry"):
        fallback = registry.production_depths("kidney", "MR", uri=store.uri)
    assert {d: r.version for d, r in fallback.items()} == {1: "1", 2: "1", 3: "1", 4: "1"}
    assert sum("has no alias 'production'" in m for m in caplog.messages) == 4

    with pytest.raises(RegistryError, match="no registered versions"):
        registry.production_depths("spleen", "CT", uri=store.uri)


def test_production_depths_falls_back_to_the_newest_version(store: Store, client: MlflowClient) -> None:
    registry.promote(store.runs["liver2"].run_id, alias="staging", uri=store.uri)
    client.delete_registered_model_alias("anunet-liver-ct-L2", "staging")
    client.set_registered_model_alias("anunet-liver-ct-L1", "staging", "1")
    chosen = registry.production_depths("liver", "CT", alias="staging", uri=store.uri)
    assert {d: r.version for d, r in chosen.items()} == {1: "1", 2: "2", 3: "2", 4: "2"}


# ----------------------------------------------------------------------------------------------
# Tracking server
# ----------------------------------------------------------------------------------------------


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
def test_register_and_load_through_a_real_mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _reset_mlflow_uri(monkeypatch)
    with running_mlflow_server(tmp_path) as uri:
        registry.check_tracking_server(uri)
        experiment_id = registry.ensure_experiment("anunet-server-test", uri=uri)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        run_id = client.create_run(experiment_id).info.run_id
        model, metrics = trained_like(5), depth_metrics(5)
        rows = registry.register_depths(
            model, run_id=run_id, organ="spleen", modality="MR", metrics=metrics, alpha=0.5, gamma=1.0,
            dataset_checksum="sha256-server", input_size=SIZE, uri=uri,
        )
        assert [(r.name, r.version) for r in rows] == [(f"anunet-spleen-mr-L{d}", "1") for d in range(1, 5)]
        assert registry.promote(run_id, uri=uri) == [(r.name, "1") for r in rows]
        network, mv = registry.load_registered("anunet-spleen-mr-L3", uri=uri)
        assert mv.tags["params"] == str(TABLE6_PARAMS[3])
        x = torch.randn(2, 1, SIZE, SIZE)
        with torch.no_grad():
            torch.testing.assert_close(network(x)[-1], model(x, depth=3)[-1], atol=1e-5, rtol=0)
        assert any((tmp_path / "artifacts").rglob("model.pt2")), "artifacts went through the server's proxy"
