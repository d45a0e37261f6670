"""The Kubernetes manifests (k8s/) and the image recipe (Dockerfile), checked without a cluster.

- every KubeRay object validates strictly against the KubeRay 1.7 CRD schemas in
  ``../shared/schemas/kuberay-v1.7`` (skipped where that folder is absent);
- every entrypoint parses with its job's own parser (a renamed flag fails here, not at night);
- the clusters fit their jobs (GPUs for DDP ranks and trials), token auth is on everywhere,
  no secret is written into a manifest, one set of image names that kustomize rewrites;
- security: every pod and container runs as its image's non-root user, without privileges, on a
  read-only root filesystem; MLflow runs its basic-auth app from Secrets and every container that
  talks to it signs in; the NetworkPolicies let exactly the intended pods reach MLflow, its
  database and the Ray heads (a small model of NetworkPolicy semantics decides who reaches what);
- the image installs every Python package at the version pinned in constraints.txt;
- where ``kubectl`` (or ``kustomize``) is installed, every kustomization builds, and the built
  output is checked again.
"""

from __future__ import annotations

import configparser
import contextlib
import copy
import importlib.util
import io
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from anunet_platform.cli import PARSERS

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
SCHEMAS = REPO.parent / "shared" / "schemas" / "kuberay-v1.7"
SCHEMA_FILES = {"RayCluster": "raycluster-v1.json", "RayJob": "rayjob-v1.json", "RayCronJob": "raycronjob-v1.json"}

KUSTOMIZE_KINDS = {"Kustomization", "Component"}
# YAML files in k8s/ that no kustomization lists, and why.
STANDALONE = {
    "kuberay-operator-values.yaml": "Helm values of the KubeRay operator (the RayCronJob feature gate), not an object",
}
PROJECT_IMAGES = {"anunet", "anunet-gpu"}
DATA_CLAIM, DATA_MOUNT = "anunet-data", "/data"
CONFIG_MAP = "anunet-config"
RAY_TOKEN_SECRET = "anunet-ray-token"
DB_SECRET = "anunet-mlflow-db"        # PostgreSQL's password
MLFLOW_AUTH_SECRET = "anunet-mlflow-auth"  # the MLflow admin and the Flask secret key: the server only
MLFLOW_JOBS_SECRET = "anunet-mlflow-jobs"  # the MLflow user of the jobs: every Ray container
PSEUDONYM_SECRET = "anunet-pseudonym-key"  # --pseudonymize's HMAC key (optional: jobs that need it fail clearly)
SECRET_LIKE = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)
GPU = "nvidia.com/gpu"
# The user and group (uid, gid) each image runs as: the Dockerfile's USER for the project's
# images, the official images' own users otherwise.
IMAGE_USERS = {"anunet": (1000, 100), "anunet-gpu": (1000, 100), "postgres": (999, 999), "kubectl": (65532, 65532)}
# What a container's securityContext inherits from its pod's.
POD_LEVEL_SECURITY = ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile")
# The pod labels the NetworkPolicies select by (app.kubernetes.io/component).
COMPONENT = "app.kubernetes.io/component"
RAY_NODE_COMPONENTS = {"head": "ray-head", "worker": "ray-worker"}
SUBMITTER_COMPONENT = "ray-submitter"
OPERATOR_NAMESPACE = "kuberay-system"  # where README.md installs the KubeRay operator


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    path: Path
    body: dict

    @property
    def rel(self) -> str:
        return self.path.relative_to(K8S).as_posix()

    @property
    def kind(self) -> str:
        return self.body.get("kind", "")

    @property
    def name(self) -> str:
        meta = self.body.get("metadata", {})
        return meta.get("name") or meta.get("generateName", "?")

    @property
    def id(self) -> str:
        return f"{self.rel}:{self.kind}/{self.name}"


@cache
def all_docs() -> tuple[Doc, ...]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        for body in yaml.safe_load_all(path.read_text()):
            if body is not None:
                docs.append(Doc(path, body))
    return tuple(docs)


def objects() -> list[Doc]:
    """The Kubernetes objects (not kustomizations, not Helm values)."""
    return [d for d in all_docs() if "apiVersion" in d.body and d.kind not in KUSTOMIZE_KINDS]


def ray_docs() -> list[Doc]:
    return [d for d in objects() if d.body["apiVersion"] == "ray.io/v1"]


def kustomizations() -> dict[Path, dict]:
    return {d.path.parent: d.body for d in all_docs() if d.path.name == "kustomization.yaml"}


def one(kind: str, name: str | None = None) -> Doc:
    found = [d for d in objects() if d.kind == kind and (name is None or d.name == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d.id for d in found]}"
    return found[0]


def job_spec_of(doc: Doc) -> dict | None:
    """The RayJob spec of a RayJob, or of a RayCronJob's job template."""
    if doc.kind == "RayJob":
        return doc.body["spec"]
    if doc.kind == "RayCronJob":
        return doc.body["spec"]["jobTemplate"]
    return None


def cluster_spec_of(doc: Doc) -> dict:
    return doc.body["spec"] if doc.kind == "RayCluster" else job_spec_of(doc)["rayClusterSpec"]


def cluster_specs() -> list[tuple[Doc, dict]]:
    """Every Ray cluster spec: the RayCluster's, each RayJob's, the RayCronJob's job template's."""
    return [(doc, cluster_spec_of(doc)) for doc in ray_docs()]


def job_specs() -> list[tuple[Doc, dict]]:
    """Every RayJob spec: the RayJobs' and the RayCronJob's job template."""
    return [(doc, job_spec_of(doc)) for doc in ray_docs() if job_spec_of(doc) is not None]


def ray_groups(spec: dict) -> Iterator[tuple[str, dict]]:
    """(group name, group spec) of the head (``"head"``) and of every worker group."""
    yield "head", spec["headGroupSpec"]
    for group in spec.get("workerGroupSpecs", []):
        yield group["groupName"], group


def pod_templates(doc: Doc) -> Iterator[tuple[str, dict]]:
    """(where, pod template: metadata and spec) of every pod template in a manifest, Ray or not:
    a Ray cluster's head and worker groups and a RayJob's submitter included."""
    body = doc.body
    if body["apiVersion"] == "ray.io/v1":
        for group, group_spec in ray_groups(cluster_spec_of(doc)):
            yield f"{doc.id} {group}", group_spec["template"]
        job = job_spec_of(doc)
        if job is not None and "submitterPodTemplate" in job:
            yield f"{doc.id} submitter", job["submitterPodTemplate"]
    elif doc.kind in ("Deployment", "StatefulSet", "Job"):
        yield doc.id, body["spec"]["template"]
    elif doc.kind == "CronJob":
        yield doc.id, body["spec"]["jobTemplate"]["spec"]["template"]


