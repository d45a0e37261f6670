"""What the registry tests share: trained-looking networks, their metrics, and one real MLflow
store (a SQLite file in a temporary folder) where three training runs are registered once for
the whole package (registering is the expensive part: ``torch.export`` per depth):

- ``liver1``: liver/CT, model A, a FINISHED run resumed by ``register_depths``;
- ``kidney``: kidney/MR, model B;
- ``liver2``: liver/CT again (version 2 of each model), model C, registered from inside the
  active run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from anunet_core import ANUNet
from anunet_platform import registry
from testkit import randomize_batchnorm

SIZE = 32
TABLE6_PARAMS = {1: 103812, 2: 513387, 3: 2191829, 4: 8950594}
NAMES = {
    "liver1": [f"anunet-liver-ct-L{d}" for d in range(1, 5)],
    "liver2": [f"anunet-liver-ct-L{d}" for d in range(1, 5)],
    "kidney": [f"anunet-kidney-mr-L{d}" for d in range(1, 5)],
}
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


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


def reset_mlflow_uri(mp: pytest.MonkeyPatch) -> None:
    """Isolate MLflow's process-wide tracking/registry URI (restored by ``mp`` afterwards)."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    mp.setattr(tracking_utils, "_tracking_uri", None)
    mp.setattr(registry_utils, "_registry_uri", None)
    for name in URI_ENV:
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
    size: int = SIZE  # the slice side every run registered with
    names: dict[str, list[str]] = field(default_factory=lambda: NAMES)


@pytest.fixture(scope="package")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with pytest.MonkeyPatch.context() as mp:
        reset_mlflow_uri(mp)
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
    """A client of the package's store, which is also MLflow's current store for the test."""
    reset_mlflow_uri(monkeypatch)
    registry.current_uri(store.uri)
    return MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)


@pytest.fixture
def sqlite_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty SQLite store of its own, MLflow's current store for the test."""
    reset_mlflow_uri(monkeypatch)
    return registry.current_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")


# Helpers as fixtures: test modules here import nothing from this file (pytest's importlib mode).


@pytest.fixture(scope="session")
def size() -> int:
    """The slice side of every registered network."""
    return SIZE


@pytest.fixture(scope="session")
def table6_params() -> dict[int, int]:
    """Parameters per depth of the paper's Table 6."""
    return dict(TABLE6_PARAMS)


@pytest.fixture(name="trained_like", scope="session")
def trained_like_fixture():
    """``trained_like(seed)``: an eval-mode ANUNet with non-trivial BatchNorm statistics."""
    return trained_like


@pytest.fixture(name="depth_metrics", scope="session")
def depth_metrics_fixture():
    """``depth_metrics(seed)``: plausible validation metrics per depth."""
    return depth_metrics


@pytest.fixture
def isolated_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracking/registry URI set in this process or its environment for the test."""
    reset_mlflow_uri(monkeypatch)
