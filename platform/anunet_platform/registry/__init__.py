"""MLflow tracking and model registry: one registered model per pruning depth.

A training run ends with :func:`register_depths`: for each depth ``d`` the pruned network
``prune(model, d)`` becomes a new version of the registered model
``anunet-{organ}-{modality}-L{d}`` (see :func:`registered_model_name`), tagged with what
``segment --depth auto`` chooses by (``depth``, ``params``, ``val_dice``, ``val_iou``,
``latency_ms_per_slice``, ``input_size``, ``alpha``, ``gamma``, ``dataset``), and gets the
alias ``candidate``. A person (or CI) then runs ``jobs/promote.py --run-id RUN_ID``, which
moves the alias ``production`` to that run's four versions (:func:`promote`); segmentation
reads them back with :func:`production_depths` and :func:`load_registered`.

This package is the only one that imports ``mlflow``; the modules:

- ``store``: where the store is (:func:`tracking_uri`, :func:`current_uri`), a client, the
  reachability check of a tracking server, experiments;
- ``naming``: registered-model names, aliases, tag keys, :class:`RegisteredDepth`;
- ``register``: :func:`register_depths` (export, tags, alias per depth);
- ``lookup``: :func:`promote`, :func:`production_depths`, :func:`load_registered`;
- ``latency``: :func:`measure_latency_ms`; ``chart``: :func:`tradeoff_figure`;
- ``tracking``: the MLflow runs of training and tuning (opened, logged, ended).

Every public function takes ``uri=None``: the store this process already uses (see
:func:`current_uri`; call :func:`tracking_uri` once at the start of a job), else the default.
"""

from __future__ import annotations

from anunet_core.vocabulary import DEPTHS
from anunet_platform.registry import tracking
from anunet_platform.registry.chart import TRADEOFF_ARTIFACT, tradeoff_figure
from anunet_platform.registry.latency import measure_latency_ms
from anunet_platform.registry.lookup import depth_table, load_registered, production_depths, promote, run_promote
from anunet_platform.registry.naming import (
    CANDIDATE,
    CONFIG_FILE,
    EXTRA_FILES_DIR,
    PRODUCTION,
    TAG_KEYS,
    WEIGHTS_FILE,
    ModelName,
    RegisteredDepth,
    family_depths,
    family_name,
    parse_model_family,
    parse_registered_name,
    registered_model_name,
)
from anunet_platform.registry.register import register_depths
from anunet_platform.registry.store import (
    RegistryError,
    check_tracking_server,
    current_uri,
    ensure_experiment,
    tracking_uri,
)

__all__ = [
    "CANDIDATE",
    "CONFIG_FILE",
    "DEPTHS",
    "EXTRA_FILES_DIR",
    "PRODUCTION",
    "TAG_KEYS",
    "TRADEOFF_ARTIFACT",
    "WEIGHTS_FILE",
    "ModelName",
    "RegisteredDepth",
    "RegistryError",
    "check_tracking_server",
    "current_uri",
    "depth_table",
    "ensure_experiment",
    "family_depths",
    "family_name",
    "load_registered",
    "measure_latency_ms",
    "parse_model_family",
    "parse_registered_name",
    "production_depths",
    "promote",
    "register_depths",
    "registered_model_name",
    "run_promote",
    "tracking",
    "tracking_uri",
    "tradeoff_figure",
]
