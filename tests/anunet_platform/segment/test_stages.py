"""One case through the three stages, called directly (no Ray): read, the actor, write."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anunet_core.archives import discover_cases, load_case
from anunet_core.io import SliceGeometry, read_volume, voxel_volume_ml
from anunet_core.preprocessing import PREPROCESSING_VERSION, preprocess_volume, restore_mask
from anunet_core.synthetic import make_archive
from anunet_platform.contracts import decode_slices_bytes, prediction_path, preview_path, record_path
from anunet_platform.segment import image_signature, read_record
from anunet_platform.segment.stages import CaseContext, SliceSegmenter, read_case, write_case

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


def _context(out: Path, previews: bool = True) -> CaseContext:
    return CaseContext(out=out, depth=2, model_version="models:/anunet-liver-ct-L2/1", depth_reason="fixed",
                       size=SIZE, previews=previews)


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


def test_write_case_writes_the_mask_in_the_source_geometry(
    archive: Path, tiny_network: dict, tmp_path: Path, same_geometry
) -> None:
    row = _through_the_actor(_segmenter(tiny_network), read_case(_row(archive, "case_0000"), "liver", "CT", SIZE))
    record = write_case(row, _context(tmp_path))
    source = read_volume(archive / "case_0000" / "image.nii.gz", modality="CT")
    mask = same_geometry(prediction_path(tmp_path, "case_0000"), source)
    probs = decode_slices_bytes(row["probs"], row["num_slices"], SIZE).astype(np.float32)
    geometry = SliceGeometry.from_dict(json.loads(row["geometry"]))
    np.testing.assert_array_equal(mask, restore_mask(probs, geometry, threshold=0.5))
    assert record["status"] == "ok" and record["error"] is None and record["slices"] == SHAPE[2]
    assert record["organ_voxels"] == int(mask.sum())
    assert record["organ_ml"] == pytest.approx(mask.sum() * voxel_volume_ml(source.affine))
    assert (record["depth"], record["model_version"], record["depth_reason"]) == (2, "models:/anunet-liver-ct-L2/1", "fixed")
    assert record["preprocessing_version"] == PREPROCESSING_VERSION and record["signature"] == row["signature"]
    assert read_record(tmp_path, "case_0000") == record, "the record is what a rerun reads"
    with Image.open(preview_path(tmp_path, "case_0000")) as preview:
        assert preview.size == (3 * SIZE, SIZE)

    write_case(row, _context(tmp_path / "no-previews", previews=False))
    assert prediction_path(tmp_path / "no-previews", "case_0000").is_file()
    assert not preview_path(tmp_path / "no-previews", "case_0000").exists()


def test_a_bad_scan_fails_in_read_and_passes_through_as_a_failed_row(
    archive: Path, tiny_network: dict, tmp_path: Path
) -> None:
    read = read_case(_row(archive, "garbage"), "liver", "CT", SIZE)
    assert read["error"] and "\n" not in read["error"] and read["num_slices"] == 0 and read["slices"] == b""
    assert "image.nii.gz" in read["error"], read["error"]
    segmented = _through_the_actor(_segmenter(tiny_network), read)
    assert (segmented["error"], segmented["probs"]) == (read["error"], b"")
    for stale in (prediction_path(tmp_path, "garbage"), preview_path(tmp_path, "garbage")):  # an earlier run's
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"an earlier run's output")
    record = write_case(segmented, _context(tmp_path))
    assert (record["status"], record["error"], record["organ_ml"]) == ("failed", read["error"], None)
    assert not prediction_path(tmp_path, "garbage").exists(), "a failed rerun keeps no old mask"
    assert not preview_path(tmp_path, "garbage").exists()
    assert json.loads(record_path(tmp_path, "garbage").read_text())["status"] == "failed", "failed cases have records"


def test_a_failure_in_the_actor_is_that_case_s_one_line_reason(archive: Path, tiny_network: dict) -> None:
    row = read_case(_row(archive, "case_0000"), "liver", "CT", SIZE)
    row["num_slices"] += 1  # the bytes no longer hold that many slices
    segmented = _through_the_actor(_segmenter(tiny_network), row)
    assert segmented["probs"] == b"" and segmented["error"].startswith("cannot reshape array"), segmented["error"]