def pod_specs(doc: Doc) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) of every pod template in a manifest, Ray or not."""
    for where, template in pod_templates(doc):
        yield where, template["spec"]


def all_pod_templates() -> list[tuple[str, dict]]:
    return [item for doc in objects() for item in pod_templates(doc)]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def config_literals() -> dict[str, str]:
    """The environment that ConfigMap anunet-config gives the Ray containers."""
    for generator in kustomizations()[K8S]["configMapGenerator"]:
        if generator["name"] == CONFIG_MAP:
            return dict(literal.split("=", 1) for literal in generator["literals"])
    raise AssertionError(f"no configMapGenerator {CONFIG_MAP} in k8s/kustomization.yaml")


def environment(container: dict) -> dict[str, str | dict]:
    """A container's environment: anunet-config's literals (envFrom), then its own env (a value,
    or the valueFrom dict)."""
    result: dict[str, str | dict] = {}
    if any(ref.get("configMapRef", {}).get("name") == CONFIG_MAP for ref in container.get("envFrom", [])):
        result.update(config_literals())
    for name, var in env_of(container).items():
        result[name] = var["value"] if "value" in var else var["valueFrom"]
    return result


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def all_containers(node: Any) -> Iterator[dict]:
    """Every container (and init container) anywhere in a manifest, however deep."""
    for item in walk(node):
        if isinstance(item, dict):
            for key in ("containers", "initContainers"):
                if isinstance(item.get(key), list):
                    yield from item[key]


def quantity(value: Any) -> float:
    """A Kubernetes CPU or GPU quantity as a number ("500m" -> 0.5, "8" -> 8)."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def ray_cpus(group: dict) -> float:
    """The CPUs Ray sees on a node of a group: rayStartParams num-cpus, else the CPU limit."""
    start = group.get("rayStartParams", {})
    if "num-cpus" in start:
        return float(start["num-cpus"])
    return quantity(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])


def gpus_per_pod(group: dict) -> float:
    return quantity(group["template"]["spec"]["containers"][0]["resources"].get("limits", {}).get(GPU, 0))


# ----------------------------------------------------------------------------------------------
# Schemas: every KubeRay object, strictly
# ----------------------------------------------------------------------------------------------


@cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    if not SCHEMAS.is_dir():
        pytest.skip(f"KubeRay schemas not found at {SCHEMAS} (CI has ../shared beside the repository)")
    schema = json.loads((SCHEMAS / SCHEMA_FILES[kind]).read_text())
    return jsonschema.Draft7Validator(schema)


def schema_errors(body: dict) -> list[str]:
    errors = validator(body["kind"]).iter_errors(body)
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def test_kuberay_objects_are_found():
    kinds = sorted(d.kind for d in ray_docs())
    assert kinds == ["RayCluster", "RayCronJob", "RayJob", "RayJob", "RayJob", "RayJob", "RayJob"], kinds


@pytest.mark.parametrize("doc", ray_docs(), ids=lambda d: d.id)
def test_kuberay_object_validates_against_crd_schema(doc):
    errors = schema_errors(doc.body)
    assert not errors, f"{doc.id} does not match the KubeRay 1.7 {doc.kind} schema:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    "path, typo",
    [
        (["spec"], "authOption"),
        (["spec", "workerGroupSpecs", 0], "maxReplica"),
        (["spec", "headGroupSpec", "template", "spec", "containers", 0], "envForm"),
    ],
    ids=["spec", "worker-group", "container"],
)
def test_schema_rejects_an_unknown_field(path, typo):
    """The schemas are strict: a typo'd key anywhere is an error (else the tests above prove little)."""
    body = copy.deepcopy(one("RayCluster").body)
    node = body
    for key in path:
        node = node[key]
    node[typo] = {}
    errors = schema_errors(body)
    assert any(typo in e for e in errors), errors


def test_schema_rejects_a_bad_auth_mode():
    body = copy.deepcopy(one("RayCluster").body)
    body["spec"]["authOptions"]["mode"] = "tokens"
    assert any("authOptions" in e for e in schema_errors(body))


# ----------------------------------------------------------------------------------------------
# Entrypoints: each one parses with its job's own parser
# ----------------------------------------------------------------------------------------------


def entrypoints() -> list[tuple[str, str]]:
    return [(doc.id, spec["entrypoint"]) for doc, spec in job_specs()]


def parse_entrypoint(entrypoint: str) -> tuple[str, Any]:
    """``python jobs/<name>.py ARGS`` -> (name, the parsed flags); fails with argparse's message."""
    argv = shlex.split(entrypoint)
    assert argv[0] == "python", f"entrypoint must start with python: {entrypoint!r}"
    match = re.fullmatch(r"jobs/(\w+)\.py", argv[1])
    assert match, f"entrypoint must run jobs/<name>.py: {entrypoint!r}"
    name = match.group(1)
    assert name in PARSERS, f"no parser for job {name!r} (PARSERS: {sorted(PARSERS)})"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = PARSERS[name]().parse_args(argv[2:])
    except SystemExit:
        pass
    else:
        return name, args
    pytest.fail(f"{entrypoint!r} does not parse:\n{stderr.getvalue()}")


@pytest.mark.parametrize("where, entrypoint", entrypoints(), ids=[e[0] for e in entrypoints()])
def test_entrypoint_parses_with_its_jobs_parser(where, entrypoint):
    name, args = parse_entrypoint(entrypoint)
    assert (REPO / "jobs" / f"{name}.py").is_file(), f"{where}: jobs/{name}.py does not exist"
    for flag, value in vars(args).items():
        if isinstance(value, Path):  # every path is on the shared volume, seen alike by every node
            assert value.is_absolute() and value.parts[1] == DATA_MOUNT.strip("/"), f"{where}: --{flag} {value}"


def test_entrypoints_cover_ingest_train_tune_compare_and_segment():
    names = {parse_entrypoint(e)[0] for _, e in entrypoints()}
    assert {"ingest", "train", "tune", "compare", "segment"} <= names, names


def test_training_entrypoints_use_gpus_and_shared_checkpoint_storage():
    for where, entrypoint in entrypoints():
        name, args = parse_entrypoint(entrypoint)
        if name in ("train", "tune", "compare"):
            assert args.use_gpu, where
            assert args.storage_path == Path("/data/ray_results"), where
        if name == "train":
            assert args.register and args.num_workers == 4, where


def test_each_cluster_fits_its_job():
    """Ray Train places one GPU per DDP rank, Tune one per trial rank, all at once: the GPU
    workers' maxReplicas must hold them; the entrypoint's CPU needs a worker (the head has none)."""
    for doc, job in job_specs():
        cluster = job["rayClusterSpec"]
        name, args = parse_entrypoint(job["entrypoint"])
        groups = dict(ray_groups(cluster))
        assert ray_cpus(groups.pop("head")) == 0, f"{doc.id}: the head runs no tasks"
        gpus = sum(g["maxReplicas"] * gpus_per_pod(g) for g in groups.values())
        cpus = sum(g["maxReplicas"] * ray_cpus(g) for g in groups.values())
        need_gpus, need_cpus = 0, job["entrypointNumCpus"]
        if name in ("train", "tune", "compare"):  # every rank of every concurrent trial at once
            ranks = args.num_workers * (getattr(args, "max_concurrent_trials", None) or 1)
            need_gpus = ranks if args.use_gpu else 0
            need_cpus += ranks * args.cpus_per_worker
        elif name == "segment" and args.use_gpu:  # one GPU per model actor
            need_gpus = args.num_actors or 1
        assert need_gpus <= gpus, f"{doc.id}: {name} needs {need_gpus} GPUs, the cluster has at most {gpus:g}"
        assert need_cpus <= cpus, f"{doc.id}: {name} needs {need_cpus} CPUs, the cluster has at most {cpus:g}"


