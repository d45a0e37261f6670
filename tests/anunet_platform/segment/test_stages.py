"""One case through the three stages, called directly (no Ray): read, the actor, write; one organ
and several."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nibabel as nib

from anunet_core import ANUNet
from anunet_core.archives import discover_cases, load_case
from anunet_core.io import SliceGeometry, read_mask_description, read_volume, voxel_volume_ml
from anunet_core.postprocessing import postprocess_organ
from anunet_core.preprocessing import PREPROCESSING_VERSION, preprocess_volume, restore_label_map, restore_mask
from anunet_core.statistics import organ_statistics
from anunet_core.synthetic import make_archive
from anunet_core.vocabulary import ORGAN_MAP_VALUES
from anunet_platform.contracts import decode_slices_bytes, encode_slices, organ_mask_path, prediction_path, preview_path, record_path
from anunet_platform.segment import OrganOutput, image_signature, read_record
from anunet_platform.segment.stages import (
    CaseContext,
    CaseSegmenter,
    SliceSegmenter,
    decode_intensities,
    encode_intensities,
    head_fields,
    read_case,
    write_case,
    write_stage,
)

SIZE = 32
SHAPE = (40, 40, 6)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stages") / "archive"
    make_archive(root, cases=1, modality="CT", fmt="nifti", seed=5, shape=SHAPE)
    (root / "garbage").mkdir()
    (root / "garbage" / "image.nii.gz").write_bytes(gzip.compress(b"not a nifti at all" * 100))
    return root


def _row(archive: Path, case_id: str) -> dict:
    case = next(c for c in discover_cases(archive, require_labels=False) if c.case_id == case_id)
    return case.to_dict() | {"source": os.path.relpath(case.image, archive), "signature": image_signature(case),
                             "seconds": 0.0}


def _segmenter(tiny_network: dict) -> SliceSegmenter:
    return SliceSegmenter(tiny_network["weights"], tiny_network["config"], size=SIZE, batch_size=4, use_gpu=False,
                          threads=1)


def _through_the_actor(segmenter: SliceSegmenter, row: dict) -> dict:
    """The actor's ``__call__`` on a one-row numpy batch, as Ray Data hands it; the row back."""
    batch = {key: np.array([value], dtype=object if isinstance(value, (str, bytes)) else None)
             for key, value in row.items() if value is not None}
    return {key: values[0] for key, values in segmenter(batch).items()}


def _organ(organ: str, postprocess: bool = False) -> OrganOutput:
    return OrganOutput(organ=organ, label_value=ORGAN_MAP_VALUES[organ], model_name=f"anunet-{organ}-ct-L2", version="1",
                       depth=2, depth_reason="fixed", postprocess=postprocess,
                       postprocess_reason="on: test" if postprocess else "off: test")


def _context(out: Path, previews: bool = True, organs: tuple[str, ...] = ("liver",), postprocess: bool = False) -> CaseContext:
    return CaseContext(out=out, organs=tuple(_organ(o, postprocess) for o in organs), size=SIZE, previews=previews)


@pytest.fixture(scope="module")
def two_networks(tiny_network: dict) -> dict:
    """The tiny network (liver) and a second one (kidney): the same weights but a deepest head that
    says "organ" more readily (its bias raised), so the two overlap and differ, as the actor takes them."""
    kidney = ANUNet(in_channels=1, filters=tiny_network["config"]["filters"], depth=2).eval()
    kidney.load_state_dict(tiny_network["network"].state_dict())
    with torch.no_grad():
        kidney.heads.head_2.bias += 0.4
    return {
        "weights": [tiny_network["weights"], {k: v.detach().numpy().copy() for k, v in kidney.state_dict().items()}],
        "config": [tiny_network["config"]] * 2,
        "networks": [tiny_network["network"], kidney],
    }


def test_read_case_preprocesses_exactly_as_ingest(archive: Path) -> None:
    row = _row(archive, "case_0000")
    read = read_case(row, "liver", "CT", SIZE)
    volume, _ = load_case(discover_cases(archive, require_labels=False)[0], "liver", "CT", with_label=False)
    slices, geometry = preprocess_volume(volume, size=SIZE)
    assert read["error"] == "" and read["num_slices"] == SHAPE[2] == slices.shape[0]
    decoded = decode_slices_bytes(read["slices"], read["num_slices"], SIZE)
    np.testing.assert_array_equal(decoded, slices.astype(np.float16))
    assert SliceGeometry.from_dict(json.loads(read["geometry"])).to_dict() == geometry.to_dict()
    assert read["seconds"] > 0 and read["case_id"] == "case_0000"
    intensities = decode_intensities(read["intensities"], read["intensity_dtype"], volume.shape)
    np.testing.assert_array_equal(intensities, volume.array), "the scan's own values, for the statistics"
    assert read["dicom_headers"] == "", "headers travel only for a DICOM SEG of a DICOM series"


