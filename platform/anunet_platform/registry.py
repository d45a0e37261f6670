"""MLflow tracking and model registry: one registered model per pruning depth.

A training run ends with :func:`register_depths`: for each depth ``d`` the pruned network
``prune(model, d)`` becomes a new version of the registered model
``anunet-{organ}-{modality}-L{d}`` (see :func:`registered_model_name`), tagged with what
``segment --depth auto`` chooses by (``depth``, ``params``, ``val_dice``, ``val_iou``,
``latency_ms_per_slice``, ``input_size``, ``alpha``, ``gamma``, ``dataset``), and gets the
alias ``candidate``. A person (or CI) then runs ``jobs/promote.py --run-id RUN_ID``, which
moves the alias ``production`` to that run's four versions (:func:`promote`); segmentation
reads them back with :func:`production_depths` and :func:`load_registered`.

Where things are stored
    :func:`tracking_uri`: ``MLFLOW_TRACKING_URI`` when set (an ``mlflow server`` in
    production), else an embedded SQLite database ``<workspace>/mlflow.db``. Tracking and
    registry always share that one store.

What a registered version holds (an MLflow model, ``mlflow.pytorch`` flavour)
    * ``data/model.pt2``: the depth-``d`` network exported with ``torch.export``
      (``serialization_format="pt2"``, MLflow 3's default), wrapped so that it returns the
      deepest head's logits ``(B, 1, S, S)`` only: what the logged signature says, what
      ``mlflow models serve`` / pyfunc can return. Loading it needs torch and MLflow, no
      project code, and MLflow checks the archive is pickle-free before loading.
    * ``extra_files/anunet_state_dict.pt`` + ``extra_files/anunet_config.json``: the exact
      :class:`~anunet_core.ANUNet` (its ``state_dict``, tensors only, and its constructor
      arguments). :func:`load_registered` rebuilds the plain ``ANUNet`` from these with
      ``torch.load(weights_only=True)``: nothing is unpickled (DESIGN rule), only
      ``anunet_core`` is needed, and ``model(x)`` returns the usual list of head logits.

Every public function takes ``uri=None``: the store this process already uses (see
:func:`current_uri`; call :func:`tracking_uri` once at the start of a job), else the default.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anunet_core.inference import optimize_for_inference
from anunet_core.model import MAX_DEPTH, ANUNet, count_parameters, prune
from anunet_platform.cluster import warn_if_ephemeral

logger = logging.getLogger(__name__)

DEFAULT_WORKSPACE = Path("anunet-workspace")
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
DEPTHS: tuple[int, ...] = tuple(range(1, MAX_DEPTH + 1))
CANDIDATE = "candidate"
PRODUCTION = "production"
WEIGHTS_FILE = "anunet_state_dict.pt"
CONFIG_FILE = "anunet_config.json"
EXTRA_FILES_DIR = "extra_files"  # where mlflow.pytorch.save_model puts extra_files
TRADEOFF_ARTIFACT = "tradeoff.png"
REQUIRED_METRICS = ("val_dice", "val_iou")
# The version tags of the DESIGN contract (plus input_size; any further per-depth metrics, e.g.
# val_precision and val_recall, and organ/modality are tagged too).
TAG_KEYS = (
    "depth",
    "params",
    "val_dice",
    "val_iou",
    "latency_ms_per_slice",
    "input_size",
    "alpha",
    "gamma",
    "dataset",
)
_NAME_PATTERN = re.compile(r"^anunet-(?P<organ>[a-z0-9_]+)-(?P<modality>[a-z0-9_]+)-L(?P<depth>[0-9]+)$")
_RUN_ID_PATTERN = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
CHECK_TIMEOUT_S = 3


class RegistryError(ValueError):
    """A registry operation cannot be done (unreachable server, unknown run/model/alias, ...)."""


@dataclass(frozen=True)
class RegisteredDepth:
    """One registered model version of one depth: ``name``/``version`` and its tags."""

    name: str
    version: str
    depth: int
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def val_dice(self) -> float:
        return float(self.tags.get("val_dice", "nan"))

    @property
    def latency_ms_per_slice(self) -> float:
        return float(self.tags.get("latency_ms_per_slice", "nan"))

    @property
    def params(self) -> int:
        return int(self.tags.get("params", "0"))


# ----------------------------------------------------------------------------------------------
# Where the store is
# ----------------------------------------------------------------------------------------------


def tracking_uri(workspace: Path | None = None) -> str:
    """The tracking (and registry) URI; also made MLflow's current tracking and registry URI.

    ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<workspace>/mlflow.db`` with
    ``workspace`` (default ``./anunet-workspace``) created and made absolute.

    Why SQLite and not the ``./mlruns`` file store: MLflow 3 itself defaults to
    ``sqlite:///mlflow.db`` and falls back to the file store only when an old ``mlruns`` folder
    exists (backward compatibility; the file backend is being deprecated); the model registry
    (aliases, version search by run and tag) is meant for a database backend, and SQLite
    serialises the writes of the several processes (Ray Tune trials, jobs) sharing a workspace.

    MLflow's ``set_tracking_uri``/``set_registry_uri`` also export the URI to the environment;
    that is undone here so that the result depends only on the environment the caller had
    (a later call with another ``workspace`` is not silently pinned to the first one).
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        root = Path(workspace if workspace is not None else DEFAULT_WORKSPACE).expanduser().absolute()
        root.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root / DB_FILE}"
        if workspace is None:
            warn_if_ephemeral(root / DB_FILE, "the MLflow store", "MLFLOW_TRACKING_URI to a tracking server")
    return _use(uri)


