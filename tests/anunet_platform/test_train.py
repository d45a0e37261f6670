"""Training on Ray Train: a real 2-worker CPU run, registration per depth, fault tolerance, resume."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from anunet_core.synthetic import make_archive
from anunet_platform.ingest import IngestConfig, IngestError, run_ingest
from anunet_platform.train import DEPTHS, TrainConfig, build_trainer, decode_batch, load_model_weights, run_training


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    # 2 train workers + the Ray Data input pipeline on this 2-core machine: 3 logical CPUs.
    ray.init(num_cpus=3, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(ray_cluster, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    make_archive(root / "archive", cases=6, modality="CT", fmt="nifti", seed=3, shape=(48, 48, 12))
    run_ingest(IngestConfig(source=root / "archive", out=root / "dataset", organ="liver", modality="CT", size=32))
    return root / "dataset"


@pytest.fixture()
def tracking(tmp_path: Path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def config(dataset: Path, tmp_path: Path, **kwargs) -> TrainConfig:
    base = dict(data=dataset, epochs=2, num_workers=2, batch_size=4, storage_path=tmp_path / "ray_results")
    return TrainConfig(**(base | kwargs))


def test_decode_batch_restores_slices() -> None:
    image = np.random.default_rng(0).random((3, 16, 16)).astype("<f2")
    mask = (image > 0.5).astype(np.uint8)
    batch = {"image": np.array([i.tobytes() for i in image], dtype=object), "mask": np.array([m.tobytes() for m in mask], dtype=object), "size": np.full(3, 16)}
    out = decode_batch(batch)
    assert np.array_equal(out["image"], image) and np.array_equal(out["mask"], mask)


@pytest.mark.parametrize(
    "kwargs,message",
    [({"epochs": 0}, "--epochs"), ({"num_workers": 0}, "--num-workers"), ({"alpha": 2.0}, "--alpha"), ({"gamma": -1.0}, "--gamma")],
)
def test_bad_train_config_is_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(tmp_path, tmp_path, **kwargs)


def test_bad_and_empty_datasets_give_clear_errors(tmp_path: Path, tracking: str) -> None:
    with pytest.raises(IngestError, match="not an ingested dataset"):
        run_training(config(tmp_path / "nowhere", tmp_path))
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "summary.json").write_text('{"organ": "liver", "modality": "CT", "size": 32, "layout": "pairs", "label_values": null, "preprocessing_version": "x", "seed": 0, "source": "s"}')
    with pytest.raises(IngestError, match="no train slices"):
        run_training(config(empty, tmp_path))


@pytest.mark.slow
def test_two_worker_run_registers_every_depth(dataset: Path, tmp_path: Path, tracking: str) -> None:
    from mlflow.tracking import MlflowClient

    from anunet_platform.registry import load_registered, registered_model_name

    result = run_training(config(dataset, tmp_path, register=True, run_name="two-workers"))
    assert result.epochs_done == 2
    for d in DEPTHS:
        for key in ("dice", "iou", "precision", "recall"):
            assert 0.0 <= result.metrics[f"val_{key}_L{d}"] <= 1.0
    client = MlflowClient(tracking)
    # only rank 0 logs: one value per epoch, not one per worker
    history = client.get_metric_history(result.mlflow_run_id, "val_dice_L4")
    assert sorted(m.step for m in history) == [0, 1]
    assert {a.path for a in client.list_artifacts(result.mlflow_run_id)} >= {"checkpoint"}

    trained = load_model_weights(Path(result.checkpoint_path))
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for d in DEPTHS:
        model, version = load_registered(registered_model_name("liver", "CT", d), alias="candidate")
        assert version.tags["depth"] == str(d)
        with torch.no_grad():
            for a, b in zip(model(x), trained(x, depth=d)):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)

    # the same run name resumes: two more epochs continue from epoch 2, not from scratch
    resumed = run_training(config(dataset, tmp_path, epochs=4, run_name="two-workers"))
    checkpoints = sorted(p for p in (tmp_path / "ray_results" / "two-workers").glob("checkpoint_*") if p.is_dir())
    latest = json.loads((checkpoints[-1] / "state.json").read_text())
    assert latest["epoch"] == 3 and latest["metrics"]["resumed_from_epoch"] == 2 and resumed.epochs_done == 4
    assert 1 <= resumed.best_epoch <= 4
    assert resumed.mlflow_run_id == result.mlflow_run_id


def _train_worker_pids() -> list[int]:
    """Live Ray Train worker processes, found by the process title Ray gives actors."""
    import psutil

    pids = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if cmdline.startswith("ray::RayTrainWorker") and process.status() != psutil.STATUS_ZOMBIE:
            pids.append(process.pid)
    return sorted(pids)


@pytest.mark.slow
def test_killed_worker_is_replaced_and_training_resumes_from_checkpoint(dataset: Path, tmp_path: Path, tracking: str) -> None:
    cfg = config(dataset, tmp_path, epochs=4, run_name="killed", max_failures=2)
    trainer = build_trainer(cfg)
    outcome: dict = {}
    fit = threading.Thread(target=lambda: outcome.setdefault("result", trainer.fit()))
    fit.start()
    snapshot = tmp_path / "ray_results" / "killed" / "checkpoint_manager_snapshot.json"

    def registered_checkpoints() -> int:
        # the controller's own record: a checkpoint counts once every rank's report is in
        try:
            return len(json.loads(snapshot.read_text())["checkpoint_results"])
        except (OSError, ValueError, KeyError):
            return 0

    deadline = time.time() + 300
    while time.time() < deadline and registered_checkpoints() < 1:
        time.sleep(0.5)
    assert registered_checkpoints() >= 1, "no registered checkpoint before the kill"
    victims = _train_worker_pids()
    assert len(victims) == 2
    os.kill(victims[-1], signal.SIGKILL)  # a real worker process death, not an exception
    fit.join(timeout=600)
    result = outcome["result"]
    assert result.error is None
    assert result.metrics["epoch"] == 3
    assert result.metrics["resumed_from_epoch"] >= 1, "the replacement group must start from the checkpoint"
    assert set(_train_worker_pids()).isdisjoint(victims[-1:])


def test_unreachable_tracking_server_fails_fast_and_clearly(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    import socket

    from anunet_platform.registry import RegistryError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again once the block ends
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.time()
    with pytest.raises(RegistryError, match="unreachable"):
        run_training(config(dataset, tmp_path))
    assert time.time() - started < 20