@pytest.mark.parametrize("values,dtype", [
    (np.array([[[-1024.0, 0.0], [3071.0, 40.0]]], np.float32), "<i2"),  # CT in HU: exact in int16
    (np.array([[[0.5, 1.0], [2.0, 3.0]]], np.float32), "<f4"),  # fractions stay float
    (np.array([[[1e6, 0.0], [1.0, 2.0]]], np.float32), "<f4"),  # beyond int16
    (np.array([[[np.nan, 0.0], [1.0, 2.0]]], np.float32), "<f4"),
])
def test_intensities_travel_exactly_in_the_smallest_type(values: np.ndarray, dtype: str) -> None:
    data, chosen = encode_intensities(values)
    assert chosen == dtype and len(data) == values.size * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(decode_intensities(data, chosen, values.shape), values)


@pytest.mark.parametrize(("deep_share", "expected"), [(True, 0.25), (False, None)])
def test_head_fields_give_the_deep_slice_share_only_where_it_tells(deep_share: bool, expected: float | None) -> None:
    """4 slices, one at L4: the manifest's histogram, GFLOP, agreement and uncertainty, and the
    deep-slice share only for an adaptive rule that exits by agreement."""
    from anunet_core.adaptive import SliceRecord

    probs = np.zeros((4, 8, 8), np.float32)
    probs[0, :2, :2] = 0.95
    probs[1, 0, 0] = 0.5  # uncertain
    record = SliceRecord(probs=probs, exit_depth=np.array([1, 2, 2, 4]), agreement_intersection=3, final_voxels=4,
                         shallower_voxels=4, uncertain_pixels=1, gflop=10.0)
    fields = head_fields(record, deep_share, 4)
    assert fields["depth_histogram"] == [1, 2, 0, 1] and fields["gflop_per_slice"] == 2.5
    assert fields["head_agreement"] == pytest.approx(0.75) and fields["uncertain_fraction"] == pytest.approx(1 / 256)
    assert fields["deep_slice_fraction"] == expected


def test_the_actor_runs_the_deepest_head(archive: Path, tiny_network: dict) -> None:
    row = read_case(_row(archive, "case_0000"), "liver", "CT", SIZE)
    segmented = _through_the_actor(_segmenter(tiny_network), row)
    assert segmented["error"] == "" and segmented["seconds"] >= row["seconds"]
    probs = decode_slices_bytes(segmented["probs"], row["num_slices"], SIZE).astype(np.float32)
    slices = torch.from_numpy(decode_slices_bytes(row["slices"], row["num_slices"], SIZE).astype(np.float32))
    with torch.no_grad():
        expected = torch.sigmoid(tiny_network["network"](slices[:, None])[-1])[:, 0].numpy()
    np.testing.assert_allclose(probs, expected, atol=2e-2)  # float16 transport, BatchNorm folded
    assert segmented["slices"] == row["slices"], "the slices stay for the preview"


def test_the_actor_runs_every_organ_s_network_on_the_same_slices(archive: Path, two_networks: dict) -> None:
    row = read_case(_row(archive, "case_0000"), "liver", "CT", SIZE)
    segmenter = SliceSegmenter(two_networks["weights"], two_networks["config"], size=SIZE, batch_size=4,
                               use_gpu=False, threads=1)
    segmented = _through_the_actor(segmenter, row)
    k = row["num_slices"]
    probs = decode_slices_bytes(segmented["probs"], 2 * k, SIZE).reshape(2, k, SIZE, SIZE).astype(np.float32)
    slices = torch.from_numpy(decode_slices_bytes(row["slices"], k, SIZE).astype(np.float32))
    for organ_probs, network in zip(probs, two_networks["networks"], strict=True):
        with torch.no_grad():
            expected = torch.sigmoid(network(slices[:, None])[-1])[:, 0].numpy()
        np.testing.assert_allclose(organ_probs, expected, atol=2e-2)
    assert not np.allclose(probs[0], probs[1], atol=0.05), "two networks, two results"


