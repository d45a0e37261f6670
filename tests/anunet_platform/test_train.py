"""Training on Ray Train: a real 2-worker CPU run, registration per depth, fault tolerance, resume."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from anunet_platform.contracts import DatasetError, decode_batch
from anunet_platform.ingest import IngestConfig, run_ingest
from anunet_platform.train import (
    TrainConfig,
    build_trainer,
    check_worker_layout,
    cpus_per_run,
    depth_metrics,
    load_model_weights,
    run_training,
)

from anunet_core.metrics import ConfusionCounts
from anunet_core.synthetic import make_archive
from anunet_core.vocabulary import DEPTHS


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


def test_depth_metrics_from_confusion_counts() -> None:
    counts = [ConfusionCounts(torch.tensor(tp), torch.tensor(fp), torch.tensor(fn)) for tp, fp, fn in
              [(0, 0, 10), (5, 5, 0), (6, 2, 2), (9, 1, 0)]]
    metrics = depth_metrics(counts)
    assert metrics["val_dice_L1"] == 0.0 and metrics["val_recall_L1"] == 0.0
    assert metrics["val_dice_L2"] == pytest.approx(10 / 15) and metrics["val_precision_L2"] == pytest.approx(0.5)
    assert metrics["val_iou_L3"] == pytest.approx(6 / 10) and metrics["val_recall_L3"] == pytest.approx(0.75)
    assert metrics["val_dice"] == metrics["val_dice_L4"] == pytest.approx(18 / 19), "Tune's metric is the deepest head"


def test_a_network_with_one_output_reports_depth_4_only() -> None:
    metrics = depth_metrics([ConfusionCounts(torch.tensor(9), torch.tensor(1), torch.tensor(0))], depths=(4,))
    assert metrics["val_dice"] == metrics["val_dice_L4"] == pytest.approx(18 / 19)
    assert not any(f"_L{d}" in key for key in metrics for d in (1, 2, 3))
    with pytest.raises(ValueError):
        depth_metrics([ConfusionCounts(torch.tensor(9), torch.tensor(1), torch.tensor(0))])  # four depths, one count


@pytest.mark.parametrize("arch", ["anunet", "unet", "unetpp"])
def test_a_checkpoint_loads_back_as_its_own_architecture(tmp_path: Path, arch: str) -> None:
    import json

    from anunet_core.baselines import arch_of, build_network
    from anunet_platform.train import load_model_weights

    torch.manual_seed(0)
    network = build_network(arch)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 0, "metrics": {}, "arch": arch}))
    loaded = load_model_weights(tmp_path)
    assert arch_of(loaded) == arch and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), network.state_dict().values()))
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 0, "metrics": {}}))  # written before --arch
    if arch == "anunet":
        assert arch_of(load_model_weights(tmp_path)) == "anunet"


@pytest.mark.parametrize(
    "kwargs,message",
    [({"epochs": 0}, "--epochs"), ({"num_workers": 0}, "--num-workers"), ({"alpha": 2.0}, "--alpha"), ({"gamma": -1.0}, "--gamma"),
     ({"arch": "vnet"}, "--arch: arch must be one of anunet, unet")],
)
def test_bad_train_config_is_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(tmp_path, tmp_path, **kwargs)


def test_bad_and_empty_datasets_give_clear_errors(tmp_path: Path, tracking: str) -> None:
    with pytest.raises(DatasetError, match="not an ingested dataset"):
        run_training(config(tmp_path / "nowhere", tmp_path))
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "summary.json").write_text('{"organ": "liver", "modality": "CT", "size": 32, "layout": "pairs", "label_values": null, "preprocessing_version": "x", "seed": 0, "source": "s"}')
    with pytest.raises(DatasetError, match="no train slices"):
        run_training(config(empty, tmp_path))


@pytest.mark.slow
def test_two_worker_run_registers_every_depth(dataset: Path, tmp_path: Path, tracking: str) -> None:
    from anunet_platform.registry import load_registered, registered_model_name
    from mlflow.tracking import MlflowClient

    result = run_training(config(dataset, tmp_path, register=True, run_name="two-workers"))
    assert result.epochs_done == 2
    for d, m in result.depth_metrics().items():  # one set of confusion counts behind all four
        assert m["val_iou"] == pytest.approx(m["val_dice"] / (2 - m["val_dice"]))
        p, r = m["val_precision"], m["val_recall"]
        assert m["val_dice"] * (p + r) == pytest.approx(2 * p * r, abs=1e-12), d  # Dice: harmonic mean of p and r
    assert result.metrics["val_dice_L4"] > 0.0, "the trained network finds some liver"
    client = MlflowClient(tracking)
    # only rank 0 logs: one value per epoch, not one per worker
    history = client.get_metric_history(result.mlflow_run_id, "val_dice_L4")
    assert sorted(m.step for m in history) == [0, 1]
    dice_by_epoch = {m.step: m.value for m in client.get_metric_history(result.mlflow_run_id, "val_dice")}
    assert result.metrics["val_dice"] == pytest.approx(max(dice_by_epoch.values())), "the best epoch is what is kept"
    assert dice_by_epoch[result.best_epoch - 1] == pytest.approx(result.metrics["val_dice"])
    registered = {r["depth"]: r for r in result.registered}
    assert sorted(registered) == list(DEPTHS)
    cases = json.loads(Path(client.download_artifacts(result.mlflow_run_id, "validation_cases.json",
                                                      str(tmp_path))).read_text())
    for d in DEPTHS:
        tags = registered[d]["tags"]
        assert float(tags["val_dice"]) == result.metrics[f"val_dice_L{d}"], "tags are the best epoch's"
        before = [c["dice"] for c in cases[f"L{d}"]]
        after = [c["dice_postprocessed"] for c in cases[f"L{d}"]]
        assert len(before) == int(tags["val_cases"]) > 0, "every validation case is scored"
        assert float(tags["val_volume_dice"]) == pytest.approx(np.mean(before))
        assert float(tags["val_volume_dice_postprocessed"]) == pytest.approx(np.mean(after))
        assert tags["postprocess"] == ("on" if np.mean(after) > np.mean(before) else "off"), tags["postprocess_reason"]
    assert {a.path for a in client.list_artifacts(result.mlflow_run_id)} >= {"checkpoint", "validation_cases.json"}

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
    assert resumed.mlflow_run_id == result.mlflow_run_id
    dice_by_epoch = {m.step: m.value for m in client.get_metric_history(result.mlflow_run_id, "val_dice")}
    assert sorted(dice_by_epoch) == [0, 1, 2, 3], "the resumed epochs log into the same MLflow run"
    assert dice_by_epoch[resumed.best_epoch - 1] == pytest.approx(max(dice_by_epoch.values()))


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


@pytest.mark.parametrize(
    "layout,shape,message",
    [
        ({"num_workers": 1, "cpus_per_worker": 2}, (2, 2, 0), "need 3 CPUs; the cluster has 2"),  # the hang
        ({"num_workers": 3, "cpus_per_worker": 1}, (8, 3, 0), "need 4 CPUs; the cluster has 3"),
        ({"num_workers": 1, "cpus_per_worker": 4}, (2, 8, 0), "the largest node has 2 CPUs"),
        ({"num_workers": 2, "use_gpu": True}, (8, 8, 1), "needs 2 GPUs; the cluster has 1"),
    ],
)
def test_worker_layouts_that_would_hang_are_refused(tmp_path: Path, layout: dict, shape: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_worker_layout(TrainConfig(data=tmp_path, epochs=1, **layout), *shape)


@pytest.mark.parametrize(
    "layout,shape",
    [
        ({"num_workers": 1, "cpus_per_worker": 1}, (2, 2, 0)),
        ({"num_workers": 2, "cpus_per_worker": 1}, (2, 3, 0)),
        ({"num_workers": 1, "cpus_per_worker": 2, "cache_data": True}, (2, 2, 0)),  # decoded before the workers start
        ({"num_workers": 2, "use_gpu": True}, (4, 4, 2)),
    ],
)
def test_layouts_that_fit_pass(tmp_path: Path, layout: dict, shape: tuple) -> None:
    check_worker_layout(TrainConfig(data=tmp_path, epochs=1, **layout), *shape)
    config = TrainConfig(data=tmp_path, epochs=1, **layout)
    assert cpus_per_run(config.num_workers, config.cpus_per_worker, not config.cache_data) <= shape[1]


def test_the_layout_that_hung_is_refused_on_a_real_cluster_in_seconds(dataset: Path, tmp_path: Path, tracking: str) -> None:
    """The issue's hang on the module's 3-CPU Ray: every CPU to the workers, none for the data."""
    started = time.time()
    with pytest.raises(ValueError, match="need 4 CPUs; the cluster has 3"):
        run_training(config(dataset, tmp_path, num_workers=1, cpus_per_worker=3))
    assert time.time() - started < 10


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