@contextlib.contextmanager
def _environ_restored(names) -> Iterator[None]:
    """Put the environment variables ``names`` back as they were when the block ends."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _use(uri: str) -> str:
    """Make ``uri`` MLflow's tracking and registry URI in this process; leave ``os.environ`` be."""
    import mlflow

    with _environ_restored(_URI_ENV):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return uri


def current_uri(uri: str | None = None) -> str:
    """``uri`` if given, else the store this process already uses (an earlier
    :func:`tracking_uri` call or ``mlflow.set_tracking_uri``, then ``MLFLOW_TRACKING_URI``),
    else :func:`tracking_uri` (the default workspace). Made MLflow's tracking and registry URI."""
    import mlflow

    if uri is None:
        return _use(mlflow.get_tracking_uri()) if mlflow.is_tracking_uri_set() else tracking_uri()
    return _use(uri)


def _client(uri: str | None):
    """``(uri, MlflowClient)`` for :func:`current_uri` of ``uri``."""
    from mlflow import MlflowClient

    uri = current_uri(uri)
    return uri, MlflowClient(tracking_uri=uri, registry_uri=uri)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


_NETWORK_REASON = re.compile(r"(\[Errno -?\d+\][^'\")]*|(?:Read|Connect(?:ion)?) timed out)")


def _network_reason(exc: BaseException) -> str:
    """The root cause of a failed MLflow HTTP call (``[Errno 111] Connection refused``, ``Read
    timed out``...) rather than the wrapper's 300 characters of retry plumbing."""
    text = _one_line(exc, limit=2000)
    match = _NETWORK_REASON.search(text)
    if not match:
        return _one_line(exc)
    reason = match.group(1).strip().rstrip(".")
    return f"{reason} (no answer within {CHECK_TIMEOUT_S} s)" if reason.endswith("timed out") else reason


def check_tracking_server(uri: str) -> None:
    """For an ``http(s)`` URI, fail fast (a few seconds) unless the MLflow server answers.

    Raises :class:`RegistryError` ``"MLflow tracking server at <uri> is unreachable: <reason>"``.
    Other URIs (SQLite, a database) are local: nothing to check.
    """
    if not uri.lower().startswith(("http://", "https://")):
        return
    from mlflow import MlflowClient

    overrides = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(CHECK_TIMEOUT_S)}
    with _environ_restored(overrides):
        os.environ.update(overrides)
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable"; say why in one line
            raise RegistryError(f"MLflow tracking server at {uri} is unreachable: {_network_reason(exc)}") from None


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """The id of experiment ``name``, created if missing; restored if deleted.

    With a local SQLite store the experiment's artifacts go to ``<db folder>/mlartifacts/``
    (MLflow would otherwise use ``./mlruns`` of whatever the current directory is); with a
    server, its ``--artifacts-destination`` decides.
    """
    uri, client = _client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"
        location = (db.parent / ARTIFACTS_DIR / safe).absolute().as_uri()
    return client.create_experiment(name, artifact_location=location)


