"""The Kubernetes manifests (k8s/) and the image recipe (Dockerfile), checked without a cluster.

- every KubeRay object validates strictly against the KubeRay 1.7 CRD schemas in
  ``../shared/schemas/kuberay-v1.7`` (skipped where that folder is absent);
- every entrypoint parses with its job's own parser (a renamed flag fails here, not at night);
- the clusters fit their jobs (GPUs for DDP ranks and trials), token auth is on everywhere,
  no secret is written into a manifest, one set of image names that kustomize rewrites;
- where ``kubectl`` (or ``kustomize``) is installed, every kustomization builds, and the built
  output is checked again.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

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
SECRET_LIKE = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)
GPU = "nvidia.com/gpu"


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


def pod_specs(doc: Doc) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) of every pod template in a manifest, Ray or not."""
    body = doc.body
    if body["apiVersion"] == "ray.io/v1":
        for group, group_spec in ray_groups(cluster_spec_of(doc)):
            yield f"{doc.id} {group}", group_spec["template"]["spec"]
    elif doc.kind in ("Deployment", "StatefulSet", "Job"):
        yield doc.id, body["spec"]["template"]["spec"]
    elif doc.kind == "CronJob":
        yield doc.id, body["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


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
    assert kinds == ["RayCluster", "RayCronJob", "RayJob", "RayJob", "RayJob", "RayJob"], kinds


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


def test_entrypoints_cover_ingest_train_tune_and_segment():
    names = {parse_entrypoint(e)[0] for _, e in entrypoints()}
    assert {"ingest", "train", "tune", "segment"} <= names, names


def test_training_entrypoints_use_gpus_and_shared_checkpoint_storage():
    for where, entrypoint in entrypoints():
        name, args = parse_entrypoint(entrypoint)
        if name in ("train", "tune"):
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
        if name in ("train", "tune"):  # every rank of every concurrent trial at once
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
    assert labels == ["ingest", "train", "tune"]
    for doc in jobs:
        assert doc.body["metadata"]["name"] == f"anunet-{doc.body['metadata']['labels']['anunet.io/job']}"


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
    assert checked >= 2  # POSTGRES_PASSWORD, PGPASSWORD
    for kustomization in kustomizations().values():
        for generator in kustomization.get("configMapGenerator", []):
            for literal in generator.get("literals", []):
                assert not SECRET_LIKE.search(literal.split("=")[0]), f"{literal}: a Secret, not a ConfigMap"


def images_component() -> dict:
    return kustomizations()[K8S / "images"]


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
    config = {}
    for generator in kustomizations()[K8S]["configMapGenerator"]:
        if generator["name"] == CONFIG_MAP:
            config = dict(literal.split("=", 1) for literal in generator["literals"])
    assert config["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert config["ANUNET_STORAGE"] == "/data/ray_results" and config["ANUNET_DATA"] == DATA_MOUNT
    assert kustomizations()[K8S]["generatorOptions"]["disableNameSuffixHash"] is True, "custom resources name it"
    service = one("Service", "mlflow").body["spec"]
    assert service["ports"][0]["port"] == 5000
    server = one("Deployment", "mlflow").body["spec"]["template"]["spec"]["containers"][0]
    args = server["command"]
    assert args[:2] == ["mlflow", "server"]
    assert "--backend-store-uri=postgresql://mlflow@mlflow-db:5432/mlflow" in args
    assert "--serve-artifacts" in args and "--artifacts-destination=/mlartifacts" in args
    allowed = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert {"mlflow:*", "localhost:*"} <= set(allowed), "jobs and port-forward pass the Host check"
    password = {e["name"]: e for e in server["env"]}["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "anunet-mlflow-db", "key": "password"}
    db = one("StatefulSet", "mlflow-db").body["spec"]
    db_env = {e["name"]: e for e in db["template"]["spec"]["containers"][0]["env"]}
    assert db_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == password
    assert db["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_shared_data_volume_is_read_write_many():
    pvc = one("PersistentVolumeClaim", DATA_CLAIM).body["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"]
    patches = [yaml.safe_load(p["patch"]) for p in kustomizations()[K8S]["patches"]]
    data = next(p for p in patches if p["metadata"]["name"] == DATA_CLAIM)
    assert data["spec"]["storageClassName"] and data["spec"]["resources"]["requests"]["storage"]


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
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in images_component()["images"]}
    for doc in built:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "anunet", name
        for container in all_containers(doc):
            assert container["image"] in images.values(), f"{name}: {container['image']} was not rewritten"
        if doc["apiVersion"] == "ray.io/v1" and SCHEMAS.is_dir():
            assert not schema_errors(doc), schema_errors(doc)
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
