"""End to end on a real Ray cluster: ``ray start --head`` with token authentication, the demo
submitted with ``ray job submit --working-dir``, MLflow through a tracking server.

This is the README's "Run on a cluster", command for command: the head is started from this
interpreter's environment (the project installed: what every node of a real cluster has, see
the Dockerfile), ``--working-dir`` ships this checkout's code, the runtime env points the jobs
at the MLflow server and puts the shipped ``platform/`` first on ``PYTHONPATH``. The cluster
is stopped by its own process (never ``ray stop`` or a broad kill), and the test fails if any
process of it survives.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import pytest
from testkit import free_port, running_mlflow_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"
DEPTHS = (1, 2, 3, 4)
START_TIMEOUT_S = 180
JOB_TIMEOUT_S = 900
STOP_TIMEOUT_S = 60  # a SIGTERM'd head drains (5 s here, RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S) then stops its processes
# Client-side variables that would point a command at another cluster or another token.
_FOREIGN_ENV = (
    "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI",
)


@dataclass(frozen=True)
class Cluster:
    address: str  # the job server (dashboard), what `ray job submit --address` takes
    token: str
    temp_dir: Path  # Ray's --temp-dir: every process of this cluster runs under it
    home: Path  # an empty HOME: nothing reads or writes the user's ~/.ray
    tracking_uri: str
    workdir: Path

    def env(self, *, token: str | None = None, auth_mode: str | None = "token") -> dict[str, str]:
        """The environment of a Ray CLI call: by default the cluster's token, the way the
        README says (``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN``)."""
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
        env.update(HOME=str(self.home), RAY_USAGE_STATS_ENABLED="0", PATH=f"{RAY.parent}{os.pathsep}{env.get('PATH', '')}")
        if auth_mode is not None:
            env["RAY_AUTH_MODE"] = auth_mode
        if token is not None:
            env["RAY_AUTH_TOKEN"] = token
        return env

    def ray(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """One ``ray ...`` CLI call against this cluster, with its token unless ``env`` says otherwise."""
        return subprocess.run(
            [str(RAY), *args], env=self.env(token=self.token) if env is None else env, cwd=REPO,
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def job_info(self, submission_id: str) -> dict:
        """The job server's record of a job (``GET /api/jobs/<id>``, with the token)."""
        request = urllib.request.Request(
            f"{self.address}/api/jobs/{submission_id}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def runtime_env(self) -> str:
        return json.dumps({"env_vars": {"MLFLOW_TRACKING_URI": self.tracking_uri, "PYTHONPATH": "platform"}})


def _processes_of(temp_dir: Path) -> list[psutil.Process]:
    """Every live process of the cluster under ``temp_dir``: Ray's own (their command lines
    name the temp dir) and job drivers and workers (their cwd is the job's working dir in it)."""
    mark, found = str(temp_dir), []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid == os.getpid():
                continue
            cmdline = " ".join(proc.info["cmdline"] or ())
            cwd = ""
            if mark not in cmdline:
                try:
                    cwd = proc.cwd()
                except (psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            if mark in cmdline or cwd.startswith(mark):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _stop(head: subprocess.Popen, temp_dir: Path) -> list[str]:
    """Stop the cluster by its own process; returns what had to be killed afterwards.

    SIGTERM goes to the ``ray start --block`` process alone: it drains the node and stops the
    processes it started. (SIGTERM to the whole group at once kills the GCS first, and the head
    then waits out its drain timeout for it: "Failed to mark the local node as draining on
    SIGTERM".) Whatever is left in its process group, or anywhere under its temp dir, is killed.
    """
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)  # the group outlives its leader while members remain
    except ProcessLookupError:
        pass
    head.wait(timeout=30)
    deadline = time.monotonic() + 15
    while _processes_of(temp_dir) and time.monotonic() < deadline:
        time.sleep(1)  # processes that are still exiting
    stragglers = []
    for proc in _processes_of(temp_dir):
        try:
            stragglers.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return stragglers


def _wait_for_job_server(cluster: Cluster, head: subprocess.Popen, log: Path) -> None:
    """Until ``ray job list`` answers with the token (the job server runs in the dashboard)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{cluster.address}/api/version", timeout=2):
                pass
        except urllib.error.HTTPError:
            pass  # 401: the dashboard is up and wants the token
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not come up:\n{log.read_text()[-4000:]}") from None
            time.sleep(1)
            continue
        listed = cluster.ray("job", "list", "--address", cluster.address)
        if listed.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"ray job list keeps failing:\n{listed.stdout[-2000:]}{listed.stderr[-2000:]}")
        time.sleep(2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    assert RAY.is_file(), f"no ray CLI beside {sys.executable} (the project installs ray[default])"
    tmp = tmp_path_factory.mktemp("ray_job_submit")
    home = tmp / "home"
    home.mkdir()
    # Ray's socket paths live under --temp-dir and must stay under ~107 characters.
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    token = secrets.token_hex(32)
    ports = {name: free_port() for name in (
        "port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
        "node-manager-port", "object-manager-port",
    )}
    command = [
        str(RAY), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
        "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
        "--num-cpus", "4", "--temp-dir", str(temp_dir), "--disable-usage-stats",
    ]
    for name, port in ports.items():
        command += [f"--{name}", str(port)]
    cl = Cluster(f"http://127.0.0.1:{ports['dashboard-port']}", token, temp_dir, home, "", tmp)
    # The head's environment is every Ray process's: the token, and this environment's bin
    # first on PATH, so that the entrypoint's `python` is the one with the project installed.
    # A short drain on SIGTERM: after the demo the node never goes idle, and the head would wait
    # out the default 30 s ("did not finish draining within 30.0 seconds").
    env = {**cl.env(token=token), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "5"}
    log_path = tmp / "ray-head.log"
    with log_path.open("w") as log:
        head = subprocess.Popen(command, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stragglers: list[str] | None = None
    try:
        with running_mlflow_server(tmp) as tracking_uri:  # starts while the head does
            try:
                _wait_for_job_server(cl, head, log_path)
                yield replace(cl, tracking_uri=tracking_uri)
            finally:
                # Ray first: its workers' open connections would hold up the server's shutdown.
                stragglers = _stop(head, temp_dir)
    finally:
        if stragglers is None:  # the MLflow server did not start
            stragglers = _stop(head, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not stragglers, f"processes of the cluster outlived it (now killed): {stragglers}"


def test_the_job_server_refuses_requests_without_the_token(cluster: Cluster) -> None:
    address = ["job", "list", "--address", cluster.address]
    # no token anywhere: HOME is empty, so there is no ~/.ray/auth_token either
    missing = cluster.ray(*address, env=cluster.env(token=None, auth_mode=None))
    assert missing.returncode != 0 and "Unauthorized: Missing authentication token" in missing.stderr, missing.stderr[-2000:]
    # a token without RAY_AUTH_MODE=token is not sent at all
    unsent = cluster.ray(*address, env=cluster.env(token=cluster.token, auth_mode=None))
    assert unsent.returncode != 0 and "Missing authentication token" in unsent.stderr, unsent.stderr[-2000:]
    wrong = cluster.ray(*address, env=cluster.env(token=secrets.token_hex(32)))
    assert wrong.returncode != 0 and "Forbidden: Invalid authentication token" in wrong.stderr, wrong.stderr[-2000:]
    assert cluster.ray(*address).returncode == 0
    # the dashboard's HTTP API too
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{cluster.address}/api/jobs/", timeout=10)
    assert refused.value.code == 401
    request = urllib.request.Request(f"{cluster.address}/api/jobs/", headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def _submit(cluster: Cluster, name: str, entrypoint: list[str], timeout: float) -> str:
    """``ray job submit`` (blocking: it tails the logs until the job ends); asserts success."""
    submission_id = f"{name}-{secrets.token_hex(4)}"
    log = cluster.workdir / f"{submission_id}.log"
    command = [
        str(RAY), "job", "submit", "--address", cluster.address, "--submission-id", submission_id,
        "--working-dir", str(REPO), "--runtime-env-json", cluster.runtime_env(), "--", *entrypoint,
    ]
    with log.open("w") as out:
        try:
            done = subprocess.run(
                command, env=cluster.env(token=cluster.token), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            cluster.ray("job", "stop", "--address", cluster.address, submission_id)
            pytest.fail(f"job {submission_id} still running after {timeout:.0f} s:\n{_job_logs(cluster, submission_id)}")
    output = log.read_text()
    info = cluster.job_info(submission_id)
    assert done.returncode == 0 and info["status"] == "SUCCEEDED", (
        f"job {submission_id}: ray job submit exited {done.returncode}, status {info['status']}: {info.get('message')}\n"
        f"{output[-12000:]}"
    )
    assert f"Job '{submission_id}' succeeded" in output
    return output


def _job_logs(cluster: Cluster, submission_id: str) -> str:
    logs = cluster.ray("job", "logs", "--address", cluster.address, submission_id)
    return (logs.stdout + logs.stderr)[-12000:]


def test_the_job_runs_the_code_it_was_sent(cluster: Cluster) -> None:
    """``--working-dir`` plus ``PYTHONPATH=platform``: the driver and its tasks import both
    packages from the shipped copy of this checkout, not from the installed project; the
    standard ``platform`` module stays the standard one."""
    probe = (
        "import json, platform, ray, anunet_core, anunet_platform\n"
        "from anunet_platform.cluster import init_ray\n"
        "init_ray()\n"
        "where = lambda: [__import__(m).__file__ for m in ('anunet_core', 'anunet_platform', 'platform')]\n"
        "print('PROBE', json.dumps({'driver': where(), 'task': ray.get(ray.remote(where).remote())}))\n"
    )
    output = _submit(cluster, "probe", ["python", "-c", probe], timeout=300)
    line = next(ln for ln in output.splitlines() if ln.startswith("PROBE "))
    seen = json.loads(line.removeprefix("PROBE "))
    for who, (core, plat, std) in seen.items():
        assert core.startswith(str(cluster.temp_dir)) and core.endswith("anunet_core/__init__.py"), (who, core)
        assert plat.startswith(str(cluster.temp_dir)) and plat.endswith("platform/anunet_platform/__init__.py"), (who, plat)
        assert not std.startswith(str(cluster.temp_dir)) and std.endswith("platform.py"), (who, std)


def test_demo_submitted_to_the_cluster(cluster: Cluster) -> None:
    import mlflow
    import pyarrow.parquet as pq

    demo = cluster.workdir / "demo"
    start = time.monotonic()
    output = _submit(
        cluster, "demo",
        ["python", "jobs/demo.py", "--workdir", str(demo), "--cases", "4", "--epochs", "1", "--size", "32"],
        timeout=JOB_TIMEOUT_S,
    )
    print(f"\ndemo job: {time.monotonic() - start:.0f} s on the cluster")
    assert "[5/5]" in output

    # The registry is the tracking server's (cluster mode), not a SQLite file in the workdir.
    client = mlflow.MlflowClient(tracking_uri=cluster.tracking_uri, registry_uri=cluster.tracking_uri)
    production = {}
    for depth in DEPTHS:
        name = f"anunet-liver-ct-L{depth}"
        version = client.get_model_version_by_alias(name, "production")
        assert version.tags["depth"] == str(depth)
        production[depth] = version.version
    report = json.loads((demo / "report.json").read_text())
    assert report["tracking_uri"] == cluster.tracking_uri and not (demo / "mlflow.db").exists()

    manifest = pq.read_table(demo / "segmentations" / "manifest.parquet").to_pylist()
    assert len(manifest) == 3 and [r["status"] for r in manifest] == ["ok"] * 3, manifest
    for row in manifest:
        depth = row["depth"]
        assert depth in DEPTHS, row
        assert row["model_version"] == f"models:/anunet-liver-ct-L{depth}/{production[depth]}", row
        mask = demo / "segmentations" / "masks" / f"{row['case_id']}.nii.gz"
        assert mask.is_file() and mask.stat().st_size > 0, mask
