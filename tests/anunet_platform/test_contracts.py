"""Tests of anunet_platform.contracts: what the stages hand each other."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anunet_platform.contracts import (
    DATASET_SUMMARY_FILE,
    MANIFEST_FILE,
    MANIFEST_SCHEMA,
    SLICE_DTYPE,
    SLICE_SCHEMA,
    SPLITS,
    DatasetError,
    DatasetSummary,
    FailedFractionExceeded,
    check_failed_fraction,
    decode_batch,
    decode_slices,
    decode_slices_bytes,
    decode_table,
    dicom_seg_path,
    encode_masks,
    mask_path_of,
    organ_mask_path,
    read_labels,
    encode_slices,
    prediction_path,
    preview_path,
    read_manifest,
    read_summary,
    record_path,
    split_files,
)

#: DESIGN.md's manifest contract: these columns, in this order, lead the schema.
DESIGN_MANIFEST = ["case_id", "source", "status", "error", "depth", "model_version", "organ_voxels", "organ_ml", "seconds"]


def _slices(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size), dtype=np.float32), (rng.random((n, size, size)) > 0.7).astype(np.uint8)


def test_slice_codec_round_trips_at_float16_precision() -> None:
    images, masks = _slices(3, 16)
    data = encode_slices(images)
    assert len(data) == 3 * 16 * 16 * 2 and SLICE_DTYPE == np.dtype("<f2")
    back = decode_slices_bytes(data, 3, 16)
    assert back.shape == (3, 16, 16) and back.dtype == np.float16
    np.testing.assert_array_equal(back, images.astype(np.float16))
    assert np.abs(back.astype(np.float32) - images).max() <= 2**-11  # float16 rounding in [0, 1]
    np.testing.assert_array_equal(np.frombuffer(encode_masks(masks), np.uint8).reshape(3, 16, 16), masks)


def test_slice_rows_decode_per_batch_and_per_table() -> None:
    images, masks = _slices(4, 8, seed=1)
    rows = {name: [] for name in SLICE_SCHEMA.names}
    for k in range(4):
        row = dict(case_id="c", patient_id="p", slice_index=k, split="train", organ="liver", modality="CT",
                   image=encode_slices(images[k]), mask=encode_masks(masks[k]), size=8, spacing=[1.0, 1.0, 2.5],
                   source="c.nii.gz", source_sha256="0" * 64, preprocessing_version="anunet-prep-1")
        for name in rows:
            rows[name].append(row[name])
    table = pa.table(rows, schema=SLICE_SCHEMA)
    decoded_images, decoded_masks = decode_slices(table)
    assert decoded_images.dtype == np.float32 and decoded_masks.dtype == np.uint8
    np.testing.assert_array_equal(decoded_images, images.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(decoded_masks, masks)
    batch = decode_batch({"image": np.array(rows["image"], dtype=object), "mask": np.array(rows["mask"], dtype=object),
                          "size": np.array(rows["size"])})
    assert set(batch) == {"image", "mask"} and batch["image"].shape == (4, 8, 8)
    np.testing.assert_array_equal(batch["mask"], masks)
    empty_images, empty_masks = decode_slices(table.slice(0, 0))
    assert empty_images.shape == (0, 0, 0) and empty_masks.shape == (0, 0, 0)


def _slice_table(images: np.ndarray, masks: np.ndarray) -> pa.Table:
    """Slice rows as ingest writes them (only the columns training reads)."""
    n, size = len(images), images.shape[-1]
    return pa.table({"image": [encode_slices(i) for i in images], "mask": [encode_masks(m) for m in masks],
                     "size": pa.array([size] * n, pa.int32())})


def test_decode_table_reads_arrow_buffers_like_decode_batch(tmp_path) -> None:
    images, masks = _slices(7, 8, seed=4)
    table = _slice_table(images, masks)
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=3)  # three row groups: three chunks on read
    cases = {
        "in memory": table,
        "read back (chunked)": pq.read_table(tmp_path / "c.parquet"),
        "a slice (offset into the buffers)": table.slice(2, 4),
        "chunks of slices": pa.concat_tables([table.slice(5, 2), table.slice(0, 3)]),
        "large_binary": table.cast(pa.schema([("image", pa.large_binary()), ("mask", pa.large_binary()), ("size", pa.int32())])),
    }
    expected_rows = {"a slice (offset into the buffers)": [2, 3, 4, 5], "chunks of slices": [5, 6, 0, 1, 2]}
    for name, t in cases.items():
        assert len(t.column("image").chunks) >= 1
        rows = expected_rows.get(name, list(range(7)))
        out = decode_table(t)
        assert out["image"].dtype == SLICE_DTYPE and out["mask"].dtype == np.uint8, name
        assert out["image"].shape == out["mask"].shape == (len(rows), 8, 8), name
        np.testing.assert_array_equal(out["image"], images[rows].astype(np.float16), err_msg=name)
        np.testing.assert_array_equal(out["mask"], masks[rows], err_msg=name)
        slow = decode_batch({c: np.array(t.column(c).to_pylist(), dtype=object) for c in ("image", "mask", "size")})
        np.testing.assert_array_equal(out["image"], slow["image"], err_msg=name)
    empty = decode_table(table.slice(0, 0))
    assert empty["image"].shape == (0, 0, 0) and empty["mask"].shape == (0, 0, 0)


def test_decode_table_falls_back_or_refuses_when_the_rows_are_not_uniform() -> None:
    images, masks = _slices(2, 8, seed=5)
    table = _slice_table(images, masks)
    bad = table.set_column(1, "mask", pa.array([encode_masks(masks[0]), encode_masks(masks[1])[:-1]], pa.binary()))
    with pytest.raises(ValueError):  # a truncated mask: no fixed width, and the row-by-row way cannot reshape it
        decode_table(bad)
    mixed = pa.concat_tables([table, _slice_table(*_slices(1, 4, seed=6))])
    with pytest.raises(ValueError, match="different sizes"):
        decode_table(mixed)


def test_dataset_folder_contract(tmp_path) -> None:
    with pytest.raises(DatasetError, match="not an ingested dataset"):
        read_summary(tmp_path)
    summary = DatasetSummary(organ="liver", modality="CT", size=64, layout="pairs", label_values=None,
                             preprocessing_version="anunet-prep-1", seed=0, source="archive",
                             splits={s: {"cases": 1, "slices": 2} for s in SPLITS}, checksum="ab" * 32)
    (tmp_path / DATASET_SUMMARY_FILE).write_text(json.dumps(summary.__dict__))
    assert read_summary(tmp_path) == summary
    assert summary.table().splitlines()[1].split()[:3] == ["train", "1", "2"]
    with pytest.raises(DatasetError, match="no val slices"):
        split_files(tmp_path, "val")
    (tmp_path / "val").mkdir()
    for name in ("b", "a"):
        pq.write_table(pa.table({"x": [1]}), tmp_path / "val" / f"{name}.parquet")
    assert split_files(tmp_path, "val") == [str(tmp_path / "val" / "a.parquet"), str(tmp_path / "val" / "b.parquet")]


def test_segmentation_output_layout(tmp_path) -> None:
    assert prediction_path(tmp_path, "case_7") == tmp_path / "masks" / "case_7.nii.gz"
    assert preview_path(tmp_path, "case_7") == tmp_path / "previews" / "case_7.png"
    assert record_path(tmp_path, "case_7") == tmp_path / "records" / "case_7.json"
    assert MANIFEST_SCHEMA.names[: len(DESIGN_MANIFEST)] == DESIGN_MANIFEST
    assert organ_mask_path(tmp_path, "case_7", "kidney") == tmp_path / "masks" / "kidney" / "case_7.nii.gz"
    assert dicom_seg_path(tmp_path, "case_7") == tmp_path / "dicom-seg" / "case_7.dcm"
    # DESIGN's added columns, among the manifest's
    assert {"organ", "postprocess", "touches_border"} <= set(MANIFEST_SCHEMA.names)


def test_an_organ_s_mask_is_found_in_either_layout(tmp_path) -> None:
    assert read_labels(tmp_path) is None
    assert mask_path_of(tmp_path, "c", "liver") == tmp_path / "masks" / "c.nii.gz", "one organ: the mask itself"
    (tmp_path / "labels.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "kidney": 3}}))
    assert read_labels(tmp_path) == {"liver": 1, "kidney": 3}
    assert mask_path_of(tmp_path, "c", "kidney") == tmp_path / "masks" / "kidney" / "c.nii.gz"
    with pytest.raises(ValueError, match=r"holds masks of liver, kidney \(labels.json\), not of the spleen"):
        mask_path_of(tmp_path, "c", "spleen")


def test_read_manifest(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path)
    pq.write_table(pa.table({"case": ["a"]}), tmp_path / MANIFEST_FILE)
    with pytest.raises(ValueError, match="no case_id column"):
        read_manifest(tmp_path)
    rows = {name: [None, None] for name in MANIFEST_SCHEMA.names} | {"case_id": ["a", "b"], "status": ["ok", "failed"]}
    pq.write_table(pa.table(rows, schema=MANIFEST_SCHEMA), tmp_path / MANIFEST_FILE)
    assert read_manifest(tmp_path, ["case_id", "status", "not_a_column"]) == [
        {"case_id": "a", "status": "ok"}, {"case_id": "b", "status": "failed"}]
    assert len(read_manifest(tmp_path)[0]) == len(MANIFEST_SCHEMA.names)


@pytest.mark.parametrize("failed,cases,limit,fraction", [(0, 0, 0.05, 0.0), (1, 20, 0.05, 0.05), (0, 3, 0.0, 0.0), (3, 3, 1.0, 1.0)])
def test_failed_fraction_within_the_limit(failed: int, cases: int, limit: float, fraction: float) -> None:
    assert check_failed_fraction(failed, cases, limit, "m.parquet") == fraction


def test_failed_fraction_above_the_limit_names_counts_and_reasons() -> None:
    with pytest.raises(FailedFractionExceeded, match=r"^2 of 20 cases failed \(10.0%\), above --max-failed-fraction 0.05; "
                       r"the reasons are in OUT/manifest.parquet$"):
        check_failed_fraction(2, 20, 0.05, "OUT/manifest.parquet")
    assert not issubclass(FailedFractionExceeded, ValueError), "exit 1, not the bad-input exit 2"