def test_write_case_writes_the_mask_in_the_source_geometry(
    archive: Path, tiny_network: dict, tmp_path: Path, same_geometry
) -> None:
    row = _through_the_actor(_segmenter(tiny_network), read_case(_row(archive, "case_0000"), "liver", "CT", SIZE))
    (record,) = write_case(row, _context(tmp_path))
    source = read_volume(archive / "case_0000" / "image.nii.gz", modality="CT")
    mask = same_geometry(prediction_path(tmp_path, "case_0000"), source)
    probs = decode_slices_bytes(row["probs"], row["num_slices"], SIZE).astype(np.float32)
    geometry = SliceGeometry.from_dict(json.loads(row["geometry"]))
    np.testing.assert_array_equal(mask, restore_mask(probs, geometry, threshold=0.5))
    assert read_mask_description(prediction_path(tmp_path, "case_0000")) == "models:/anunet-liver-ct-L2/1"
    assert record["status"] == "ok" and record["error"] is None and record["slices"] == SHAPE[2]
    assert record["organ_voxels"] == int(mask.sum()) and (record["organ"], record["label_value"]) == ("liver", 1)
    assert record["organ_ml"] == pytest.approx(mask.sum() * voxel_volume_ml(source.affine))
    assert (record["depth"], record["model_version"], record["depth_reason"]) == (2, "models:/anunet-liver-ct-L2/1", "fixed")
    assert record["preprocessing_version"] == PREPROCESSING_VERSION and record["signature"] == row["signature"]
    assert (record["postprocess"], record["removed_voxels"], record["overlap_voxels"]) == ("off", 0, 0)
    expected = organ_statistics(mask, source.array, source.affine, "liver", "CT")
    assert record["mean_intensity"] == pytest.approx(expected.mean_intensity)
    assert record["centroid_mm"] == pytest.approx(list(expected.centroid_mm))
    assert record["touches_border"] == expected.touches_border
    assert read_record(tmp_path, "case_0000")["rows"] == [record], "the record is what a rerun reads"
    assert not (tmp_path / "masks" / "liver").exists() and not (tmp_path / "labels.json").exists(), "one organ: as before"
    with Image.open(preview_path(tmp_path, "case_0000")) as preview:
        assert min(preview.size) >= 256

    write_case(row, _context(tmp_path / "no-previews", previews=False))
    assert prediction_path(tmp_path / "no-previews", "case_0000").is_file()
    assert not preview_path(tmp_path / "no-previews", "case_0000").exists()


@pytest.mark.parametrize("postprocess", [False, True])
def test_write_case_of_several_organs_writes_a_label_map_and_each_organ(
    archive: Path, two_networks: dict, tmp_path: Path, same_geometry, postprocess: bool
) -> None:
    segmenter = SliceSegmenter(two_networks["weights"], two_networks["config"], size=SIZE, batch_size=4,
                               use_gpu=False, threads=1)
    row = _through_the_actor(segmenter, read_case(_row(archive, "case_0000"), "liver", "CT", SIZE))
    k = row["num_slices"]
    probs = decode_slices_bytes(row["probs"], 2 * k, SIZE).reshape(2, k, SIZE, SIZE).copy()
    probs[0, 0, :3, :3] = 1.0  # a speck of "liver" in a corner of the first slice: post-processing removes it
    row["probs"] = encode_slices(probs)
    ctx = _context(tmp_path, organs=("liver", "kidney"), postprocess=postprocess)
    rows = write_case(row, ctx)
    source = read_volume(archive / "case_0000" / "image.nii.gz", modality="CT")
    geometry = SliceGeometry.from_dict(json.loads(row["geometry"]))
    expected, overlap, lost = restore_label_map(probs, geometry, [1, 3])
    assert overlap.sum() > 0, "untrained networks overlap: the rule is exercised"
    removed = {}
    for organ, value in (("liver", 1), ("kidney", 3)):
        result = postprocess_organ(expected == value, organ, voxel_volume_ml(source.affine))
        removed[organ] = result.removed_voxels if postprocess else 0
        if postprocess:
            expected[(expected == value) & (result.mask == 0)] = 0
    assert removed["liver"] > 0 or not postprocess, "the speck is removed"
    label_map = np.asarray(nib.load(prediction_path(tmp_path, "case_0000")).dataobj)
    np.testing.assert_array_equal(label_map, expected)
    description = json.loads(read_mask_description(prediction_path(tmp_path, "case_0000")))
    assert description == {"labels": {"background": 0, "liver": 1, "kidney": 3},
                           "models": {"liver": "models:/anunet-liver-ct-L2/1", "kidney": "models:/anunet-kidney-ct-L2/1"}}
    assert [(r["organ"], r["label_value"]) for r in rows] == [("liver", 1), ("kidney", 3)]
    assert [r["files"] for r in rows] == [1, 0], "the case's files count on its first row only"
    for n, r in enumerate(rows):
        mask = same_geometry(organ_mask_path(tmp_path, "case_0000", r["organ"]), source)
        np.testing.assert_array_equal(mask, label_map == r["label_value"])
        assert read_mask_description(organ_mask_path(tmp_path, "case_0000", r["organ"])) == r["model_version"]
        assert r["organ_voxels"] == int(mask.sum()) and r["status"] == "ok"
        assert (r["overlap_voxels"], r["overlap_lost_voxels"]) == (int(overlap[n]), int(lost[n]))
        assert r["postprocess"] == ("on" if postprocess else "off") and r["removed_voxels"] == removed[r["organ"]]
    assert read_record(tmp_path, "case_0000")["rows"] == rows