# ----------------------------------------------------------------------------------------------
# Names, latency, the trade-off chart
# ----------------------------------------------------------------------------------------------


def registered_model_name(organ: str, modality: str, depth: int) -> str:
    """``anunet-{organ}-{modality}-L{depth}``: organ and modality lower case, e.g.
    ``registered_model_name("liver", "CT", 3) == "anunet-liver-ct-L3"``."""
    organ_l, modality_l = str(organ).strip().lower(), str(modality).strip().lower()
    if not re.fullmatch(r"[a-z0-9_]+", organ_l):
        raise RegistryError(f"organ must be a lower-case word like 'liver', got {organ!r}")
    if modality_l not in ("ct", "mr"):
        raise RegistryError(f"modality must be CT or MR, got {modality!r}")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth not in DEPTHS:
        raise RegistryError(f"depth must be an int in 1..{MAX_DEPTH}, got {depth!r}")
    return f"anunet-{organ_l}-{modality_l}-L{depth}"


_FAMILY_PATTERN = re.compile(r"^anunet-(?P<organ>[a-z0-9_]+)-(?P<modality>ct|mr)(?:-L(?P<depth>[0-9]+))?$")


def parse_model_family(name: str) -> tuple[str, str, int | None]:
    """``(organ, modality, depth)`` of a family name ``anunet-{organ}-{modality}`` (depth None)
    or of one registered name ``anunet-{organ}-{modality}-L{depth}``, e.g.
    ``parse_model_family("anunet-liver-ct") == ("liver", "CT", None)``."""
    match = _FAMILY_PATTERN.fullmatch(str(name).strip())
    if match is None or (match["depth"] is not None and int(match["depth"]) not in DEPTHS):
        raise RegistryError(
            f"model must be a family name like 'anunet-liver-ct' (or one depth, 'anunet-liver-ct-L2'), got {name!r}"
        )
    depth = None if match["depth"] is None else int(match["depth"])
    return match["organ"], match["modality"].upper(), depth


def _family(organ: str, modality: str) -> str:
    """``anunet-{organ}-{modality}``: the registered names without ``-L{depth}``."""
    return registered_model_name(organ, modality, 1).rsplit("-L", 1)[0]


def _cpu_float(model: ANUNet) -> ANUNet:
    reference = next(model.parameters())
    if reference.device.type == "cpu" and reference.dtype == torch.float32:
        return model
    return prune(model, model.depth).to(device="cpu", dtype=torch.float32)


def measure_latency_ms(model: ANUNet, depth: int, input_size: int, batch: int = 4, rounds: int = 5) -> float:
    """Median CPU milliseconds per slice of ``optimize_for_inference(model, depth)`` on
    ``(batch, 1, input_size, input_size)`` inputs (one warm-up batch, then ``rounds``)."""
    net = optimize_for_inference(_cpu_float(model), depth)
    x = torch.randn(batch, model.in_channels, input_size, input_size, generator=torch.Generator().manual_seed(0))
    net(x)  # warm-up: oneDNN primitive creation, allocator
    times = []
    for _ in range(max(1, rounds)):
        start = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / batch


def tradeoff_figure(rows: Sequence[RegisteredDepth], title: str = ""):
    """The per-depth trade-off chart (the paper's Fig. 13): x latency (ms/slice), y
    validation Dice, bubble area proportional to parameters, labelled ``L{d}`` + params."""
    from matplotlib.figure import (
        Figure,  # no pyplot: no global backend or figure state (Agg)
    )

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.add_subplot()
    largest = max(r.params for r in rows) or 1
    for r in sorted(rows, key=lambda r: r.depth):
        area = 3000 * r.params / largest + 40  # points^2
        ax.scatter(r.latency_ms_per_slice, r.val_dice, s=area, alpha=0.45, edgecolors="black")
        ax.annotate(
            f"L{r.depth} ({r.params / 1e6:.2f}M)",
            (r.latency_ms_per_slice, r.val_dice),
            xytext=(math.sqrt(area / math.pi) + 4, 0),  # right of the bubble's edge
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=9,
        )
    ax.set_xlabel("CPU latency (ms per slice)")
    ax.set_ylabel("validation Dice")
    ax.set_title(title or "ANU-Net pruning depths: accuracy vs speed")
    ax.margins(x=0.35, y=0.25)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Registering a training run's depths
# ----------------------------------------------------------------------------------------------


