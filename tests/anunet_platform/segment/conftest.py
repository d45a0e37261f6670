"""Fixtures shared by the segment package's tests: a tiny network's weights, and a model trained
and registered on synthetic CT (a real local Ray cluster and a SQLite MLflow store)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from anunet_core import ANUNet
from anunet_core.synthetic import make_archive

SIZE = 64  # model input of the model trained here
TINY_FILTERS = [4, 8, 16, 32, 64]


@pytest.fixture(scope="session")
def tiny_network() -> dict:
    """A depth-2 ANU-Net with few channels, as the ``SliceSegmenter`` receives it: its config
    and its state dict of numpy arrays (no Ray, no registry)."""
    torch.manual_seed(0)
    network = ANUNet(in_channels=1, filters=TINY_FILTERS, depth=2).eval()
    return {
        "config": {"in_channels": 1, "filters": TINY_FILTERS, "depth": 2},
        "weights": {k: v.detach().numpy().copy() for k, v in network.state_dict().items()},
        "network": network,
    }


#: Epochs of the models trained here: liver as the single-organ tests need it; spleen and kidney
#: only so that a several-organ run has three registered families (their quality is not tested).
#: Liver at 4 epochs (32 steps) registered a validation Dice of 0.67-0.68 at every depth: no better
#: than the training masks' mean blob (0.70 on the test archive), so "beats a predictor that learns
#: nothing" failed by chance in CI. At 12 epochs it registers 0.83-0.88 (L1-L4), for about 50 s more.
EPOCHS = {"liver": 12, "spleen": 1, "kidney": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """Ray (3 logical CPUs, with a spy counting the scans each worker reads: ``reads``), a
    SQLite MLflow store, and anunet-{liver,spleen,kidney}-ct-L1..L4 trained on one synthetic CT
    archive and promoted; the liver weights also as anunet-liver-mr-L1 (no alias) for the MR scan."""
    import ray
    import read_counter

    from anunet_platform import registry
    from anunet_platform.ingest import IngestConfig, run_ingest
    from anunet_platform.train import TrainConfig, run_training

    root = tmp_path_factory.mktemp("segment")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    ray.init(num_cpus=3, include_dashboard=False, logging_level="ERROR",
             runtime_env=read_counter.runtime_env(root / "reads"))
    try:
        make_archive(root / "train", cases=6, modality="CT", fmt="nifti", seed=11, shape=(64, 64, 16))
        runs = {}
        for organ, epochs in EPOCHS.items():
            run_ingest(IngestConfig(source=root / "train", out=root / f"dataset-{organ}", organ=organ, modality="CT",
                                    size=SIZE))
            runs[organ] = run_training(
                TrainConfig(data=root / f"dataset-{organ}", epochs=epochs, num_workers=1, cpus_per_worker=2,
                            batch_size=8, learning_rate=2e-3, storage_path=root / "ray_results", tracking_uri=uri,
                            register=True, cache_data=True, experiment="segment-test")
            )
            registry.promote(runs[organ].mlflow_run_id, uri=uri)
        result = runs["liver"]
        network, _ = registry.load_registered("anunet-liver-ct-L1", uri=uri)
        tags = registry.production_depths("liver", "CT", uri=uri)[1].tags
        registry.register_depths(
            network, run_id=result.mlflow_run_id, organ="liver", modality="MR", depths=[1],
            metrics={1: {"val_dice": float(tags["val_dice"]), "val_iou": float(tags["val_iou"])}}, alpha=0.5, gamma=2.0, dataset_checksum="test",
            input_size=SIZE, alias="", uri=uri,
        )
        yield {"root": root, "uri": uri, "train_seed": 11, "train_cases": 6, "runs": runs, "reads": root / "reads"}
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def assert_binary_mask_on(mask_path: Path, source) -> np.ndarray:
    """The mask is uint8 0/1 on the source's exact voxel grid; returns its array."""
    import nibabel as nib

    image = nib.load(mask_path)
    data = np.asarray(image.dataobj)
    assert image.get_data_dtype() == np.uint8 and data.shape == source.shape
    assert set(np.unique(data)) <= {0, 1}
    assert np.allclose(image.affine, source.affine, atol=1e-4), (image.affine, source.affine)
    return data


@pytest.fixture(scope="session")
def same_geometry():
    """:func:`assert_binary_mask_on`, for the test modules (conftest is not importable from them)."""
    return assert_binary_mask_on