def test_a_bad_scan_fails_in_read_and_passes_through_as_a_failed_row(
    archive: Path, tiny_network: dict, tmp_path: Path
) -> None:
    read = read_case(_row(archive, "garbage"), "liver", "CT", SIZE)
    assert read["error"] and "\n" not in read["error"] and read["num_slices"] == 0 and read["slices"] == b""
    assert "image.nii.gz" in read["error"], read["error"]
    segmented = _through_the_actor(_segmenter(tiny_network), read)
    assert (segmented["error"], segmented["probs"]) == (read["error"], b"")
    stale_paths = (prediction_path(tmp_path, "garbage"), preview_path(tmp_path, "garbage"),
                   organ_mask_path(tmp_path, "garbage", "kidney"), tmp_path / "dicom-seg" / "garbage.dcm")
    for stale in stale_paths:  # an earlier run's
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"an earlier run's output")
    rows = write_case(segmented, _context(tmp_path, organs=("liver", "kidney")))
    assert [(r["organ"], r["status"], r["error"], r["organ_ml"]) for r in rows] == [
        ("liver", "failed", read["error"], None), ("kidney", "failed", read["error"], None)]
    for stale in stale_paths:
        assert not stale.exists(), f"a failed rerun keeps no old output: {stale}"
    record = json.loads(record_path(tmp_path, "garbage").read_text())
    assert [r["status"] for r in record["rows"]] == ["failed", "failed"], "failed cases have records"


def test_a_failure_in_the_actor_is_that_case_s_one_line_reason(archive: Path, tiny_network: dict) -> None:
    row = read_case(_row(archive, "case_0000"), "liver", "CT", SIZE)
    row["num_slices"] += 1  # the bytes no longer hold that many slices
    segmented = _through_the_actor(_segmenter(tiny_network), row)
    assert segmented["probs"] == b"" and segmented["error"].startswith("cannot reshape array"), segmented["error"]


@pytest.mark.parametrize("case_id", ["case_0000", "missing"])
def test_a_cpu_actor_reads_segments_and_writes_as_the_three_stages_do(
    archive: Path, tiny_network: dict, tmp_path: Path, case_id: str
) -> None:
    """CaseSegmenter (CPU runs: all three stages in the actor) gives the same manifest rows and
    the same mask as read -> SliceSegmenter -> write, and says where each case's time went; a
    case that cannot be read fails the same way in both."""
    row = _row(archive, "case_0000")
    if case_id == "missing":
        row = row | {"case_id": "missing", "image": str(tmp_path / "gone.nii.gz")}
    staged = write_stage(_through_the_actor(_segmenter(tiny_network), read_case(row, "liver", "CT", SIZE)),
                         _context(tmp_path / "staged"))
    read = {"organ": "liver", "modality": "CT", "size": SIZE, "max_voxels": None, "dicom_headers": False}
    actor = CaseSegmenter(tiny_network["weights"], tiny_network["config"], size=SIZE, batch_size=4, threads=1,
                          read=read, ctx=_context(tmp_path / "actor"))
    together = actor(dict(row))
    assert together["case_id"] == staged["case_id"] == case_id

    def without_seconds(rows: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(rows)]

    assert without_seconds(together["rows"]) == without_seconds(staged["rows"])
    (manifest_row,) = json.loads(together["rows"])
    if case_id == "missing":
        assert manifest_row["status"] == "failed" and "gone.nii.gz" in manifest_row["error"]
        assert together["segment_seconds"] < 0.1 and not prediction_path(tmp_path / "actor", case_id).exists()
    else:
        assert manifest_row["status"] == "ok" and manifest_row["organ_voxels"] > 0
        masks = [nib.load(prediction_path(tmp_path / folder, case_id)).get_fdata() for folder in ("staged", "actor")]
        np.testing.assert_array_equal(masks[0], masks[1])
        assert together["segment_seconds"] > 0 and together["write_seconds"] > 0
        assert manifest_row["seconds"] == pytest.approx(
            together["read_seconds"] + together["segment_seconds"] + together["write_seconds"], rel=0.05)
    assert together["read_seconds"] > 0 and actor.ready_at <= together["actor_ready_at"] + 1e-6
