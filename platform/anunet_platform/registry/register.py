"""Registering a training run's depths: ``prune(model, d)`` becomes a version of ``anunet-{organ}-{modality}-L{d}``
(of ``{arch}-{organ}-{modality}[-L{d}]`` for the paper's baselines, :mod:`anunet_core.baselines`).

What a registered version holds (an MLflow model, ``mlflow.pytorch`` flavour)
    * ``data/model.pt2``: the depth-``d`` network exported with ``torch.export``
      (``serialization_format="pt2"``, MLflow 3's default), wrapped so that it returns the
      deepest head's logits ``(B, 1, H, W)`` only: what the logged signature says, what
      ``mlflow models serve`` / pyfunc can return. The graph takes any batch and any H, W
      that are multiples of 16 (the signature's shape is ``(-1, C, -1, -1)``; the export's
      guards refuse other sizes with ``Guard failed: ... % 16 == 0``); the training size is
      the model's ``input_size`` metadata and tag. Loading it needs torch and MLflow, no
      project code, and MLflow checks the archive is pickle-free before loading.
    * ``extra_files/anunet_state_dict.pt`` + ``extra_files/anunet_config.json``: the exact
      :class:`~anunet_core.ANUNet` or baseline (its ``state_dict``, tensors only, and its
      constructor arguments with ``arch``), from which :func:`~anunet_platform.registry.lookup.load_registered` rebuilds
      it with ``torch.load(weights_only=True)``: nothing is unpickled (DESIGN rule).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anunet_core.baselines import NETWORKS, arch_of, at_depth, network_config, output_depths
from anunet_core.errors import one_line
from anunet_core.model import count_parameters
from anunet_platform.registry.chart import TRADEOFF_ARTIFACT, tradeoff_figure
from anunet_platform.registry.latency import cpu_float, measure_latency_ms
from anunet_platform.registry.naming import (
    CANDIDATE,
    CONFIG_FILE,
    REQUIRED_METRICS,
    TAG_KEYS,
    WEIGHTS_FILE,
    RegisteredDepth,
    family_name,
    registered_model_name,
)
from anunet_platform.registry.store import RegistryError, check_tracking_server, client

logger = logging.getLogger(__name__)


class _DeepestLogits(nn.Module):
    """Serving view of a depth-d network: ``x -> logits of head d`` (one tensor, as the pyfunc
    flavour and the logged signature require). Only its ``torch.export`` graph is saved."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[-1]


