"""Where the MLflow store is: the tracking/registry URI, a client of it, and a quick reachability check.

:func:`tracking_uri`: ``MLFLOW_TRACKING_URI`` when set (an ``mlflow server`` in production),
else an embedded SQLite database ``<workspace>/mlflow.db``. Tracking and registry always share
that one store. Every public function of the registry package takes ``uri=None``: the store
this process already uses (:func:`current_uri`), else the default.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from anunet_core.errors import one_line
from anunet_platform.cluster import warn_if_ephemeral

DEFAULT_WORKSPACE = Path("anunet-workspace")
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
CHECK_TIMEOUT_S = 3
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_NETWORK_REASON = re.compile(r"(\[Errno -?\d+\][^'\")]*|(?:Read|Connect(?:ion)?) timed out)")


class RegistryError(ValueError):
    """A registry operation cannot be done (unreachable server, unknown run/model/alias, ...)."""


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
def environ_restored(names: Iterable[str]) -> Iterator[None]:
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

    with environ_restored(_URI_ENV):
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


def client(uri: str | None = None):
    """``(uri, MlflowClient)`` for :func:`current_uri` of ``uri``."""
    from mlflow import MlflowClient

    uri = current_uri(uri)
    return uri, MlflowClient(tracking_uri=uri, registry_uri=uri)


def network_reason(exc: BaseException) -> str:
    """The root cause of a failed MLflow HTTP call (``[Errno 111] Connection refused``, ``Read
    timed out``...) rather than the wrapper's 300 characters of retry plumbing."""
    match = _NETWORK_REASON.search(one_line(exc, limit=2000))
    if not match:
        return one_line(exc, limit=300)
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
    with environ_restored(overrides):
        os.environ.update(overrides)
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable"; say why in one line
            raise RegistryError(f"MLflow tracking server at {uri} is unreachable: {network_reason(exc)}") from None


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """The id of experiment ``name``, created if missing; restored if deleted.

    With a local SQLite store the experiment's artifacts go to ``<db folder>/mlartifacts/``
    (MLflow would otherwise use ``./mlruns`` of whatever the current directory is); with a
    server, its ``--artifacts-destination`` decides.
    """
    uri, mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"
        location = (db.parent / ARTIFACTS_DIR / safe).absolute().as_uri()
    return mlflow_client.create_experiment(name, artifact_location=location)
