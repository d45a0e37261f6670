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

from anunet_platform.contracts import DatasetError, decode_batch, decode_table, read_slices, split_files
from anunet_platform.ingest import IngestConfig, run_ingest
from anunet_platform.train import (
    TrainConfig,
    build_trainer,
    check_worker_layout,
    cpus_per_run,
    depth_metrics,
    load_datasets,
    load_model_weights,
    run_training,
    training_batches,
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


def _shard(path: Path, images: np.ndarray, masks: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [i.tobytes() for i in images.astype("<f2")], "mask": [m.tobytes() for m in masks],
                             "size": pa.array([images.shape[-1]] * len(images), pa.int32())}), path)


def test_read_slices_permutes_a_group_of_shards_with_its_seed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((9, 8, 8)).astype(np.float16)
    masks = rng.integers(0, 2, (9, 8, 8), dtype=np.uint8)
    paths = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    _shard(Path(paths[0]), images[:4], masks[:4])
    _shard(Path(paths[1]), images[4:], masks[4:])
    in_order = read_slices(paths)
    assert in_order["image"].dtype == np.float16 and in_order["mask"].dtype == np.uint8
    np.testing.assert_array_equal(in_order["image"], images)
    np.testing.assert_array_equal(in_order["mask"], masks)
    shuffled = read_slices(paths, seed=(0, 0, 0))
    order = [int(np.flatnonzero((images == i).all(axis=(1, 2)))[0]) for i in shuffled["image"]]
    assert sorted(order) == list(range(9)) and order != list(range(9)), "every slice once, in another order"
    np.testing.assert_array_equal(shuffled["mask"], masks[order])  # each image keeps its mask
    np.testing.assert_array_equal(read_slices(paths, seed=(0, 0, 0))["image"], shuffled["image"])
    assert not np.array_equal(read_slices(paths, seed=(0, 1, 0))["image"], shuffled["image"])


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


def _slice_keys(images, masks) -> list[bytes]:
    """One key per slice: its image and mask bytes (what pairs them)."""
    images, masks = np.asarray(images, np.float16), np.asarray(masks, np.uint8)
    return [i.tobytes() + m.tobytes() for i, m in zip(images, masks)]


def _parquet_keys(dataset: Path, split: str) -> list[bytes]:
    import pyarrow.parquet as pq

    keys = []
    for f in split_files(dataset, split):
        out = decode_table(pq.read_table(f, columns=["image", "mask", "size"]))
        keys += _slice_keys(out["image"], out["mask"])
    return keys


def _epoch_keys(ds, config: TrainConfig, epoch: int) -> list[bytes]:
    keys = []
    for images, masks in training_batches(ds, config, epoch, torch.device("cpu")):
        assert images.dtype == masks.dtype == torch.float32 and images.shape[1:] == (1, 32, 32) == masks.shape[1:]
        assert set(masks.unique().tolist()) <= {0.0, 1.0}
        keys += _slice_keys(images[:, 0].numpy(), masks[:, 0].numpy())
    return keys


def test_the_training_split_streams_every_slice_once_per_epoch_in_a_seeded_order(dataset: Path) -> None:
    from collections import Counter

    expected = _parquet_keys(dataset, "train")
    assert len(set(expected)) == len(expected) > 20, "slices tell apart by their bytes"
    config = TrainConfig(data=dataset, epochs=2, batch_size=4, augment=False)
    orders = {}
    for seed in (0, 0, 1):
        train = load_datasets(dataset, seed=seed, block_slices=8)["train"]
        train.context.execution_options.preserve_order = True  # the blocks in read-task order: the seeded order
        for epoch in (0, 1):
            keys = _epoch_keys(train, config, epoch)
            assert Counter(keys) == Counter(expected), "every training slice once, each image with its own mask"
            orders.setdefault((seed, epoch), []).append(keys)
    assert orders[(0, 0)][0] == orders[(0, 0)][1] and orders[(0, 1)][0] == orders[(0, 1)][1], "the same seed, the same order"
    assert orders[(0, 0)][0] != orders[(0, 1)][0], "another epoch, another order"
    assert orders[(1, 0)][0] != orders[(0, 0)][0], "another seed, another order"
    assert orders[(0, 0)][0] != expected, "shuffled, not in file order"
    val = load_datasets(dataset)["val"]
    val.context.execution_options.preserve_order = True
    batches = list(val.iter_torch_batches(batch_size=5))
    assert batches[0]["image"].dtype == torch.float16 and batches[0]["mask"].dtype == torch.uint8
    assert _slice_keys(torch.cat([b["image"] for b in batches]).numpy(), torch.cat([b["mask"] for b in batches]).numpy()) \
        == _parquet_keys(dataset, "val"), "validation in file order"


def test_two_rank_shards_together_hold_every_training_slice_once(dataset: Path) -> None:
    expected = _parquet_keys(dataset, "train")
    config = TrainConfig(data=dataset, epochs=1, batch_size=4, augment=False)
    for cache in (False, True):
        shards = load_datasets(dataset, cache=cache, block_slices=8)["train"].streaming_split(2, equal=True)
        for epoch in (0, 1):
            per_rank: list[list[bytes]] = [[], []]
            threads = [threading.Thread(target=lambda r=r: per_rank[r].extend(
                _epoch_keys(shards[r], TrainConfig(**{**config.__dict__, "cache_data": cache}), epoch))) for r in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            union = per_rank[0] + per_rank[1]
            assert len(per_rank[0]) == len(per_rank[1]), "equal shards: DDP ranks step together"
            assert len(set(union)) == len(union) and set(union) <= set(expected), (cache, epoch)
            assert len(expected) - len(union) == len(expected) % 2, "only the odd slice out is left (Ray's equal split)"


def test_augmentation_keeps_shapes_and_pairs_and_is_seeded(dataset: Path) -> None:
    train = load_datasets(dataset, block_slices=8)["train"]
    train.context.execution_options.preserve_order = True
    config = TrainConfig(data=dataset, epochs=1, batch_size=4, augment=True)
    runs = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(7)
        runs.append(list(training_batches(train.iterator(), config, 0, torch.device("cpu"), generator)))
        train = load_datasets(dataset, block_slices=8)["train"]
        train.context.execution_options.preserve_order = True
    plain = list(training_batches(train.iterator(), TrainConfig(data=dataset, epochs=1, batch_size=4, augment=False), 0, torch.device("cpu")))
    assert len(runs[0]) == len(plain) > 0
    for (a_img, a_mask), (b_img, b_mask), (p_img, p_mask) in zip(runs[0], runs[1], plain):
        assert a_img.shape == p_img.shape and a_img.dtype == torch.float32 and a_mask.dtype == torch.float32
        torch.testing.assert_close(a_img, b_img, rtol=0, atol=0)  # the same generator, the same augmentation
        assert set(a_mask.unique().tolist()) <= {0.0, 1.0} and 0.0 <= float(a_img.min()) and float(a_img.max()) <= 1.0
    assert any(not torch.equal(a, p) for (a, _), (p, _) in zip(runs[0], plain)), "augmented"


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
