"""register_depths: one version per depth, named, tagged and aliased ``candidate``; the trade-off
chart on the run; refusals before anything is logged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from anunet_core import ANUNet
from anunet_core.baselines import build_network
from anunet_core.vocabulary import DEPTHS
from anunet_platform import registry
from anunet_platform.registry import RegistryError


@pytest.mark.parametrize("key", ["liver1", "kidney"])
def test_register_depths_names_tags_and_candidate_alias(store, client: MlflowClient, key: str, table6_params) -> None:
    reg = store.runs[key]
    assert [r.name for r in reg.rows] == store.names[key]
    assert [r.version for r in reg.rows] == ["1"] * 4
    for row in reg.rows:
        d = row.depth
        mv = client.get_model_version(row.name, row.version)
        assert mv.run_id == reg.run_id
        tags = mv.tags
        assert tags["depth"] == str(d)
        assert int(tags["params"]) == table6_params[d]
        assert float(tags["val_dice"]) == reg.metrics[d]["val_dice"]
        assert float(tags["val_iou"]) == reg.metrics[d]["val_iou"]
        assert float(tags["val_recall"]) == reg.metrics[d]["val_recall"]
        assert tags["dataset"] == reg.dataset
        assert float(tags["alpha"]) == reg.alpha and float(tags["gamma"]) == reg.gamma
        assert tags["input_size"] == str(store.size)
        assert tags["organ"] == reg.organ.lower() and tags["modality"] == reg.modality.upper()
        assert float(tags["latency_ms_per_slice"]) > 0
        assert set(registry.TAG_KEYS) <= set(tags)
        assert row.tags == {k: v for k, v in tags.items() if k in row.tags}
        assert row.aliases == ("candidate",)
    assert all(str(client.get_model_version_by_alias(name, "candidate").version) == "1" for name in store.names["kidney"])


def test_registering_again_makes_version_2_and_moves_candidate(store, client: MlflowClient) -> None:
    assert [r.version for r in store.runs["liver2"].rows] == ["2"] * 4
    for name in store.names["liver2"]:
        assert str(client.get_model_version_by_alias(name, "candidate").version) == "2"
        assert "candidate" not in client.get_model_version(name, "1").aliases


def test_runs_get_the_tradeoff_chart_and_keep_their_status(store, client: MlflowClient, tmp_path: Path) -> None:
    for reg in store.runs.values():
        assert "tradeoff.png" in [a.path for a in client.list_artifacts(reg.run_id)]
    png = Path(client.download_artifacts(store.runs["liver1"].run_id, "tradeoff.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert client.get_run(store.runs["liver1"].run_id).info.status == "FINISHED", "resumed run is left FINISHED"
    assert client.get_run(store.runs["liver2"].run_id).info.status == "FINISHED"


def test_artifacts_stay_in_the_store_folder(store) -> None:
    assert any((store.root / "mlartifacts").rglob("anunet_state_dict.pt"))
    assert not (Path.cwd() / "mlruns").exists()


def test_register_depths_refuses_incomplete_metrics_before_logging(store, client: MlflowClient, depth_metrics) -> None:
    run_id = client.create_run(store.experiment_id).info.run_id
    metrics = depth_metrics(0)
    del metrics[3]["val_iou"]
    common = dict(
        run_id=run_id, organ="spleen", modality="CT", alpha=0.5, gamma=2.0, dataset_checksum="x", uri=store.uri
    )
    with pytest.raises(RegistryError, match="depth 3 lack val_iou"):
        registry.register_depths(ANUNet(), metrics=metrics, input_size=store.size, **common)
    with pytest.raises(RegistryError, match="input_size"):
        registry.register_depths(ANUNet(), metrics=depth_metrics(0), input_size=40, **common)
    with pytest.raises(RegistryError, match="not finite"):
        registry.register_depths(ANUNet(), metrics=depth_metrics(0) | {2: {"val_dice": float("nan"), "val_iou": 0.5}},
                                 input_size=store.size, **common)
    with pytest.raises(RegistryError, match="depths must be among 1, 2 for this anunet network"):
        registry.register_depths(ANUNet(depth=2), metrics=depth_metrics(0), input_size=store.size, depths=(1, 2, 3, 4),
                                 **common)
    with pytest.raises(TypeError, match="a network of anunet_core.baselines.NETWORKS"):
        registry.register_depths(torch.nn.Conv2d(1, 1, 1), metrics=depth_metrics(0), input_size=store.size, **common)
    assert client.search_registered_models("name LIKE 'anunet-spleen%'") == []
    assert client.list_artifacts(run_id) == []


def test_a_retried_registration_completes_the_set_instead_of_duplicating_it(
    store, client: MlflowClient, trained_like, depth_metrics
) -> None:
    """A driver killed after registering two depths, then retried: one version per depth, the
    first two kept as they were, and the run promotes as one set."""
    run_id = client.create_run(store.experiment_id, run_name="retried").info.run_id
    model = trained_like(2)
    common = dict(run_id=run_id, organ="liver", modality="MR", metrics=depth_metrics(2), alpha=0.5, gamma=2.0,
                  dataset_checksum="d", input_size=store.size, uri=store.uri)
    first = registry.register_depths(model, depths=(1, 2), **common)
    again = registry.register_depths(model, **common)
    assert [r.depth for r in again] == list(DEPTHS)
    assert [(r.version, r.tags) for r in again[:2]] == [(r.version, r.tags) for r in first]
    for d in DEPTHS:
        versions = client.search_model_versions(f"name='anunet-liver-mr-L{d}'")
        assert [(str(v.version), v.run_id) for v in versions] == [("1", run_id)], d
        assert str(client.get_model_version_by_alias(f"anunet-liver-mr-L{d}", "candidate").version) == "1"
    assert [str(version) for _, version in registry.promote(run_id, uri=store.uri)] == ["1"] * 4
    assert registry.register_depths(model, **common) == again, "a third call changes nothing"


@pytest.mark.parametrize("arch", ["unet", "attr2unet"])
def test_a_baseline_registers_one_serving_graph_of_any_size(store, client: MlflowClient, depth_metrics, arch: str) -> None:
    """The paper's one-output baselines register as ``{arch}-{organ}-{modality}``, exported like
    ANU-Net's depths: any batch, any H and W that are multiples of 16."""
    import mlflow

    model = build_network(arch).eval()
    run_id = client.create_run(store.experiment_id, run_name=f"{arch}-any-size").info.run_id
    rows = registry.register_depths(model, run_id=run_id, organ="spleen", modality="CT", metrics={4: depth_metrics(3)[4]},
                                    alpha=0.5, gamma=2.0, dataset_checksum="d", input_size=store.size, uri=store.uri)
    assert [(r.name, r.depth, r.tags["arch"]) for r in rows] == [(f"{arch}-spleen-ct", 4, arch)]
    exported = mlflow.pytorch.load_model(f"models:/{arch}-spleen-ct/{rows[0].version}")
    generator = torch.Generator().manual_seed(5)
    for shape in [(2, 1, store.size, store.size), (3, 1, 2 * store.size, store.size + 16)]:
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), model(x)[-1], atol=1e-5, rtol=0)