def test_tune_job_runs_the_trials_its_full_cluster_fits_and_its_comments_and_the_readme_agree():
    """The tuning job's --max-concurrent-trials is what the job itself would compute for its
    cluster at full size (the autoscaled cluster starts smaller), and the ASHA budget stated in
    its comment and in the README is what its flags give."""
    from anunet_platform.tune import SearchConfig, asha_trial_epochs, max_concurrent_trials

    doc = one("RayJob", "anunet-tune")
    job = doc.body["spec"]
    _, args = parse_entrypoint(job["entrypoint"])
    config = SearchConfig(**vars(args))
    groups = dict(ray_groups(job["rayClusterSpec"]))
    groups.pop("head")
    cpus = sum(g["maxReplicas"] * ray_cpus(g) for g in groups.values()) - job["entrypointNumCpus"]
    gpus = sum(g["maxReplicas"] * gpus_per_pod(g) for g in groups.values())
    assert config.max_concurrent_trials == max_concurrent_trials(cpus, gpus, config) == 4
    budget = asha_trial_epochs(config.num_samples, config.epochs, config.grace_period, config.reduction_factor)
    text = (REPO / "k8s" / "jobs" / "tune.yaml").read_text()
    assert f"about {budget:.0f} trial-epochs instead of {config.num_samples * config.epochs}" in text
    assert f"about {budget / config.max_concurrent_trials:.0f} epochs per GPU" in text
    readme = (REPO / "README.md").read_text()
    assert f"| {config.grace_period} | {config.reduction_factor} |" in readme and f"({budget:.0f} trial-epochs)" in readme
    assert config.search == "tpe"


def test_interactive_cluster_fits_the_training_job():
    groups = dict(ray_groups(one("RayCluster").body["spec"]))
    _, train = parse_entrypoint(one("RayJob", "anunet-train").body["spec"]["entrypoint"])
    gpu_workers = groups["gpu"]["maxReplicas"] * gpus_per_pod(groups["gpu"])
    assert gpu_workers >= train.num_workers == 4
    assert groups["cpu"]["maxReplicas"] >= 1 and groups["cpu"]["minReplicas"] == 0


# ----------------------------------------------------------------------------------------------
# The Ray clusters: auth, GPUs, lifecycle, environment, storage
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc, spec", cluster_specs(), ids=[d.id for d, _ in cluster_specs()])
def test_token_auth_is_on(doc, spec):
    assert spec["authOptions"] == {"mode": "token", "secretName": RAY_TOKEN_SECRET}
    assert spec["rayVersion"] == "2.60.0"
    for group, group_spec in ray_groups(spec):
        for container in containers(group_spec["template"]["spec"]):
            names = {e["name"] for e in container.get("env", [])}
            assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}, f"{doc.id} {group}: KubeRay sets these"