class _DeepestLogits(nn.Module):
    """Serving view of a depth-d network: ``x -> logits of head d`` (one tensor, as the pyfunc
    flavour and the logged signature require). Only its ``torch.export`` graph is saved."""

    def __init__(self, network: ANUNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[-1]


@contextlib.contextmanager
def _in_run(run_id: str, client) -> Iterator[None]:
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
        status = client.get_run(run_id).info.status
        mlflow.start_run(run_id=run_id, nested=active is not None)
    except MlflowException as exc:
        raise RegistryError(f"cannot use MLflow run {run_id}: {_one_line(exc)}") from None
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


def _check_metrics(metrics: Mapping[int, Mapping[str, float]], depths: Sequence[int]) -> None:
    for d in depths:
        if d not in metrics:
            raise RegistryError(f"no validation metrics for depth {d} (have depths {sorted(metrics)})")
        missing = [k for k in REQUIRED_METRICS if k not in metrics[d]]
        if missing:
            raise RegistryError(f"metrics of depth {d} lack {', '.join(missing)} (have {sorted(metrics[d])})")
        bad = {k: v for k, v in metrics[d].items() if not math.isfinite(float(v))}
        if bad:
            raise RegistryError(f"metrics of depth {d} are not finite: {bad}")


def register_depths(
    model: ANUNet,
    *,
    run_id: str,
    organ: str,
    modality: str,
    metrics: Mapping[int, Mapping[str, float]],
    alpha: float,
    gamma: float,
    dataset_checksum: str,
    input_size: int,
    depths: Sequence[int] = DEPTHS,
    alias: str = CANDIDATE,
    uri: str | None = None,
) -> list[RegisteredDepth]:
    """Register ``prune(model, d)`` for every ``d`` in ``depths`` from the existing run ``run_id``.

    Args:
        model: the trained network (any device; a CPU float32 copy is what gets logged).
        run_id: the training run; the models are logged into it (resumed if not active).
        organ, modality: name the registered models (:func:`registered_model_name`).
        metrics: ``{depth: {"val_dice": ..., "val_iou": ..., ...}}``; every key becomes a tag.
        alpha, gamma: the hybrid loss's focal parameters, tagged.
        dataset_checksum: ``DatasetSummary.checksum`` of the training data, tagged ``dataset``.
        input_size: slice side the network was trained on; the export and latency use it.
        depths: which depths to register (default all four).
        alias: set on each new version (moved from older ones); default ``candidate``.
        uri: tracking/registry URI (default :func:`current_uri`).

    Also logs ``tradeoff.png`` (:func:`tradeoff_figure`) to the run. Returns one
    :class:`RegisteredDepth` per depth, in depth order.
    """
    import mlflow
    from mlflow.models import infer_signature

    if not isinstance(model, ANUNet):
        raise TypeError(f"register_depths expects an ANUNet, got {type(model).__name__}")
    depths = sorted(set(depths))
    if not depths or any(d not in DEPTHS or d > model.depth for d in depths):
        raise RegistryError(f"depths must be within 1..{model.depth} for this network, got {depths}")
    if input_size < 16 or input_size % 16:
        raise RegistryError(f"input_size must be a positive multiple of 16, got {input_size}")
    _check_metrics(metrics, depths)
    names = {d: registered_model_name(organ, modality, d) for d in depths}
    uri, client = _client(uri)
    check_tracking_server(uri)

    source = _cpu_float(model)
    example = np.zeros((2, source.in_channels, input_size, input_size), dtype=np.float32)  # batch 2: dynamic batch
    registered: list[RegisteredDepth] = []
    with _in_run(run_id, client), tempfile.TemporaryDirectory(prefix="anunet-register-") as tmp:
        for d in depths:
            network = prune(source, d).eval()
            with torch.no_grad():
                logits = network(torch.from_numpy(example))[-1].numpy()
            tags = {
                "depth": str(d),
                "params": str(count_parameters(network)),
                **{key: str(float(value)) for key, value in metrics[d].items()},
                "latency_ms_per_slice": f"{measure_latency_ms(source, d, input_size):.4f}",
                "input_size": str(input_size),
                "alpha": str(float(alpha)),
                "gamma": str(float(gamma)),
                "dataset": str(dataset_checksum),
                "organ": str(organ).lower(),
                "modality": str(modality).upper(),
            }
            files = Path(tmp) / f"L{d}"
            files.mkdir()
            torch.save(network.state_dict(), files / WEIGHTS_FILE)
            config = {
                "in_channels": network.in_channels,
                "filters": list(network.filters),
                "depth": d,
                "input_size": input_size,
            }
            (files / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
            info = mlflow.pytorch.log_model(
                _DeepestLogits(network),
                name=f"anunet-L{d}",
                signature=infer_signature(example, logits),
                input_example=example,
                pip_requirements=_pip_requirements(),
                extra_files=[str(files / WEIGHTS_FILE), str(files / CONFIG_FILE)],
                serialization_format="pt2",
                registered_model_name=names[d],
                tags=tags,  # on the LoggedModel and, at creation, on the new model version
                # Model.log's own check (load the pt2 back, predict the example) costs seconds per
                # depth; the tests load the export instead. Only valid with pt2: with "pickle" the
                # extra keyword would reach torch.save.
                validate_serving_input=False,
            )
            version = str(info.registered_model_version)
            if alias:
                client.set_registered_model_alias(names[d], alias, version)
            registered.append(RegisteredDepth(names[d], version, d, tags, (alias,) if alias else ()))
            summary = ", ".join(f"{k}={tags[k]}" for k in TAG_KEYS)
            logger.info("registered %s version %s (%s)", names[d], version, summary)
        title = f"{_family(organ, modality)}: Dice vs CPU latency ({input_size}px)"
        client.log_figure(run_id, tradeoff_figure(registered, title), TRADEOFF_ARTIFACT)
    return registered


# ----------------------------------------------------------------------------------------------
# Promotion, lookup, loading
# ----------------------------------------------------------------------------------------------


def _run_versions(client, run_id: str) -> list:
    if not isinstance(run_id, str) or not _RUN_ID_PATTERN.match(run_id):
        raise RegistryError(f"not an MLflow run id: {run_id!r}")
    return list(client.search_model_versions(f"run_id='{run_id}'"))


def promote(
    run_id: str,
    organ: str | None = None,
    modality: str | None = None,
    alias: str = PRODUCTION,
    uri: str | None = None,
) -> list[tuple[str, str]]:
    """Move ``alias`` (default ``production``) to the versions registered by run ``run_id``.

    The run must have registered exactly one version per depth 1..4, under names
    ``anunet-{organ}-{modality}-L{d}`` of one organ and modality (``organ``/``modality``
    narrow the search when given). Returns ``[(name, version)]`` in depth order.
    """
    uri, client = _client(uri)
    check_tracking_server(uri)
    found = _run_versions(client, run_id)
    by_depth: dict[int, list] = {}
    prefixes = set()
    for mv in found:
        match = _NAME_PATTERN.match(mv.name)
        if not match:
            continue
        if organ is not None and match["organ"] != organ.lower():
            continue
        if modality is not None and match["modality"] != modality.lower():
            continue
        by_depth.setdefault(int(match["depth"]), []).append(mv)
        prefixes.add((match["organ"], match["modality"]))
    listing = ", ".join(sorted(f"{mv.name} v{mv.version}" for mv in found)) or "none"
    if not found:
        from mlflow.exceptions import MlflowException

        try:
            client.get_run(run_id)
        except MlflowException:
            raise RegistryError(f"no MLflow run {run_id} in {uri}") from None
        raise RegistryError(f"run {run_id} registered no model versions in {uri}")
    if sorted(by_depth) != list(DEPTHS) or any(len(v) != 1 for v in by_depth.values()) or len(prefixes) != 1:
        raise RegistryError(
            f"run {run_id} must have registered exactly one anunet-<organ>-<modality>-L<d> version per depth "
            f"1..{MAX_DEPTH} of one organ and modality; found: {listing}"
        )
    promoted = []
    for d in DEPTHS:
        mv = by_depth[d][0]
        client.set_registered_model_alias(mv.name, alias, mv.version)
        promoted.append((mv.name, str(mv.version)))
        logger.info("alias %r -> %s version %s", alias, mv.name, mv.version)
    return promoted


def _registered_depth(mv, depth: int) -> RegisteredDepth:
    return RegisteredDepth(
        name=mv.name, version=str(mv.version), depth=depth, tags=dict(mv.tags or {}), aliases=tuple(mv.aliases or ())
    )


def run_promote(run_id: str, alias: str = PRODUCTION, uri: str | None = None) -> list[RegisteredDepth]:
    """``jobs/promote.py``: :func:`promote`, then print name / version / val_dice / latency."""
    uri, client = _client(uri)
    promoted = promote(run_id, alias=alias, uri=uri)
    rows = [
        _registered_depth(client.get_model_version(name, version), d) for d, (name, version) in zip(DEPTHS, promoted)
    ]
    print(f"alias {alias!r} now marks the versions of run {run_id} ({uri}):")
    print(depth_table(rows))
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


def _resolve_version(client, name: str, alias: str | None, version: str | None):
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model named {name!r}") from None
    if version is not None:
        try:
            return client.get_model_version(name, str(version))
        except MlflowException:
            raise RegistryError(f"registered model {name!r} has no version {version}") from None
    aliases = dict(registered.aliases or {})
    if alias not in aliases:
        have = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
        raise RegistryError(f"registered model {name!r} has no alias {alias!r} (aliases: {have})")
    return client.get_model_version_by_alias(name, alias)


def load_registered(
    name: str, alias: str = PRODUCTION, version: str | None = None, uri: str | None = None
) -> tuple[ANUNet, object]:
    """The plain :class:`~anunet_core.ANUNet` of a registered version (eval mode, CPU) and its
    ``ModelVersion``: by ``alias`` (default ``production``) unless ``version`` is given.

    Rebuilt from the version's ``anunet_config.json`` and tensors-only state dict
    (``torch.load(weights_only=True)``): nothing is unpickled.
    """
    import mlflow

    uri, client = _client(uri)
    check_tracking_server(uri)
    mv = _resolve_version(client, name, alias, version)
    with tempfile.TemporaryDirectory(prefix="anunet-load-") as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{mv.version}/{EXTRA_FILES_DIR}", dst_path=tmp
                )
            )
        except Exception as exc:  # noqa: BLE001 - a missing or foreign model: say which, one line
            raise RegistryError(
                f"{name} version {mv.version} has no ANU-Net weights "
                f"({EXTRA_FILES_DIR}/{WEIGHTS_FILE}): {_one_line(exc)}"
            ) from None
        config_path, weights_path = local / CONFIG_FILE, local / WEIGHTS_FILE
        if not config_path.is_file() or not weights_path.is_file():
            raise RegistryError(f"{name} version {mv.version} was not registered by anunet_platform (no {CONFIG_FILE})")
        config = json.loads(config_path.read_text())
        network = ANUNet(in_channels=int(config["in_channels"]), filters=config["filters"], depth=int(config["depth"]))
        network.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True), strict=True)
    return network.eval(), mv