@contextlib.contextmanager
def _in_run(run_id: str, mlflow_client) -> Iterator[None]:
    """Make run ``run_id`` the active MLflow run for the block (it may already be active).

    A run that was not active is resumed and afterwards set back to the status it had (a
    FINISHED run stays FINISHED), so registering never ends someone else's run early.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    try:
        status = mlflow_client.get_run(run_id).info.status
        mlflow.start_run(run_id=run_id, nested=active is not None)
    except MlflowException as exc:
        raise RegistryError(f"cannot use MLflow run {run_id}: {one_line(exc, limit=300)}") from None
    try:
        yield
    finally:
        mlflow.end_run(status=status)


def _pip_requirements() -> list[str]:
    import mlflow

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
    ]


def check_request(
    model: nn.Module, depths: Sequence[int] | None, input_size: int, metrics: Mapping[int, Mapping[str, float]]
) -> list[int]:
    """The sorted depths to register (None: every depth the network has), once the request is
    known to be complete (nothing logged yet)."""
    if type(model) not in NETWORKS.values():
        raise TypeError(f"register_depths expects a network of anunet_core.baselines.NETWORKS, got {type(model).__name__}")
    have = output_depths(model)
    depths = sorted(set(have if depths is None else depths))
    if not depths or any(d not in have for d in depths):
        raise RegistryError(f"depths must be among {', '.join(map(str, have))} for this {arch_of(model)} network, got {depths}")
    if input_size < 16 or input_size % 16:
        raise RegistryError(f"input_size must be a positive multiple of 16, got {input_size}")
    for d in depths:
        if d not in metrics:
            raise RegistryError(f"no validation metrics for depth {d} (have depths {sorted(metrics)})")
        missing = [k for k in REQUIRED_METRICS if k not in metrics[d]]
        if missing:
            raise RegistryError(f"metrics of depth {d} lack {', '.join(missing)} (have {sorted(metrics[d])})")
        bad = {k: v for k, v in metrics[d].items() if not math.isfinite(float(v))}
        if bad:
            raise RegistryError(f"metrics of depth {d} are not finite: {bad}")
    return depths


def version_tags(
    network: nn.Module, latency_ms: float, metrics: Mapping[str, float], *, input_size: int, alpha: float,
    gamma: float, dataset_checksum: str, organ: str, modality: str,
) -> dict[str, str]:
    """The tags of one depth's version: the DESIGN's ``TAG_KEYS``, every metric, organ and modality."""
    return {
        "depth": str(network.depth),
        "params": str(count_parameters(network)),
        **{key: str(float(value)) for key, value in metrics.items()},
        "latency_ms_per_slice": f"{latency_ms:.4f}",
        "input_size": str(input_size),
        "alpha": str(float(alpha)),
        "gamma": str(float(gamma)),
        "dataset": str(dataset_checksum),
        "arch": arch_of(network),
        "organ": str(organ).lower(),
        "modality": str(modality).upper(),
    }


def write_network_files(network: nn.Module, input_size: int, folder: Path) -> list[str]:
    """The version's extra files, written into ``folder``: tensors-only weights and constructor
    config (:func:`~anunet_core.baselines.network_config` plus ``input_size``)."""
    folder.mkdir(parents=True)
    torch.save(network.state_dict(), folder / WEIGHTS_FILE)
    config = network_config(network) | {"input_size": input_size}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return [str(folder / WEIGHTS_FILE), str(folder / CONFIG_FILE)]


def serving_signature(channels: int):
    """The exported graph's signature: ``(B, channels, H, W)`` float32 in, ``(B, 1, H, W)``
    logits out, every size but the channels free (-1). MLflow exports each -1 dimension as
    dynamic (``torch.export.Dim.AUTO``); the network's pooling adds the multiple-of-16 guard."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1))]),
    )


def log_network(network: nn.Module, name: str, tags: Mapping[str, str], extra_files: list[str], example: np.ndarray) -> str:
    """Log ``network`` (its deepest head, exported for any batch and any H, W that are
    multiples of 16) into the active run as a new version of registered model ``name``,
    tagged; returns the version. ``example`` ``(B, C, S, S)`` with B > 1 (a size-1 dimension
    would be exported as a constant) and S the training size, recorded as ``input_size``."""
    import mlflow

    info = mlflow.pytorch.log_model(
        _DeepestLogits(network),
        name=f"{arch_of(network)}-L{network.depth}",
        signature=serving_signature(example.shape[1]),
        input_example=example,
        metadata={"input_size": int(example.shape[-1]), "size_multiple": 16},
        pip_requirements=_pip_requirements(),
        extra_files=extra_files,
        serialization_format="pt2",
        registered_model_name=name,
        tags=dict(tags),  # on the LoggedModel and, at creation, on the new model version
        # Model.log's own check (load the pt2 back, predict the example) costs seconds per
        # depth; the tests load the export instead. Only valid with pt2: with "pickle" the
        # extra keyword would reach torch.save.
        validate_serving_input=False,
    )
    return str(info.registered_model_version)


def registered_by_run(mlflow_client, name: str, run_id: str):
    """The ``READY`` version of registered model ``name`` that run ``run_id`` created, or None
    (the oldest, should there be several): what a retried registration reuses."""
    versions = [
        mv for mv in mlflow_client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
        if str(mv.status) == "READY"
    ]
    if not versions:
        return None
    oldest = min(versions, key=lambda mv: int(mv.version))
    return mlflow_client.get_model_version(name, oldest.version)  # search results may lack aliases


