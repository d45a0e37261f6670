"""Ingest: patient split and slice selection (pure), and real Ray Data runs on small archives."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from anunet_core.archives import discover_cases, load_case
from anunet_core.preprocessing import normalize_intensity
from anunet_core.io import OutputLocked
from anunet_core.synthetic import make_archive
from anunet_platform.contracts import (
    DATASET_ERRORS_FILE,
    DATASET_SUMMARY_FILE,
    FailedFractionExceeded,
    decode_slices,
    read_summary,
)
from anunet_platform.ingest import (
    IngestConfig,
    IngestError,
    run_ingest,
    select_slices,
    split_patients,
)

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "data" / "real"
SMALL = (48, 48, 12)


# ---------------------------------------------------------------- policy, no Ray


@pytest.mark.parametrize("n", [1, 2, 3, 6, 12, 60])
@pytest.mark.parametrize("seed", [0, 7])
def test_split_patients_is_a_partition(n: int, seed: int) -> None:
    patients = [f"p{i:03d}" for i in range(n)]
    splits = split_patients(patients, seed)
    assert set(splits) == set(patients)
    assert set(splits.values()) <= {"train", "val", "test"}
    assert "train" in splits.values()
    if n >= 2:
        assert "test" in splits.values()


def test_split_patients_ratio_determinism_and_order_independence() -> None:
    patients = [f"p{i:03d}" for i in range(60)]
    splits = split_patients(patients, seed=3)
    counts = {s: sum(v == s for v in splits.values()) for s in ("train", "val", "test")}
    assert counts == {"test": 10, "val": 10, "train": 40}  # 5:1, then 20 % of training for val
    assert split_patients(list(reversed(patients)) + patients[:5], seed=3) == splits
    assert split_patients(patients, seed=4) != splits


def test_select_slices_keeps_every_organ_slice_and_a_share_of_empty_ones() -> None:
    masks = np.zeros((40, 8, 8), np.uint8)
    masks[10:20, 2:4, 2:4] = 1
    keep = select_slices(masks, 0.25, np.random.default_rng(0))
    assert set(range(10, 20)) <= set(keep.tolist())
    assert len(keep) == 10 + round(0.25 * 30)
    assert np.all(np.diff(keep) > 0)
    assert select_slices(masks, 0.0, np.random.default_rng(0)).tolist() == list(range(10, 20))
    assert len(select_slices(masks, 1.0, np.random.default_rng(0))) == 40


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"organ": "heart"}, "--organ"),
        ({"modality": "PET"}, "--modality"),
        ({"layout": "zip"}, "--layout"),
        ({"size": 100}, "--size"),
        ({"empty_slice_fraction": 1.5}, "--empty-slice-fraction"),
        ({"label_values": (0,)}, "--label-values"),
    ],
)
def test_bad_config_is_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    base = {"source": tmp_path, "out": tmp_path / "ds", "organ": "liver", "modality": "CT"}
    with pytest.raises(IngestError, match=message):
        IngestConfig(**(base | kwargs))


# ---------------------------------------------------------------- real runs on Ray


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ct_archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ct-archive")
    make_archive(root, cases=6, modality="CT", fmt="nifti", seed=11, shape=SMALL)
    return root


def read_split(dataset: Path, split: str):
    files = sorted((dataset / split).glob("*.parquet"))
    return pq.read_table(files) if files else None


def config(source: Path, out: Path, **kwargs) -> IngestConfig:
    return IngestConfig(source=source, out=out, organ=kwargs.pop("organ", "liver"), modality=kwargs.pop("modality", "CT"), size=kwargs.pop("size", 32), **kwargs)


def test_ingest_writes_patient_split_shards_and_summary(ray_local, ct_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    summary = run_ingest(config(ct_archive, out))
    assert (out / DATASET_SUMMARY_FILE).is_file() and json.loads((out / DATASET_ERRORS_FILE).read_text()) == []
    assert read_summary(out).checksum == summary.checksum and len(summary.checksum) == 64
    cases_by_split = {}
    for split in ("train", "val", "test"):
        table = read_split(out, split)
        assert table is not None, f"no {split} shard"
        assert set(table.column("split").to_pylist()) == {split}
        cases_by_split[split] = set(table.column("case_id").to_pylist())
        images, masks = decode_slices(table)
        assert images.shape == masks.shape == (table.num_rows, 32, 32)
        assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0
        assert set(np.unique(masks)) <= {0, 1} and masks.any()
        assert summary.splits[split]["slices"] == table.num_rows
        kept = table.group_by("case_id").aggregate([("slice_index", "count")]).column("slice_index_count").to_pylist()
        if split == "test":  # scored as whole volumes: every slice of every case
            assert kept == [SMALL[2]] * len(kept) and table.num_rows == SMALL[2] * len(kept)
        else:  # every organ slice, a quarter of the organ-free ones
            assert summary.splits[split]["organ_slices"] <= table.num_rows <= SMALL[2] * len(kept)
    # never one case (patient) on two sides; every case somewhere
    train, val, test = cases_by_split["train"], cases_by_split["val"], cases_by_split["test"]
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == 6 == sum(summary.splits[s]["cases"] for s in ("train", "val", "test"))
    assert not list(tmp_path.glob(".dataset.staging-*")), "staging folder left behind"


@pytest.mark.parametrize(
    "fmt,layout,modality,organ",
    [
        ("nifti", "pairs", "MR", "spleen"),
        ("nifti", "msd", "CT", "liver"),
        ("nifti", "lits", "CT", "liver"),
        ("dicom", "dicom", "CT", "kidney"),
        ("dicom", "chaos", "MR", "kidney"),
    ],
)
def test_ingest_handles_every_layout(ray_local, tmp_path: Path, fmt: str, layout: str, modality: str, organ: str) -> None:
    source = tmp_path / "archive"
    make_archive(source, cases=3, modality=modality, fmt=fmt, layout=layout, seed=4, shape=SMALL, organ=organ)
    summary = run_ingest(config(source, tmp_path / "ds", organ=organ, modality=modality))
    assert summary.layout == layout and summary.errors == 0
    assert sum(summary.splits[s]["cases"] for s in ("train", "val", "test")) == 3
    table = pq.read_table(sorted((tmp_path / "ds").rglob("*.parquet")))
    _, masks = decode_slices(table)
    assert masks.any(), f"no {organ} pixels ingested from the {layout} layout"
    assert set(table.column("organ").to_pylist()) == {organ}


def test_ingest_is_deterministic(ray_local, ct_archive: Path, tmp_path: Path) -> None:
    first = run_ingest(config(ct_archive, tmp_path / "a", seed=5))
    second = run_ingest(config(ct_archive, tmp_path / "b", seed=5))
    assert first.checksum == second.checksum
    for split in ("train", "val", "test"):
        a, b = read_split(tmp_path / "a", split), read_split(tmp_path / "b", split)
        assert a.equals(b)
    assert run_ingest(config(ct_archive, tmp_path / "c", seed=6)).checksum != first.checksum


def test_existing_dataset_is_refused_unless_overwrite(ray_local, ct_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    run_ingest(config(ct_archive, out))
    marker = out / "keep-me.txt"
    marker.write_text("old")
    with pytest.raises(IngestError, match="--overwrite"):
        run_ingest(config(ct_archive, out))
    assert marker.exists(), "a refused run must not touch the existing dataset"
    run_ingest(config(ct_archive, out, overwrite=True))
    assert not marker.exists() and (out / DATASET_SUMMARY_FILE).is_file()


def test_a_second_ingest_into_the_same_folder_is_refused(ct_archive: Path, tmp_path: Path) -> None:
    """Two ingests into one dataset folder: the second exits 2 naming the first, and writes nothing."""
    out = tmp_path / "dataset"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom anunet_core.io import output_lock\n"
         "with output_lock(sys.argv[1], 'ingest'):\n    print('held', flush=True)\n    time.sleep(600)",
         str(tmp_path / ".dataset.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked, match=rf"is being written by ingest \(pid {holder.pid} on "):
            run_ingest(config(ct_archive, out))
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".dataset.lock"]
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_killed_ingest_s_leftovers_are_swept_and_its_set_aside_dataset_restored(ray_local, ct_archive: Path,
                                                                                     tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    run_ingest(config(ct_archive, out))
    checksum = read_summary(out).checksum
    out.rename(tmp_path / ".dataset.old-0123456789ab")  # killed between the swap's two renames
    (tmp_path / ".dataset.staging-feedfacecafe" / "train").mkdir(parents=True)
    with pytest.raises(IngestError, match="--overwrite"):  # the dataset is back, so it is refused
        run_ingest(config(ct_archive, out))
    assert read_summary(out).checksum == checksum
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_corrupt_case_is_an_error_row_and_the_rest_goes_on(ray_local, tmp_path: Path) -> None:
    source = tmp_path / "archive"
    make_archive(source, cases=3, modality="CT", fmt="nifti", seed=2, shape=SMALL)
    victim = sorted(p for p in source.rglob("*.nii.gz") if "label" not in p.name)[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated gzip
    with pytest.raises(FailedFractionExceeded, match=r"1 of 3 cases failed \(33.3%\), above --max-failed-fraction 0.05"):
        run_ingest(config(source, tmp_path / "ds"))  # the scheduler sees a failed night ...
    summary = read_summary(tmp_path / "ds")  # ... after the dataset and its errors were written
    errors = json.loads((tmp_path / "ds" / DATASET_ERRORS_FILE).read_text())
    assert summary.errors == 1 and len(errors) == 1
    assert "\n" not in errors[0]["error"] and victim.name in errors[0]["error"]
    assert sum(summary.splits[s]["cases"] for s in ("train", "val", "test")) == 2


def test_pseudonymized_dataset_carries_no_name(ray_local, tmp_path: Path, monkeypatch) -> None:
    """Patient-named folders: Parquet rows, errors.json and the split keys hold only pseudonyms."""
    source = tmp_path / "pacs"
    make_archive(source, cases=3, modality="CT", fmt="nifti", seed=2, shape=SMALL)
    for i, name in enumerate(("DOE^JANE", "ROE^RICHARD", "SMITH^JOHN")):
        (source / f"case_{i:04d}").rename(source / name)
    (source / "SMITH^JOHN" / "image.nii.gz").write_bytes(b"broken")
    monkeypatch.setenv("ANUNET_PSEUDONYM_KEY", "a-test-key-of-32-characters-long")
    out, id_map = tmp_path / "ds", tmp_path / "ids.json"
    with pytest.raises(FailedFractionExceeded):
        run_ingest(config(source, out, pseudonymize=True, id_map=id_map))
    rows = [r for f in out.rglob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert rows and all(r["case_id"].startswith("anon-") and r["patient_id"].startswith("anon-") for r in rows)
    assert all(r["source"] == r["case_id"] for r in rows)
    for path in out.rglob("*"):
        assert not re.search(r"DOE|ROE|SMITH", path.name)
        if path.is_file() and path.suffix != ".parquet":  # pixels may hold any bytes; rows are checked above
            assert not re.search(rb"DOE|ROE|SMITH", path.read_bytes()), path
    (error,) = json.loads((out / DATASET_ERRORS_FILE).read_text())
    assert error["case_id"].startswith("anon-") and error["error"].startswith(error["case_id"]), error
    assert "SMITH^JOHN/image.nii.gz" in id_map.read_text()


def test_archive_without_readable_case_fails_clearly(ray_local, tmp_path: Path) -> None:
    source = tmp_path / "archive"
    make_archive(source, cases=2, modality="CT", fmt="nifti", seed=2, shape=SMALL)
    for image in source.rglob("*.nii.gz"):
        image.write_bytes(b"not a nifti file")
    with pytest.raises(IngestError, match="no readable case"):
        run_ingest(config(source, tmp_path / "ds"))
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    "folder,organ,modality,label_values",
    [
        ("totalseg-ct-dicom", "liver", "CT", None),
        ("totalseg-mr", "kidney", "MR", None),
        ("totalseg-mr", "liver", "MR", (5,)),
    ],
)
def test_real_scans_round_trip_volume_and_alignment(ray_local, tmp_path: Path, folder, organ, modality, label_values) -> None:
    source = REAL / folder
    if not source.is_dir():
        pytest.skip(f"real scans not found at {source} (../shared is not beside this clone)")
    out = tmp_path / "ds"
    summary = run_ingest(IngestConfig(source=source, out=out, organ=organ, modality=modality, label_values=label_values, empty_slice_fraction=1.0))
    assert summary.errors == 0
    table = read_split(out, "train")
    images, masks = decode_slices(table)

    (case,) = discover_cases(source)
    volume, truth = load_case(case, organ=organ, modality=modality, label_values=label_values)
    truth_ml = truth.sum() * np.prod(volume.spacing) / 1000.0
    row_mm, col_mm, slice_mm = table.column("spacing")[0].as_py()
    ingested_ml = masks.sum() * row_mm * col_mm * slice_mm / 1000.0
    assert truth_ml > 1.0
    assert ingested_ml == pytest.approx(truth_ml, rel=0.03)

    # aligned: the mean normalised intensity under the mask matches the source's
    normalised, _, _ = normalize_intensity(volume.array, modality)
    truth_mean = normalised[truth.astype(bool)].mean()
    assert images[masks.astype(bool)].mean() == pytest.approx(truth_mean, abs=0.03)
    # and a mask shifted off the organ would not match
    shifted = np.roll(masks, masks.shape[1] // 4, axis=1)
    assert abs(images[shifted.astype(bool)].mean() - truth_mean) > abs(images[masks.astype(bool)].mean() - truth_mean)


def test_ingest_job_cli_reports_one_line_errors(ct_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    (out / "file").write_text("x")
    job = [sys.executable, str(REPO / "jobs" / "ingest.py")]
    result = subprocess.run(
        [*job, "--source", str(ct_archive), "--out", str(out), "--organ", "liver", "--modality", "CT"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--overwrite" in result.stderr
    missing = subprocess.run([*job, "--source", str(ct_archive)], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "required" in missing.stderr