def production_depths(
    organ: str, modality: str, alias: str = PRODUCTION, uri: str | None = None
) -> dict[int, RegisteredDepth]:
    """``{depth: RegisteredDepth}`` of the versions carrying ``alias`` for organ and modality.

    A depth whose model has no such alias falls back to its newest version, with a warning
    logged; a depth with no registered model is left out. :class:`RegistryError` when no depth
    has any version.
    """
    from mlflow.exceptions import MlflowException

    uri, client = _client(uri)
    check_tracking_server(uri)
    chosen: dict[int, RegisteredDepth] = {}
    for d in DEPTHS:
        name = registered_model_name(organ, modality, d)
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            versions = list(client.search_model_versions(f"name='{name}'"))
            if not versions:
                continue
            mv = max(versions, key=lambda v: int(v.version))
            mv = client.get_model_version(name, mv.version)  # search results may lack aliases
            logger.warning("%s has no alias %r; using its newest version %s", name, alias, mv.version)
        chosen[d] = _registered_depth(mv, d)
    if not chosen:
        raise RegistryError(f"no registered versions of {_family(organ, modality)}-L1..L{MAX_DEPTH} in {uri}")
    return chosen


__all__ = [
    "CANDIDATE",
    "DEPTHS",
    "PRODUCTION",
    "RegisteredDepth",
    "RegistryError",
    "check_tracking_server",
    "current_uri",
    "depth_table",
    "ensure_experiment",
    "load_registered",
    "measure_latency_ms",
    "parse_model_family",
    "production_depths",
    "promote",
    "register_depths",
    "registered_model_name",
    "run_promote",
    "tracking_uri",
    "tradeoff_figure",
]
