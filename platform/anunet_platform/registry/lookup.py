"""Finding registered versions again: promotion to ``production``, what segmentation chooses among, loading a model.

A person (or CI) runs ``jobs/promote.py --run-id RUN_ID``, which moves the alias
``production`` to that run's four versions (:func:`promote`); segmentation reads them back
with :func:`production_depths` and :func:`load_registered`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from torch import nn

from anunet_core.baselines import network_from_config
from anunet_core.errors import one_line
from anunet_platform.registry.naming import (
    CONFIG_FILE,
    EXTRA_FILES_DIR,
    PRODUCTION,
    WEIGHTS_FILE,
    RegisteredDepth,
    check_run_id,
    family_depths,
    family_name,
    parse_registered_name,
    registered_model_name,
)
from anunet_platform.registry.store import RegistryError, check_tracking_server, client

logger = logging.getLogger(__name__)


def run_depth_versions(mlflow_client, uri: str, run_id: str, organ: str | None, modality: str | None) -> list:
    """The one version per depth of one family that run ``run_id`` registered, in depth order:
    ``{arch}-<organ>-<modality>-L<d>`` for d = 1..4 (ANU-Net, UNet++), or the one
    ``{arch}-<organ>-<modality>`` of a network with one output (``organ``/``modality`` narrow
    the search); else RegistryError."""
    from mlflow.exceptions import MlflowException

    found = list(mlflow_client.search_model_versions(f"run_id='{check_run_id(run_id)}'"))
    if not found:
        try:
            mlflow_client.get_run(run_id)
        except MlflowException:
            raise RegistryError(f"no MLflow run {run_id} in {uri}") from None
        raise RegistryError(f"run {run_id} registered no model versions in {uri}")
    by_depth: dict[int, list] = {}
    families = set()
    for mv in found:
        parsed = parse_registered_name(mv.name)
        if parsed is None:
            continue
        if organ is not None and parsed.organ != organ.lower():
            continue
        if modality is not None and parsed.modality != modality.upper():
            continue
        by_depth.setdefault(parsed.depth, []).append(mv)
        families.add((parsed.arch, parsed.organ, parsed.modality))
    expected = family_depths(next(iter(families))[0]) if len(families) == 1 else None
    if expected is None or tuple(sorted(by_depth)) != expected or any(len(v) != 1 for v in by_depth.values()):
        listing = ", ".join(sorted(f"{mv.name} v{mv.version}" for mv in found))
        raise RegistryError(
            f"run {run_id} must have registered one family of one organ and modality: exactly one "
            f"<arch>-<organ>-<modality>-L<d> version per depth 1..4 (anunet, unetpp) or one <arch>-<organ>-<modality> "
            f"version (the other networks); found: {listing}"
        )
    return [by_depth[d][0] for d in expected]


def promote(
    run_id: str,
    organ: str | None = None,
    modality: str | None = None,
    alias: str = PRODUCTION,
    uri: str | None = None,
) -> list[tuple[str, str]]:
    """Move ``alias`` (default ``production``) to the versions registered by run ``run_id``.

    The run must have registered one family (:func:`run_depth_versions`): one version per
    depth 1..4 under ``{arch}-{organ}-{modality}-L{d}``, or the one version of a network with
    one output (``organ``/``modality`` narrow the search when given). Returns
    ``[(name, version)]`` in depth order.
    """
    uri, mlflow_client = client(uri)
    check_tracking_server(uri)
    promoted = []
    for mv in run_depth_versions(mlflow_client, uri, run_id, organ, modality):
        mlflow_client.set_registered_model_alias(mv.name, alias, mv.version)
        promoted.append((mv.name, str(mv.version)))
        logger.info("alias %r -> %s version %s", alias, mv.name, mv.version)
    return promoted


def run_promote(run_id: str, alias: str = PRODUCTION, uri: str | None = None) -> list[RegisteredDepth]:
    """``jobs/promote.py``: :func:`promote`, then log name / version / val_dice / latency."""
    uri, mlflow_client = client(uri)
    promoted = promote(run_id, alias=alias, uri=uri)
    rows = [
        RegisteredDepth.from_version(mlflow_client.get_model_version(name, version), parse_registered_name(name).depth)
        for name, version in promoted
    ]
    logger.info("alias %r now marks the versions of run %s (%s):\n%s", alias, run_id, uri, depth_table(rows))
    return rows


def depth_table(rows: Sequence[RegisteredDepth]) -> str:
    """A plain-text table: name, version, params, val_dice, latency (ms/slice)."""
    width = max([len("name"), *(len(r.name) for r in rows)])
    lines = [f"{'name':<{width}} {'version':>7} {'params':>10} {'val_dice':>9} {'latency ms/slice':>17}"]
    for r in rows:
        lines.append(
            f"{r.name:<{width}} {r.version:>7} {r.params:>10} {r.val_dice:>9.4f} {r.latency_ms_per_slice:>17.3f}"
        )
    return "\n".join(lines)


def _resolve_version(mlflow_client, name: str, alias: str | None, version: str | None):
    from mlflow.exceptions import MlflowException

    try:
        registered = mlflow_client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model named {name!r}") from None
    if version is not None:
        try:
            return mlflow_client.get_model_version(name, str(version))
        except MlflowException:
            raise RegistryError(f"registered model {name!r} has no version {version}") from None
    aliases = dict(registered.aliases or {})
    if alias not in aliases:
        have = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
        raise RegistryError(f"registered model {name!r} has no alias {alias!r} (aliases: {have})")
    return mlflow_client.get_model_version_by_alias(name, alias)


def _network_from_files(folder: Path, name: str, version: str) -> nn.Module:
    """The network of a version's extra files: constructor config
    (:func:`~anunet_core.baselines.network_from_config`) + tensors-only weights."""
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise RegistryError(f"{name} version {version} was not registered by anunet_platform (no {CONFIG_FILE})")
    config = json.loads(config_path.read_text())
    network = network_from_config(config)
    network.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True), strict=True)
    return network


def load_registered(
    name: str, alias: str = PRODUCTION, version: str | None = None, uri: str | None = None
) -> tuple[nn.Module, object]:
    """The plain network (:class:`~anunet_core.ANUNet` or a baseline) of a registered version (eval mode, CPU) and its
    ``ModelVersion``: by ``alias`` (default ``production``) unless ``version`` is given.

    Rebuilt from the version's ``anunet_config.json`` and tensors-only state dict
    (``torch.load(weights_only=True)``): nothing is unpickled.
    """
    import mlflow

    uri, mlflow_client = client(uri)
    check_tracking_server(uri)
    mv = _resolve_version(mlflow_client, name, alias, version)
    with tempfile.TemporaryDirectory(prefix="anunet-load-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{mv.version}/{EXTRA_FILES_DIR}", dst_path=tmp
            )
        except Exception as exc:  # noqa: BLE001 - a missing or foreign model: say which, one line
            raise RegistryError(
                f"{name} version {mv.version} has no network weights "
                f"({EXTRA_FILES_DIR}/{WEIGHTS_FILE}): {one_line(exc, limit=300)}"
            ) from None
        network = _network_from_files(Path(local), name, mv.version)
    return network.eval(), mv


def production_depths(
    organ: str, modality: str, alias: str = PRODUCTION, uri: str | None = None, *, fallback_to_newest: bool = True,
    arch: str = "anunet",
) -> dict[int, RegisteredDepth]:
    """``{depth: RegisteredDepth}`` of the versions carrying ``alias`` for organ and modality
    in the family of ``arch`` (a network with one output: ``{4: ...}``).

    A depth whose model has versions but none with ``alias``: with ``fallback_to_newest`` its
    newest version is used and a warning logged; without, :class:`RegistryError` naming every
    such model (the nightly job runs only promoted versions unless told otherwise). A depth
    with no registered model is left out. :class:`RegistryError` when no depth has any version.
    """
    from mlflow.exceptions import MlflowException

    uri, mlflow_client = client(uri)
    check_tracking_server(uri)
    chosen: dict[int, RegisteredDepth] = {}
    unpromoted: list[str] = []
    for d in family_depths(arch):
        name = registered_model_name(organ, modality, d, arch)
        try:
            mv = mlflow_client.get_model_version_by_alias(name, alias)
        except MlflowException:
            versions = list(mlflow_client.search_model_versions(f"name='{name}'"))
            if not versions:
                continue
            newest = max(versions, key=lambda v: int(v.version))
            mv = mlflow_client.get_model_version(name, newest.version)  # search results may lack aliases
            unpromoted.append(f"{name} (newest version {mv.version})")
            if fallback_to_newest:
                logger.warning("%s has no alias %r; using its newest version %s", name, alias, mv.version)
        chosen[d] = RegisteredDepth.from_version(mv, d)
    if not chosen:
        depths = f"-L1..L{family_depths(arch)[-1]}" if len(family_depths(arch)) > 1 else ""
        raise RegistryError(f"no registered versions of {family_name(organ, modality, arch)}{depths} in {uri}")
    if unpromoted and not fallback_to_newest:
        raise RegistryError(
            f"no version with alias {alias!r} for {', '.join(unpromoted)}: promote a training run "
            f"(jobs/promote.py --run-id RUN_ID) or pass --allow-unpromoted to run the newest versions"
        )
    return chosen
