"""register_depths killed for real midway (SIGKILL of the registering process), then run again:
one version per depth, all from the run, and the run promotes as one set.

The network is an ANU-Net of small filters: what registering costs is mostly ``torch.export``
of each depth, and its size changes nothing of what is tested here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from anunet_core import ANUNet
from anunet_core.vocabulary import DEPTHS
from anunet_platform import registry
from testkit import randomize_batchnorm

FILTERS = (4, 8, 16, 32, 64)

# A registering process of its own: the network and its metrics come from files the test wrote.
_REGISTER = (
    "import json, sys, torch\n"
    "from anunet_core import ANUNet\n"
    "from anunet_platform import registry\n"
    "request = json.loads(sys.argv[1])\n"
    "model = ANUNet(filters=request.pop('filters'))\n"
    "model.load_state_dict(torch.load(request.pop('weights'), weights_only=True))\n"
    "metrics = {int(d): m for d, m in request.pop('metrics').items()}\n"
    "registry.register_depths(model.eval(), metrics=metrics, **request)\n"
)


def _versions(client: MlflowClient, names: list[str]) -> dict[str, list]:
    return {name: client.search_model_versions(f"name='{name}'") for name in names}


@pytest.mark.slow
def test_a_registration_killed_midway_then_run_again_gives_one_version_per_depth(
    sqlite_uri: str, tmp_path: Path, size: int, depth_metrics
) -> None:
    client = MlflowClient(tracking_uri=sqlite_uri, registry_uri=sqlite_uri)
    experiment_id = registry.ensure_experiment("anunet-register-kill", uri=sqlite_uri)
    run_id = client.create_run(experiment_id, run_name="killed-midway").info.run_id
    client.set_terminated(run_id, "FINISHED")  # a finished training run, resumed for registering
    torch.manual_seed(3)
    model, metrics = randomize_batchnorm(ANUNet(filters=FILTERS), 3).eval(), depth_metrics(3)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    common = dict(run_id=run_id, organ="spleen", modality="CT", alpha=0.5, gamma=2.0, dataset_checksum="d",
                  input_size=size, uri=sqlite_uri)
    names = [registry.registered_model_name("spleen", "CT", d) for d in DEPTHS]

    request = json.dumps(common | {"weights": str(tmp_path / "weights.pt"), "filters": FILTERS, "metrics": metrics})
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with (tmp_path / "register.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-c", _REGISTER, request], env=env, cwd=tmp_path, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not any(_versions(client, names).values()):  # depths register one after another
                assert process.poll() is None, (tmp_path / "register.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no depth registered in 300 s"
                time.sleep(0.05)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    done = sorted(d for d, name in zip(DEPTHS, names) if _versions(client, [name])[name])
    assert 1 <= len(done) < len(DEPTHS), f"the kill came after depths {done}: not midway"

    again = registry.register_depths(model, metrics=metrics, **common)
    assert [r.depth for r in again] == list(DEPTHS)
    for name, versions in _versions(client, names).items():
        assert [(str(v.version), v.run_id) for v in versions] == [("1", run_id)], (name, done)
        assert str(client.get_model_version_by_alias(name, "candidate").version) == "1"
    assert [str(version) for _, version in registry.promote(run_id, uri=sqlite_uri)] == ["1"] * 4
