"""Finding versions again: loading a registered network, promotion (and jobs/promote.py), and
the per-depth versions segmentation chooses among."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from anunet_core import ANUNet
from anunet_platform import registry
from anunet_platform.registry import RegistryError

REPO = Path(__file__).resolve().parents[3]
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


# ----------------------------------------------------------------------------------------------
# Loading back
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key,version", [("liver1", "1"), ("liver2", "2")])
def test_load_registered_is_the_plain_network(store, client: MlflowClient, key: str, version: str) -> None:
    reg = store.runs[key]
    x = torch.randn(3, 1, store.size, store.size, generator=torch.Generator().manual_seed(7))
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


@pytest.mark.parametrize("depth", [2, 4])
def test_the_mlflow_model_is_a_pickle_free_export_of_the_deepest_head_at_any_size(
    store, client: MlflowClient, depth: int
) -> None:
    """The serving graph takes any batch and any H, W that are multiples of 16 (not only the
    training size), says so in its signature, and refuses other sizes."""
    reg = store.runs["liver1"]
    uri = f"models:/{store.names['liver1'][depth - 1]}/1"
    exported = mlflow.pytorch.load_model(uri)  # data/model.pt2, no unpickling
    generator = torch.Generator().manual_seed(3)
    for shape in [(5, 1, store.size, store.size), (1, 1, 3 * store.size // 2, 2 * store.size)]:
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            got = exported(x)
            assert got.shape == (shape[0], 1, *shape[2:])
            torch.testing.assert_close(got, reg.model(x, depth=depth)[-1], atol=1e-5, rtol=0)
    with pytest.raises(Exception, match=r"Guard failed: .* % \d+ == 0"):  # 2 ** depth divides H and W
        exported(torch.zeros(1, 1, store.size + 2, store.size))
    info = mlflow.models.get_model_info(uri)
    assert [spec.shape for spec in info.signature.inputs.inputs] == [(-1, 1, -1, -1)]
    assert [spec.shape for spec in info.signature.outputs.inputs] == [(-1, 1, -1, -1)]
    assert info.metadata == {"input_size": store.size, "size_multiple": 16}


def test_load_registered_by_alias_and_its_errors(store, client: MlflowClient) -> None:
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


def test_promote_moves_production_between_runs(store, client: MlflowClient) -> None:
    first = registry.promote(store.runs["liver1"].run_id, uri=store.uri)
    assert first == [(name, "1") for name in store.names["liver1"]]
    assert all(str(client.get_model_version_by_alias(n, "production").version) == "1" for n in store.names["liver1"])

    second = registry.promote(store.runs["liver2"].run_id, organ="liver", modality="CT", uri=store.uri)
    assert second == [(name, "2") for name in store.names["liver2"]]
    for name in store.names["liver2"]:
        assert str(client.get_model_version_by_alias(name, "production").version) == "2"
        assert "production" not in client.get_model_version(name, "1").aliases


def test_promote_refuses_unknown_or_incomplete_runs(store, client: MlflowClient) -> None:
    with pytest.raises(RegistryError, match="no MLflow run 0123456789abcdef"):
        registry.promote("0123456789abcdef0123456789abcdef", uri=store.uri)
    with pytest.raises(RegistryError, match="not an MLflow run id"):
        registry.promote("x' OR name LIKE '%", uri=store.uri)
    empty = client.create_run(store.experiment_id).info.run_id
    with pytest.raises(RegistryError, match="registered no model versions"):
        registry.promote(empty, uri=store.uri)
    with pytest.raises(RegistryError, match="exactly one .* per depth"):
        registry.promote(store.runs["kidney"].run_id, organ="liver", uri=store.uri)


def test_depth_table_lines(store) -> None:
    rows = store.runs["kidney"].rows
    lines = registry.depth_table(rows).splitlines()
    assert lines[0].split() == ["name", "version", "params", "val_dice", "latency", "ms/slice"]
    for row, line in zip(rows, lines[1:], strict=True):
        name, version, params, dice, latency = line.split()
        assert (name, version, int(params)) == (row.name, "1", row.params)
        assert dice == f"{row.val_dice:.4f}" and latency == f"{row.latency_ms_per_slice:.3f}"


def _job(*args: str, uri: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in URI_ENV} | {"MLFLOW_TRACKING_URI": uri}
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / "promote.py"), *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=cwd,
    )


def test_promote_job(store, client: MlflowClient, tmp_path: Path) -> None:
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


def test_production_depths(store, client: MlflowClient, caplog: pytest.LogCaptureFixture, table6_params) -> None:
    registry.promote(store.runs["liver2"].run_id, uri=store.uri)
    chosen = registry.production_depths("liver", "CT", uri=store.uri)
    assert sorted(chosen) == [1, 2, 3, 4]
    assert all(chosen[d].version == "2" and "production" in chosen[d].aliases for d in chosen)
    assert chosen[3].tags["val_dice"] == str(store.runs["liver2"].metrics[3]["val_dice"])
    assert chosen[4].params == table6_params[4]

    with caplog.at_level(logging.WARNING, logger="anunet_platform.registry"):
        fallback = registry.production_depths("kidney", "MR", uri=store.uri)
    assert {d: r.version for d, r in fallback.items()} == {1: "1", 2: "1", 3: "1", 4: "1"}
    assert sum("has no alias 'production'" in m for m in caplog.messages) == 4
    with pytest.raises(RegistryError, match=r"no version with alias 'production' for anunet-kidney-mr-L1 \(newest version 1\), "
                       r"anunet-kidney-mr-L2 .*anunet-kidney-mr-L4 \(newest version 1\): promote .*--allow-unpromoted"):
        registry.production_depths("kidney", "MR", uri=store.uri, fallback_to_newest=False)
    assert sorted(registry.production_depths("liver", "CT", uri=store.uri, fallback_to_newest=False)) == [1, 2, 3, 4]

    with pytest.raises(RegistryError, match="no registered versions"):
        registry.production_depths("spleen", "CT", uri=store.uri)


def test_production_depths_falls_back_to_the_newest_version(store, client: MlflowClient) -> None:
    registry.promote(store.runs["liver2"].run_id, alias="staging", uri=store.uri)
    client.delete_registered_model_alias("anunet-liver-ct-L2", "staging")
    client.set_registered_model_alias("anunet-liver-ct-L1", "staging", "1")
    chosen = registry.production_depths("liver", "CT", alias="staging", uri=store.uri)
    assert {d: r.version for d, r in chosen.items()} == {1: "1", 2: "2", 3: "2", 4: "2"}