@pytest.mark.parametrize("doc, spec", cluster_specs(), ids=[d.id for d, _ in cluster_specs()])
def test_ray_containers_share_data_config_and_working_dir(doc, spec):
    for group, group_spec in ray_groups(spec):
        pod = group_spec["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            where = f"{doc.id} {group}"
            refs = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
            assert refs == [CONFIG_MAP], f"{where}: MLFLOW_TRACKING_URI comes from {CONFIG_MAP}"
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert volumes[mounts[DATA_MOUNT]]["persistentVolumeClaim"]["claimName"] == DATA_CLAIM, where
            assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", where
            assert container["workingDir"] == "/home/ray/anunet", where
            resources = container["resources"]
            assert resources["requests"] == resources["limits"], f"{where}: Ray sizes itself from the limits"
            assert {"cpu", "memory"} <= set(resources["limits"]), where


@pytest.mark.parametrize("doc, spec", cluster_specs(), ids=[d.id for d, _ in cluster_specs()])
def test_gpu_groups_request_and_tolerate_gpus(doc, spec):
    for group, group_spec in ray_groups(spec):
        pod = group_spec["template"]["spec"]
        container = pod["containers"][0]
        has_gpu = GPU in container["resources"]["limits"] or GPU in container["resources"]["requests"]
        assert has_gpu == (group == "gpu"), f"{doc.id} {group}"
        assert container["image"] == ("anunet-gpu" if has_gpu else "anunet"), f"{doc.id} {group}"
        if has_gpu:
            assert container["resources"]["requests"][GPU] == container["resources"]["limits"][GPU] == 1
            assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_interactive_cluster_autoscales_cpu_and_gpu_workers():
    spec = one("RayCluster").body["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert {"requests", "limits"} <= set(spec["autoscalerOptions"]["resources"])
    groups = dict(ray_groups(spec))
    assert set(groups) == {"head", "cpu", "gpu"}
    assert groups["gpu"]["minReplicas"] == 0 and groups["gpu"]["maxReplicas"] == 4


@pytest.mark.parametrize("doc, spec", cluster_specs(), ids=[d.id for d, _ in cluster_specs()])
def test_autoscaler_has_resources(doc, spec):
    if spec.get("enableInTreeAutoscaling"):
        resources = spec["autoscalerOptions"]["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
        for group, group_spec in ray_groups(spec):
            if group != "head":
                assert group_spec["minReplicas"] <= group_spec["replicas"] <= group_spec["maxReplicas"], group


@pytest.mark.parametrize("doc, job", job_specs(), ids=[d.id for d, _ in job_specs()])
def test_rayjobs_clean_up_and_retry(doc, job):
    assert job["shutdownAfterJobFinishes"] is True
    assert 0 < job["ttlSecondsAfterFinished"] <= 3600
    assert job["backoffLimit"] >= 1 and job["submitterConfig"]["backoffLimit"] >= 1
    assert job["activeDeadlineSeconds"] > 0
    assert job["entrypointNumCpus"] == 1
    assert "clusterSelector" not in job, "each RayJob brings its own cluster"


def test_ondemand_rayjobs_are_selectable_one_at_a_time():
    jobs = [d for d in objects() if d.kind == "RayJob" and d.rel.startswith("jobs/")]
    labels = sorted(d.body["metadata"]["labels"]["anunet.io/job"] for d in jobs)
    assert labels == ["compare", "ingest", "train", "tune"]
    for doc in jobs:
        assert doc.body["metadata"]["name"] == f"anunet-{doc.body['metadata']['labels']['anunet.io/job']}"


# ----------------------------------------------------------------------------------------------
# Security: non-root users, no privileges, read-only root filesystems
# ----------------------------------------------------------------------------------------------


def security_errors(pod: dict, container_security: dict, image: str) -> list[str]:
    """What a container's effective securityContext (its pod's, overridden by its own) lacks to
    run hardened as its image's user; empty when nothing."""
    effective = {k: v for k, v in pod.get("securityContext", {}).items() if k in POD_LEVEL_SECURITY}
    effective.update(container_security)
    uid, gid = IMAGE_USERS[image]
    wanted = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    errors = [f"{key} is {effective.get(key)!r}, not {want!r}" for key, want in wanted.items()
              if effective.get(key) != want]
    if effective.get("privileged"):
        errors.append("privileged")
    return errors


def test_every_pod_and_container_runs_hardened_as_its_images_user():
    checked = 0
    for doc in objects():
        for where, pod in pod_specs(doc):
            security = pod.get("securityContext", {})
            main_image = pod["containers"][0]["image"]
            assert security.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot"
            assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, f"{where}: pod seccompProfile"
            assert security.get("fsGroup") == IMAGE_USERS[main_image][1], f"{where}: fsGroup, the group of {main_image}"
            for container in containers(pod):
                errors = security_errors(pod, container.get("securityContext", {}), container["image"])
                assert not errors, f"{where} {container['name']}: " + "; ".join(errors)
                checked += 1
    assert checked == 25, checked  # 15 Ray containers, 6 submitters, mlflow (+ init), postgres, kubectl


@pytest.mark.parametrize("doc, spec", cluster_specs(), ids=[d.id for d, _ in cluster_specs()])
def test_autoscaler_sidecar_runs_hardened(doc, spec):
    """KubeRay builds the autoscaler container of the head pod from autoscalerOptions (image: the
    head's); its securityContext and the /tmp mount come from there."""
    if not spec.get("enableInTreeAutoscaling"):
        return
    options = spec["autoscalerOptions"]
    head = spec["headGroupSpec"]["template"]["spec"]
    errors = security_errors(head, options.get("securityContext", {}), head["containers"][0]["image"])
    assert not errors, f"{doc.id} autoscaler: " + "; ".join(errors)
    volumes = {v["name"]: v for v in head["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in options.get("volumeMounts", [])}
    assert "emptyDir" in volumes[mounts["/tmp"]], f"{doc.id} autoscaler: /tmp"
    assert env_of(options)["HOME"]["value"] == "/tmp", f"{doc.id} autoscaler: HOME"


@pytest.mark.parametrize(
    "change",
    [
        {"runAsUser": 0},
        {"runAsNonRoot": False},
        {"allowPrivilegeEscalation": True},
        {"readOnlyRootFilesystem": False},
        {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}},
        {"privileged": True},
    ],
    ids=lambda change: next(iter(change)),
)
def test_security_check_rejects_a_weakened_container(change):
    """The check above is not vacuous: weakening any one setting of a real container fails it."""
    pod = one("Deployment", "mlflow").body["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert not security_errors(pod, container["securityContext"], container["image"])
    assert security_errors(pod, {**container["securityContext"], **change}, container["image"])


def test_read_only_containers_write_only_to_volumes():
    """With a read-only root, what a container writes must land on a volume: /tmp (an emptyDir)
    and HOME=/tmp for the project's images and kubectl (Ray's /tmp/ray, caches, kubectl's cache),
    the socket folder and /tmp for PostgreSQL; the init container only reads."""
    checked = 0
    for doc in objects():
        for where, pod in pod_specs(doc):
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for container in containers(pod):
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                name = f"{where} {container['name']}"
                if container["image"] in ("anunet", "anunet-gpu", "kubectl"):
                    assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp"
                    assert environment(container).get("HOME") == "/tmp", f"{name}: HOME"
                    checked += 1
                elif container["name"] == "postgres":
                    for path in ("/var/run/postgresql", "/tmp"):
                        assert "emptyDir" in volumes[mounts[path]], f"{name}: {path}"
                    checked += 1
    assert checked == 24, checked


def test_submitters_are_hardened_and_kuberay_fills_in_their_command():
    """Every RayJob brings its submitter pod template (else KubeRay's default has no
    securityContext); KubeRay only adds the `ray job submit` command when none is set. The
    submitter talks to the Ray head's dashboard, never to MLflow."""
    for doc, job in job_specs():
        template = job["submitterPodTemplate"]
        assert template["metadata"]["labels"][COMPONENT] == SUBMITTER_COMPONENT, doc.id
        spec = template["spec"]
        assert spec["restartPolicy"] == "Never", doc.id
        (container,) = spec["containers"]
        assert "command" not in container and "args" not in container, f"{doc.id}: KubeRay sets the command"
        assert container["image"] == "anunet", f"{doc.id}: the Ray version of the cluster"
        assert "MLFLOW_TRACKING_URI" not in environment(container), f"{doc.id}: the submitter needs no MLflow"


# ----------------------------------------------------------------------------------------------
# Everything else: resources, secrets, images, kustomizations, MLflow, storage
# ----------------------------------------------------------------------------------------------


def test_every_pod_container_has_requests_and_limits():
    checked = 0
    for doc in objects():
        for where, pod in pod_specs(doc):
            for container in containers(pod):
                resources = container.get("resources", {})
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where} {container['name']}: {part}"
                checked += 1
    assert checked >= 15, checked


def test_no_secret_values_in_manifests():
    assert not [d.id for d in objects() if d.kind == "Secret"], "Secrets are created by hand (README.md)"
    checked = 0
    for doc in all_docs():
        for node in walk(doc.body):
            if isinstance(node, dict) and isinstance(node.get("env"), list):
                for env in node["env"]:
                    if SECRET_LIKE.search(env["name"]):
                        assert "value" not in env, f"{doc.id}: {env['name']} has a literal value"
                        assert "secretKeyRef" in env.get("valueFrom", {}), f"{doc.id}: {env['name']}"
                        checked += 1
    # POSTGRES_PASSWORD, PGPASSWORD (twice), MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY,
    # and MLFLOW_TRACKING_PASSWORD on each of the 13 Ray containers
    assert checked >= 18, checked
    for kustomization in kustomizations().values():
        assert "secretGenerator" not in kustomization, "Secrets are created by hand (README.md)"
        for generator in kustomization.get("configMapGenerator", []):
            for literal in generator.get("literals", []):
                assert not SECRET_LIKE.search(literal.split("=")[0]), f"{literal}: a Secret, not a ConfigMap"
                assert not literal.startswith("MLFLOW_TRACKING_USERNAME="), "the user comes with its password"


def secret_keys() -> dict[str, set[str]]:
    """Secret name -> the keys the manifests read from it (secretKeyRef, and the Ray token that
    KubeRay reads for authOptions)."""
    keys: dict[str, set[str]] = defaultdict(set)
    for doc in all_docs():
        for node in walk(doc.body):
            if isinstance(node, dict) and isinstance(node.get("secretKeyRef"), dict):
                keys[node["secretKeyRef"]["name"]].add(node["secretKeyRef"]["key"])
    for _, spec in cluster_specs():
        keys[spec["authOptions"]["secretName"]].add("auth_token")
    return keys


def test_every_secret_has_its_create_command_in_the_readme():
    """k8s/README.md has one `kubectl create secret generic NAME --from-literal=KEY=...` command
    per Secret that the manifests read, with every key they read from it."""
    keys = secret_keys()
    assert set(keys) == {DB_SECRET, RAY_TOKEN_SECRET, MLFLOW_AUTH_SECRET, MLFLOW_JOBS_SECRET, PSEUDONYM_SECRET}, sorted(keys)
    readme = (K8S / "README.md").read_text()
    for name, wanted in keys.items():
        start = readme.find(f"create secret generic {name} ")
        assert start >= 0, f"k8s/README.md: no `kubectl create secret generic {name}`"
        lines = readme[start:].splitlines()
        command = lines[:1]
        while command[-1].endswith("\\"):  # the shell command's continuation lines
            command.append(lines[len(command)])
        command = "\n".join(command)
        for key in wanted:
            assert f"--from-literal={key}=" in command, f"k8s/README.md: {name} without key {key}:\n{command}"


def test_every_mlflow_client_signs_in_with_the_jobs_secret():
    """Every container that is given MLFLOW_TRACKING_URI (env or anunet-config) is given
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD from Secret anunet-mlflow-jobs, which
    MLflow's client reads (no code change); only the server sees the admin's Secret."""
    clients = 0
    for doc in objects():
        for container in all_containers(doc.body):
            env = environment(container)
            if "MLFLOW_TRACKING_URI" not in env:
                continue
            for variable, key in (("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password")):
                source = env.get(variable)
                assert isinstance(source, dict), f"{doc.id} {container['name']}: {variable} from a Secret"
                wanted = {"secretKeyRef": {"name": MLFLOW_JOBS_SECRET, "key": key}}
                assert source == wanted, f"{doc.id} {container['name']}: {variable}"
            clients += 1
    ray_containers = sum(
        len(group["template"]["spec"]["containers"]) for _, spec in cluster_specs() for _, group in ray_groups(spec)
    )
    assert clients == ray_containers == 15, (clients, ray_containers)
    for doc in all_docs():
        for node in walk(doc.body):
            if isinstance(node, dict) and node.get("secretKeyRef", {}).get("name") == MLFLOW_AUTH_SECRET:
                assert doc.id == "mlflow.yaml:Deployment/mlflow", f"{doc.id} reads the MLflow admin's Secret"


def images_component() -> dict:
    return kustomizations()[K8S / "images"]


def pinned(image: str) -> bool:
    """Whether an image reference names an explicit version: a sha256 digest, or a tag other
    than `latest` (a registry's :port is not a tag)."""
    name, _, digest = image.partition("@")
    if digest:
        return re.fullmatch(r"sha256:[0-9a-f]{64}", digest) is not None
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    return bool(tag) and tag != "latest"


def component_references() -> dict[str, str]:
    """Image name in the manifests -> the reference the images component rewrites it to."""
    references = {}
    for image in images_component()["images"]:
        reference = image.get("newName", image["name"])
        if "newTag" in image:
            reference += f":{image['newTag']}"
        if "digest" in image:
            reference += f"@{image['digest']}"
        references[image["name"]] = reference
    return references


@pytest.mark.parametrize(
    "image, ok",
    [
        ("postgres", False),
        ("postgres:latest", False),
        ("registry.example.com:5000/anunet", False),
        ("registry.example.com:5000/anunet:0.1.0", True),
        ("postgres:17.6", True),
        ("postgres@sha256:" + "0" * 64, True),
        ("postgres@sha256:abc", False),
    ],
)
def test_pin_check(image, ok):
    assert pinned(image) is ok


def test_every_image_has_an_explicit_version():
    """Each image the manifests run is rewritten by the images component to an explicit tag or
    digest (test_manifests_name_only_images_that_kustomize_rewrites: no other image is named);
    the Dockerfile's base images are explicit versions too; `latest` appears nowhere."""
    for name, reference in component_references().items():
        assert pinned(reference), f"images component: {name} -> {reference}"
    dockerfile = (REPO / "Dockerfile").read_text()
    bases = re.findall(r"rayproject/ray:[^\s\"']+", dockerfile)
    assert bases and all(pinned(base) for base in bases), bases
    for path in [*K8S.rglob("*.yaml"), REPO / "Dockerfile"]:
        assert not re.search(r":latest\b", path.read_text()), f"{path.relative_to(REPO)} names a :latest image"


def test_images_have_one_place():
    component = images_component()
    assert component["kind"] == "Component"
    names = {image["name"] for image in component["images"]}
    assert PROJECT_IMAGES | {"postgres", "kubectl"} == names
    for image in component["images"]:
        assert image.get("newTag"), f"{image['name']}: pin a tag"
    project = {i["name"]: i for i in component["images"] if i["name"] in PROJECT_IMAGES}
    assert project["anunet"]["newTag"] == project["anunet-gpu"]["newTag"], "one commit, one tag"
    for directory, kustomization in kustomizations().items():
        if directory != K8S / "images":
            assert (directory / kustomization["components"][0]).resolve() == K8S / "images", directory
            assert kustomization["namespace"] == "anunet", directory


def test_manifests_name_only_images_that_kustomize_rewrites():
    names = {image["name"] for image in images_component()["images"]}
    seen = set()
    for doc in objects():
        for container in all_containers(doc.body):
            assert container["image"] in names, f"{doc.id} {container['name']}: image {container['image']!r}"
            seen.add(container["image"])
    assert seen == names
    mlflow = one("Deployment", "mlflow").body["spec"]["template"]["spec"]["containers"][0]
    assert mlflow["image"] == "anunet", "the server runs the jobs' MLflow version"


def test_every_yaml_file_is_listed_by_its_kustomization():
    listed = {}
    for directory, kustomization in kustomizations().items():
        refs = [*kustomization.get("resources", []), *kustomization.get("configurations", [])]
        refs += [f for g in kustomization.get("configMapGenerator", []) for f in g.get("files", [])]
        for ref in refs:
            target = (directory / ref).resolve()
            assert target.exists(), f"{directory}/kustomization.yaml lists missing {ref}"
            listed[target] = directory
    for path in sorted(K8S.rglob("*.yaml")):
        rel = path.relative_to(K8S).as_posix()
        if path.name == "kustomization.yaml" or rel in STANDALONE:
            continue
        assert path.resolve() in listed, f"k8s/{rel} is in no kustomization (nor in STANDALONE)"


def test_mlflow_server_and_backend():
    config = config_literals()
    assert config["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert config["ANUNET_STORAGE"] == "/data/ray_results" and config["ANUNET_DATA"] == DATA_MOUNT
    generator = next(g for g in kustomizations()[K8S]["configMapGenerator"] if g["name"] == CONFIG_MAP)
    assert generator["options"]["disableNameSuffixHash"] is True, "custom resources name it"
    assert "generatorOptions" not in kustomizations()[K8S], "a global option would unhash mlflow-auth-config"
    service = one("Service", "mlflow").body["spec"]
    assert service["ports"][0]["port"] == 5000
    server = one("Deployment", "mlflow").body["spec"]["template"]["spec"]["containers"][0]
    args = server["command"]
    assert args[:2] == ["mlflow", "server"]
    assert "--backend-store-uri=postgresql://mlflow@mlflow-db:5432/mlflow" in args
    assert "--serve-artifacts" in args and "--artifacts-destination=/mlartifacts" in args
    allowed = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert {"mlflow:*", "localhost:*"} <= set(allowed), "jobs and port-forward pass the Host check"
    password = env_of(server)["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": DB_SECRET, "key": "password"}
    db = one("StatefulSet", "mlflow-db").body["spec"]
    db_env = env_of(db["template"]["spec"]["containers"][0])
    assert db_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == password
    assert db["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_mlflow_server_runs_basic_auth_from_secrets_and_a_config_map():
    """`mlflow server --app-name basic-auth`; the admin, its password and the Flask secret key
    from Secret anunet-mlflow-auth (env vars that MLflow reads before basic_auth.ini); the ini from
    a ConfigMap generated from k8s/basic_auth.ini, holding no secret: signed-in users may only read
    what nobody granted them, and the users live in their own PostgreSQL database, which the init
    container creates."""
    pod = one("Deployment", "mlflow").body["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert "--app-name=basic-auth" in server["command"]
    env = env_of(server)
    for variable, key in (
        ("MLFLOW_AUTH_ADMIN_USERNAME", "admin_username"),
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "admin_password"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask_secret_key"),
    ):
        assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": MLFLOW_AUTH_SECRET, "key": key}, variable

    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    mount = next(m for m in server["volumeMounts"] if m["mountPath"] == config_path.parent.as_posix())
    assert mount.get("readOnly") is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    generator = next(g for g in kustomizations()[K8S]["configMapGenerator"] if g["name"] == volume["configMap"]["name"])
    assert generator["files"] == [config_path.name]
    assert not generator.get("options", {}).get("disableNameSuffixHash"), "hashed: a change rolls the server"

    ini = configparser.ConfigParser()
    ini.read_string((K8S / config_path.name).read_text())
    auth = ini["mlflow"]
    assert auth["default_permission"] == "READ", "readers need no grant; editing needs EDIT/MANAGE"
    assert auth["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    assert not {"admin_username", "admin_password"} & set(auth), "the admin comes from the Secret"
    store = urlsplit(auth["database_uri"])
    assert (store.scheme, store.hostname, store.port, store.path) == ("postgresql", "mlflow-db", 5432, "/mlflow_auth")
    assert store.password is None, "the password reaches libpq as PGPASSWORD, never in the ini"

    (init,) = pod["initContainers"]
    script = init["command"][-1]
    assert "pg_isready" in script and "createdb -h mlflow-db -U mlflow mlflow_auth" in script
    assert env_of(init)["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": DB_SECRET, "key": "password"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["path"] == "/health", f"{probe}: the one path that needs no login"
    assert re.search(r'pip install .*"mlflow\[auth\]"', (REPO / "Dockerfile").read_text()), "Flask-WTF in the image"


def test_shared_data_volume_is_read_write_many():
    pvc = one("PersistentVolumeClaim", DATA_CLAIM).body["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"]
    patches = [yaml.safe_load(p["patch"]) for p in kustomizations()[K8S]["patches"]]
    data = next(p for p in patches if p["metadata"]["name"] == DATA_CLAIM)
    assert data["spec"]["storageClassName"] and data["spec"]["resources"]["requests"]["storage"]


# ----------------------------------------------------------------------------------------------
# NetworkPolicies: who reaches MLflow, its database and the Ray heads
# ----------------------------------------------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    """Whether a Kubernetes label selector (matchLabels and matchExpressions) matches labels;
    the empty selector matches everything."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, values = expression["key"], expression.get("values", [])
        present = key in labels
        matched = {
            "In": present and labels[key] in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[expression["operator"]]
        if not matched:
            return False
    return True


def network_policies() -> list[dict]:
    return [d.body for d in objects() if d.kind == "NetworkPolicy"]


def namespace_labels() -> dict:
    namespace = one("Namespace").body["metadata"]
    return {"kubernetes.io/metadata.name": namespace["name"], **namespace.get("labels", {})}


def may_connect(source: dict, target: dict, port: int, source_namespace: dict | None = None) -> bool:
    """Whether a pod labelled `source` (in a namespace labelled `source_namespace`; None: this
    one) may open a TCP connection to `port` of a pod of this namespace labelled `target`, under
    the NetworkPolicies of k8s/ (ingress rules; a pod no policy selects accepts everything)."""
    in_this_namespace = source_namespace is None
    source_namespace = namespace_labels() if in_this_namespace else source_namespace
    isolating = [
        p["spec"] for p in network_policies()
        if "Ingress" in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], target)
    ]
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy.get("ingress", []):
            ports = rule.get("ports")
            for entry in ports or []:
                assert isinstance(entry["port"], int), f"{entry}: numeric ports only (the model reads no named port)"
            if ports and not any(p.get("protocol", "TCP") == "TCP" and p["port"] == port for p in ports):
                continue
            if "from" not in rule:
                return True
            for peer in rule["from"]:
                assert "ipBlock" not in peer, "the model covers pod and namespace selectors only"
                if "namespaceSelector" in peer:
                    namespace_ok = selects(peer["namespaceSelector"], source_namespace)
                else:
                    namespace_ok = in_this_namespace
                if namespace_ok and selects(peer.get("podSelector", {}), source):
                    return True
    return False


def pod_labels(where_prefix: str) -> dict:
    """The labels of the one pod template whose place starts with where_prefix."""
    found = [t["metadata"]["labels"] for where, t in all_pod_templates() if where.startswith(where_prefix)]
    assert len(found) == 1, (where_prefix, found)
    return found[0]


def container_port(where_prefix: str, name: str) -> int:
    (pod,) = [t["spec"] for where, t in all_pod_templates() if where.startswith(where_prefix)]
    return next(p["containerPort"] for c in pod["containers"] for p in c.get("ports", []) if p["name"] == name)


def is_ray_node(labels: dict) -> bool:
    return labels.get(COMPONENT) in RAY_NODE_COMPONENTS.values()


def test_pods_carry_the_labels_the_policies_select():
    """Every Ray head and worker template (interactive cluster, RayJobs, nightly) is labelled
    ray-head / ray-worker, every submitter ray-submitter, and no other pod uses these (KubeRay
    keeps the template's labels on the pods it creates)."""
    for doc, spec in cluster_specs():
        for group, group_spec in ray_groups(spec):
            role = "head" if group == "head" else "worker"
            labels = group_spec["template"]["metadata"]["labels"]
            assert labels[COMPONENT] == RAY_NODE_COMPONENTS[role], f"{doc.id} {group}"
    ray_pods = {f"{doc.id} {group}" for doc, spec in cluster_specs() for group, _ in ray_groups(spec)}
    ray_pods |= {f"{doc.id} submitter" for doc, _ in job_specs()}
    ray_roles = {*RAY_NODE_COMPONENTS.values(), SUBMITTER_COMPONENT}
    for where, template in all_pod_templates():
        if where not in ray_pods:
            assert template["metadata"]["labels"].get(COMPONENT) not in ray_roles, where


def test_ingress_is_denied_by_default():
    deny = [p for p in network_policies() if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1, "one default-deny policy"
    assert deny[0]["spec"]["policyTypes"] == ["Ingress"] and not deny[0]["spec"].get("ingress")
    for where, template in all_pod_templates():  # so every pod is isolated: nothing else gets in
        assert selects(deny[0]["spec"]["podSelector"], template["metadata"].get("labels", {})), where


def test_only_the_ray_pods_reach_mlflow():
    mlflow = pod_labels("mlflow.yaml:Deployment/mlflow")
    port = container_port("mlflow.yaml:Deployment/mlflow", "http")
    assert port == 5000
    for where, template in all_pod_templates():
        labels = template["metadata"]["labels"]
        assert may_connect(labels, mlflow, port) == is_ray_node(labels), where
        assert not may_connect(labels, mlflow, 5432), where
    operator = {"app.kubernetes.io/name": "kuberay-operator"}
    assert not may_connect(operator, mlflow, port, {"kubernetes.io/metadata.name": OPERATOR_NAMESPACE})


def test_only_mlflow_reaches_its_database():
    database = pod_labels("mlflow.yaml:StatefulSet/mlflow-db")
    port = container_port("mlflow.yaml:StatefulSet/mlflow-db", "postgres")
    reached_by = {where for where, t in all_pod_templates() if may_connect(t["metadata"]["labels"], database, port)}
    assert reached_by == {"mlflow.yaml:Deployment/mlflow"}


@pytest.mark.parametrize("doc, spec", cluster_specs(), ids=[d.id for d, _ in cluster_specs()])
def test_only_the_platforms_own_pods_reach_a_ray_head(doc, spec):
    """Ray pods reach every port of a head (GCS 6379, dashboard 8265, client 10001) and of a
    worker; submitters and the KubeRay operator (its namespace) the dashboard only; MLflow, its
    database, the nightly CronJob's pod and anything else nothing."""
    head = spec["headGroupSpec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in head["spec"]["containers"][0]["ports"]}
    assert ports == {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
    target = head["metadata"]["labels"]
    worker = spec["workerGroupSpecs"][0]["template"]["metadata"]["labels"]
    for where, template in all_pod_templates():
        labels = template["metadata"]["labels"]
        submitter = labels.get(COMPONENT) == SUBMITTER_COMPONENT
        for name, port in ports.items():
            expected = is_ray_node(labels) or (submitter and name == "dashboard")
            assert may_connect(labels, target, port) == expected, f"{where} -> {doc.id} head:{port}"
        assert may_connect(labels, worker, 12345) == is_ray_node(labels), f"{where} -> {doc.id} worker"
    operator = {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "kuberay-operator"}
    operator_namespace = {"kubernetes.io/metadata.name": OPERATOR_NAMESPACE}
    assert may_connect(operator, target, ports["dashboard"], operator_namespace)
    assert not may_connect(operator, target, ports["gcs-server"], operator_namespace)
    assert not may_connect(operator, target, ports["dashboard"], {"kubernetes.io/metadata.name": "default"})
    assert not may_connect({"app": "other"}, target, ports["dashboard"], operator_namespace)


def test_operator_namespace_is_the_one_readme_installs_it_in():
    for readme in (K8S / "README.md", REPO / "README.md"):
        install = [line for line in readme.read_text().splitlines() if "helm install kuberay-operator" in line]
        assert install and all(f"--namespace {OPERATOR_NAMESPACE}" in line for line in install), readme


def test_network_model_lets_everything_in_without_policies(monkeypatch):
    """The model itself: no policy selecting a pod means that pod accepts everything."""
    monkeypatch.setitem(globals(), "network_policies", list)
    assert may_connect({"app": "anything"}, pod_labels("mlflow.yaml:StatefulSet/mlflow-db"), 5432)


# ----------------------------------------------------------------------------------------------
# The nightly segmentation: RayCronJob, and the CronJob that creates the same RayJob
# ----------------------------------------------------------------------------------------------


def test_raycronjob_schedule():
    spec = one("RayCronJob").body["spec"]
    assert spec["schedule"] == "0 1 * * *" and spec["timeZone"] == "Etc/UTC"


def test_cronjob_alternative_creates_the_same_rayjob():
    template = one("RayJob", "anunet-nightly-segment-")
    assert "name" not in template.body["metadata"], "generateName: one RayJob per night"
    assert template.body["spec"] == one("RayCronJob").body["spec"]["jobTemplate"]
    cron = one("CronJob").body["spec"]
    assert cron["schedule"] == one("RayCronJob").body["spec"]["schedule"]
    assert cron["concurrencyPolicy"] == "Forbid"

    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    script = container["args"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = next(n for n, v in volumes.items() if "configMap" in v)
    assert f"{mounts[config_map]}/{template.path.name}" in script
    generators = kustomizations()[template.path.parent]["configMapGenerator"]
    assert generators == [{"name": volumes[config_map]["configMap"]["name"], "files": [template.path.name]}]
    assert "kubectl create" in script and "kubectl apply" not in script

    # RBAC: the pod's ServiceAccount may create RayJobs, through a RoleBinding to a Role.
    account = pod["serviceAccountName"]
    binding = one("RoleBinding").body
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    role = one("Role", binding["roleRef"]["name"]).body
    assert any(
        "ray.io" in rule["apiGroups"] and "rayjobs" in rule["resources"] and "create" in rule["verbs"]
        for rule in role["rules"]
    )
    assert one("ServiceAccount", account)


def test_cronjob_alternative_sets_every_image_of_its_rayjob():
    """The script's sed swaps each `image: anunet` line for $ANUNET_IMAGE: that must be all of them."""
    template = one("RayJob", "anunet-nightly-segment-")
    container = one("CronJob").body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert 's|image: anunet\\$|image: ${ANUNET_IMAGE}|' in container["args"][0]
    text = template.path.read_text()
    swapped = re.sub(r"image: anunet$", "image: example.org/anunet:1", text, flags=re.MULTILINE)
    assert {c["image"] for c in all_containers(yaml.safe_load(swapped))} == {"example.org/anunet:1"}
    env = {e["name"]: e for e in container["env"]}
    assert env["ANUNET_IMAGE"]["value"] == "anunet"  # rewritten by the images component (kustomizeconfig.yaml)


# ----------------------------------------------------------------------------------------------
# The image recipe
# ----------------------------------------------------------------------------------------------


def test_dockerfile_installs_cpu_torch_before_the_project():
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    code = [line for line in lines if line and not line.startswith("#")]
    assert "ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu" in code
    assert code[code.index("ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu") + 1] == "FROM ${RAY_IMAGE}"
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in code
    assert "ARG TORCH_SPEC=torch==2.13.0" in code
    torch_line = next(i for i, line in enumerate(code) if "${TORCH_SPEC}" in line)
    assert '--index-url "${TORCH_INDEX_URL}"' in code[torch_line]
    project_line = next(i for i, line in enumerate(code) if re.search(r"pip install .*\s\.(\s|$)", line))
    assert torch_line < project_line, "torch must be installed before the project"
    for source in ("pyproject.toml", "anunet_core/", "platform/", "jobs/"):
        assert any(line.startswith("COPY") and source in line for line in code), source
    assert "rayproject/ray:2.60.0-py311-gpu" in (REPO / "Dockerfile").read_text()


CONSTRAINTS = REPO / "constraints.txt"
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


@cache
def pins() -> dict[str, str]:
    """constraints.txt as canonical name -> version; every line a comment or `name==version`."""
    result: dict[str, str] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.fullmatch(line)
        assert match, f"constraints.txt:{number}: {line!r} is not name==version"
        name, version = canonicalize_name(match.group(1)), match.group(2)
        assert name not in result, f"constraints.txt:{number}: {name} pinned twice"
        assert Version(version).local is None, f"constraints.txt:{number}: {line} (no +local: CPU and CUDA torch match)"
        result[name] = version
    return result


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def freeze_script():
    spec = importlib.util.spec_from_file_location("freeze_constraints", REPO / "docker" / "freeze_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_constraints_pin_every_package_the_image_installs():
    """Every project dependency is pinned, at a version its floor allows; torch, Ray and MLflow at
    the versions the image and the manifests name; the server's extras (Flask-WTF, psycopg2) too."""
    pinned_versions = pins()
    assert len(pinned_versions) >= 100, "the whole dependency tree, not only the direct dependencies"
    for text in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned_versions, f"{text} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned_versions[name], prereleases=True), (text, pinned_versions[name])
    instructions = dockerfile_instructions()
    torch_spec = next(i for i in instructions if i.startswith("ARG TORCH_SPEC=")).split("=", 1)[1]
    assert torch_spec == f"torch=={pinned_versions['torch']}" == "torch==2.13.0"
    ray_image = next(i for i in instructions if i.startswith("ARG RAY_IMAGE=")).split("=", 1)[1]
    assert ray_image.startswith(f"rayproject/ray:{pinned_versions['ray']}-")
    assert {spec["rayVersion"] for _, spec in cluster_specs()} == {pinned_versions["ray"]} == {"2.60.0"}
    assert pinned_versions["mlflow"] == "3.17.2"
    assert Version(pinned_versions["flask-wtf"]) < Version("2"), "mlflow[auth] needs Flask-WTF<2"
    assert {"wtforms", "psycopg2-binary"} <= set(pinned_versions)


def test_dockerfile_installs_everything_under_the_constraints_as_a_non_root_user():
    instructions = dockerfile_instructions()
    installs = [i for i, line in enumerate(instructions) if "pip install" in line]
    assert len(installs) == 2, [instructions[i] for i in installs]
    copy = next(i for i, line in enumerate(instructions) if line.startswith("COPY") and "constraints.txt" in line)
    workdir = next(i for i, line in enumerate(instructions) if line.startswith("WORKDIR"))
    assert workdir < copy < installs[0] and instructions[workdir] == "WORKDIR /home/ray/anunet"
    for i in installs:
        assert re.search(r"\s-c constraints\.txt\s", instructions[i]), instructions[i]
    assert "--no-deps" in instructions[installs[0]], "torch alone; its dependencies come pinned from PyPI"
    project = instructions[installs[1]]
    for root in freeze_script().ROOTS[1:]:  # what the image adds to the project
        assert f'"{root}"' in project or f" {root} " in f"{project} ", f"{root} is frozen but not installed"
    users = [line for line in instructions if line.startswith("USER ")]
    assert users[-1] == "USER {}:{}".format(*IMAGE_USERS["anunet"]), "the manifests' runAsUser/runAsGroup"


def test_freeze_script_walks_the_installed_requirements():
    """docker/freeze_constraints.py follows requirements (markers, extras) through the installed
    distributions and refuses a missing one."""
    freeze = freeze_script()
    walked = freeze.closure(("pytest",))
    assert {"pytest", "pluggy", "iniconfig", "packaging"} <= set(walked)
    with pytest.raises(SystemExit, match="not installed"):
        freeze.closure(("surely-not-an-installed-distribution",))


def test_dockerignore_keeps_local_state_out():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", ".git", "anunet-workspace", "anunet-demo", "**/__pycache__"} <= ignored


# ----------------------------------------------------------------------------------------------
# kustomize build (where kubectl or kustomize is installed)
# ----------------------------------------------------------------------------------------------


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@cache
def build(directory: Path) -> tuple[dict, ...]:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    result = subprocess.run([*command, str(directory)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(command)} {directory}:\n{result.stderr}"
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


BUILDABLE = sorted(d for d, k in kustomizations().items() if k["kind"] == "Kustomization")


def test_kustomizations_are_found():
    assert [d.relative_to(REPO).as_posix() for d in BUILDABLE] == ["k8s", "k8s/jobs", "k8s/nightly", "k8s/nightly-cronjob"]


@pytest.mark.parametrize("directory", BUILDABLE, ids=lambda d: d.relative_to(REPO).as_posix())
def test_kustomization_builds(directory):
    built = build(directory)
    assert built
    images = component_references()
    for doc in built:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "anunet", name
        for container in all_containers(doc):
            assert container["image"] in images.values(), f"{name}: {container['image']} was not rewritten"
            assert pinned(container["image"]), f"{name}: {container['image']}"
        if doc["apiVersion"] == "ray.io/v1" and SCHEMAS.is_dir():
            assert not schema_errors(doc), schema_errors(doc)
    if directory == K8S:  # the auth ini's ConfigMap carries a hash; the Deployment names it so
        config_maps = {d["metadata"]["name"] for d in built if d["kind"] == "ConfigMap"}
        assert CONFIG_MAP in config_maps, "no hash: custom resources name it"
        mlflow = next(d for d in built if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
        (auth,) = [v["configMap"]["name"] for v in mlflow["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
        assert auth in config_maps and re.fullmatch(r"mlflow-auth-config-\w+", auth), auth
        assert {d["metadata"]["name"] for d in built if d["kind"] == "NetworkPolicy"} == {
            p["metadata"]["name"] for p in network_policies()
        }
    if directory.name == "nightly-cronjob":
        cron = next(d for d in built if d["kind"] == "CronJob")
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["ANUNET_IMAGE"]["value"] == images["anunet"]
        config_maps = {d["metadata"]["name"]: d for d in built if d["kind"] == "ConfigMap"}
        (mounted,) = [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
        rayjob = yaml.safe_load(config_maps[mounted]["data"]["rayjob-segment.yaml"])  # what the CronJob creates
        assert parse_entrypoint(rayjob["spec"]["entrypoint"])[0] == "segment"
        if SCHEMAS.is_dir():
            assert not schema_errors(rayjob), schema_errors(rayjob)


def test_clusters_that_read_archives_get_the_pseudonym_key_from_an_optional_secret():
    """--pseudonymize reads ANUNET_PSEUDONYM_KEY in the driver (the head): the clusters that run
    ingest or segment have it from the Secret, optional so that clusters without it still start."""
    readers = [(doc, spec) for doc, spec in cluster_specs() if doc.path.parent.name != "jobs" or doc.path.stem == "ingest"]
    assert {doc.path.name for doc, _ in readers} >= {"raycluster.yaml", "ingest.yaml", "raycronjob.yaml",
                                                     "rayjob-segment.yaml"}
    for doc, spec in readers:
        for group, body in ray_groups(spec):
            env = {e["name"]: e for e in body["template"]["spec"]["containers"][0].get("env", [])}
            ref = env["ANUNET_PSEUDONYM_KEY"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": PSEUDONYM_SECRET, "key": "key", "optional": True}, (doc.path, group)