def register_depths(
    model: nn.Module,
    *,
    run_id: str,
    organ: str,
    modality: str,
    metrics: Mapping[int, Mapping[str, float]],
    alpha: float,
    gamma: float,
    dataset_checksum: str,
    input_size: int,
    depths: Sequence[int] | None = None,
    alias: str = CANDIDATE,
    uri: str | None = None,
    extra_tags: Mapping[int, Mapping[str, str]] | None = None,
) -> list[RegisteredDepth]:
    """Register ``prune(model, d)`` for every ``d`` in ``depths`` from the existing run ``run_id``
    (a network with one output: itself, as depth 4).

    Args:
        model: the trained network, ANU-Net or one of :mod:`anunet_core.baselines` (any
            device; a CPU float32 copy is what gets logged); its architecture names the models.
        run_id: the training run; the models are logged into it (resumed if not active).
        organ, modality: name the registered models (:func:`registered_model_name`).
        metrics: ``{depth: {"val_dice": ..., "val_iou": ..., ...}}``; every key becomes a tag.
        alpha, gamma: the hybrid loss's focal parameters, tagged.
        dataset_checksum: ``DatasetSummary.checksum`` of the training data, tagged ``dataset``.
        input_size: slice side the network was trained on; the export and latency use it.
        depths: which depths to register (default: all the network has, 1..4 or 4).
        alias: set on each new version (moved from older ones); default ``candidate``.
        uri: tracking/registry URI (default :func:`current_uri`).
        extra_tags: ``{depth: {tag: text}}`` set on that depth's version as well (e.g. the
            post-processing decision: ``postprocess`` on/off and its reason).

    Idempotent per run: a depth this run already registered (a driver killed midway, then
    retried) keeps its version (:func:`registered_by_run`); only the missing depths are
    registered, so the run still promotes as one set. Also logs ``tradeoff.png``
    (:func:`tradeoff_figure`) to the run. Returns one :class:`RegisteredDepth` per depth, in
    depth order.
    """
    depths = check_request(model, depths, input_size, metrics)
    arch = arch_of(model)
    names = {d: registered_model_name(organ, modality, d, arch) for d in depths}
    uri, mlflow_client = client(uri)
    check_tracking_server(uri)

    source = cpu_float(model)
    example = np.zeros((2, source.in_channels, input_size, input_size), dtype=np.float32)  # batch 2: a dynamic batch
    described = dict(input_size=input_size, alpha=alpha, gamma=gamma, dataset_checksum=dataset_checksum, organ=organ,
                     modality=modality)
    registered: list[RegisteredDepth] = []
    with _in_run(run_id, mlflow_client), tempfile.TemporaryDirectory(prefix="anunet-register-") as tmp:
        for d in depths:
            existing = registered_by_run(mlflow_client, names[d], run_id)
            if existing is not None:  # a retried registration: complete the set, never duplicate it
                version, tags = str(existing.version), dict(existing.tags)
                logger.info("%s version %s: already registered by run %s, kept", names[d], version, run_id)
            else:
                network = at_depth(source, d).eval()
                tags = version_tags(network, measure_latency_ms(source, d, input_size), metrics[d], **described)
                tags |= {str(k): str(v) for k, v in (extra_tags or {}).get(d, {}).items()}
                files = write_network_files(network, input_size, Path(tmp) / f"L{d}")
                version = log_network(network, names[d], tags, files, example)
                summary = ", ".join(f"{k}={tags[k]}" for k in TAG_KEYS)
                logger.info("registered %s version %s (%s)", names[d], version, summary)
            if alias:
                mlflow_client.set_registered_model_alias(names[d], alias, version)
            registered.append(RegisteredDepth(names[d], version, d, tags, (alias,) if alias else ()))
        title = f"{family_name(organ, modality, arch)}: Dice vs CPU latency ({input_size}px)"
        mlflow_client.log_figure(run_id, tradeoff_figure(registered, title), TRADEOFF_ARTIFACT)
    return registered
