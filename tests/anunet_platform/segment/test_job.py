"""The segment job: its manifest and summary, then end to end with a model trained here (Ray, MLflow)."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from anunet_core.archives import discover_cases
from anunet_core.io import OutputLocked, read_mask_description, read_volume, voxel_volume_ml
from anunet_core.synthetic import case_seed, make_archive, make_phantom, trivial_predictor_dice
from anunet_platform import registry
from anunet_platform.contracts import LOCK_FILE, MANIFEST_SCHEMA, FailedFractionExceeded, read_manifest
from anunet_platform.evaluate import evaluate, summarize
from anunet_platform.segment import SegmentConfig, SegmentError, SegmentSummary, model_uri, run_segmentation, write_manifest
from anunet_platform.selection import DepthChoice, DepthPolicy, candidates_from_registry, choose_depth

REPO = Path(__file__).resolve().parents[3]
REAL = REPO.parent / "shared" / "data" / "real"
CONTRACT_COLUMNS = ["case_id", "source", "status", "error", "depth", "model_version", "organ_voxels", "organ_ml", "seconds"]
SIZE = 64  # model input of the model trained in conftest


# ----------------------------------------------------------------------------------------------
# Manifest and summary (no Ray, no MLflow)
# ----------------------------------------------------------------------------------------------


def test_manifest_schema_starts_with_the_contract() -> None:
    assert MANIFEST_SCHEMA.names[: len(CONTRACT_COLUMNS)] == CONTRACT_COLUMNS


def test_write_manifest_sorts_by_case_and_records_the_depth_choice(tmp_path: Path) -> None:
    rows = [
        {"case_id": "b", "source": "b/image.nii.gz", "status": "failed", "error": "bad", "depth": 2,
         "model_version": "models:/x/1", "seconds": 0.5, "signature": "not a manifest column"},
        {"case_id": "a", "source": "a/image.nii.gz", "status": "ok", "error": None, "depth": 2,
         "model_version": "models:/x/1", "organ_voxels": 10, "organ_ml": 0.25, "seconds": 1.0, "slices": 4,
         "depth_reason": "why", "files": 2},
        {"case_id": None, "source": "notes.txt", "status": "ignored", "error": "not a scan (.txt file)", "files": 1},
    ]
    path = write_manifest(rows, tmp_path, DepthChoice(2, "L2: why"))
    table = pq.read_table(path)
    assert path == tmp_path / "manifest.parquet"
    assert table.schema.equals(MANIFEST_SCHEMA, check_metadata=False)
    assert table.schema.metadata[b"depth"] == b"2" and table.schema.metadata[b"depth_reason"] == b"L2: why"
    assert read_manifest(tmp_path) == [
        {name: rows[i].get(name) for name in MANIFEST_SCHEMA.names} for i in (1, 0, 2)
    ], "cases by id, then the ignored entries"


def test_summary_counts_the_manifest_rows() -> None:
    summary = SegmentSummary(archive="a", out="o", model="anunet-liver-ct", model_version="models:/m/1", depth=2,
                             depth_reason="r", cases=4)
    summary.count([{"case_id": "a", "status": "ok", "slices": 16, "files": 1},
                   {"case_id": "b", "status": "ok", "slices": 8, "files": 40},
                   {"case_id": "c", "status": "failed", "slices": None, "files": 1},
                   {"case_id": "d", "status": "skipped", "slices": 32, "files": 2},
                   {"case_id": None, "status": "ignored", "slices": None, "files": 3}])
    assert (summary.ok, summary.failed, summary.skipped, summary.slices) == (2, 1, 1, 24)
    assert (summary.ignored, summary.files) == (3, 47)
    summary.seconds, summary.slices_per_second = 3.0, 8.0
    assert summary.line() == (
        "segment: 2 ok, 1 failed, 1 skipped of 4 cases (3 of 47 files ignored); 24 slices in 3.0 s (8.0 slices/s) "
        "with L2 models:/m/1"
    )


def test_a_case_of_several_organs_counts_once() -> None:
    models = [{"organ": "liver", "depth": 2, "model_version": "models:/anunet-liver-ct-L2/1"},
              {"organ": "spleen", "depth": 1, "model_version": "models:/anunet-spleen-ct-L1/4"}]
    summary = SegmentSummary(archive="a", out="o", model="anunet-liver-ct,anunet-spleen-ct", model_version="",
                             depth=None, depth_reason=None, cases=2, models=models)
    summary.count([{"case_id": "a", "organ": "liver", "status": "ok", "slices": 16, "files": 17},
                   {"case_id": "a", "organ": "spleen", "status": "ok", "slices": 16, "files": 0},
                   {"case_id": "b", "organ": "liver", "status": "failed", "slices": None, "files": 1},
                   {"case_id": "b", "organ": "spleen", "status": "failed", "slices": None, "files": 0}])
    assert (summary.ok, summary.failed, summary.slices, summary.files) == (1, 1, 16, 18)
    assert summary.line().endswith(
        "with liver L2 models:/anunet-liver-ct-L2/1, spleen L1 models:/anunet-spleen-ct-L1/4")


def test_statistics_document_holds_the_segmented_cases_per_organ() -> None:
    from anunet_platform.segment import job

    rows = [{"case_id": "a", "organ": "liver", "status": "ok", "organ_ml": 1500.0, "touches_border": True},
            {"case_id": "a", "organ": "spleen", "status": "ok", "organ_ml": 200.0, "touches_border": False},
            {"case_id": "b", "organ": "liver", "status": "skipped", "organ_ml": 1400.0},
            {"case_id": "c", "organ": "liver", "status": "failed", "organ_ml": None},
            {"case_id": None, "organ": None, "status": "ignored"}]
    document = job.statistics_document(rows)
    assert list(document) == ["a", "b"] and list(document["a"]) == ["liver", "spleen"]
    assert document["a"]["liver"]["organ_ml"] == 1500.0 and document["a"]["liver"]["touches_border"] is True
    assert set(document["b"]["liver"]) == set(job.STATISTICS_KEYS)


# ----------------------------------------------------------------------------------------------
# End to end: the model trained in conftest, a real local Ray cluster, a real SQLite MLflow
# ----------------------------------------------------------------------------------------------


def segment(trained, archive: Path, out: Path, **kwargs):
    return run_segmentation(SegmentConfig(archive=archive, out=out, model="anunet-liver-ct", tracking_uri=trained["uri"],
                                          **kwargs))


def manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def _trivial_dice(trained, seed: int, cases: int, shape: tuple[int, int, int]) -> dict[str, float]:
    """What predictors that learn nothing score on the archive ``seed`` (trained on the training phantoms)."""
    train = [make_phantom(case_seed(trained["train_seed"], i), "CT", shape) for i in range(trained["train_cases"])]
    test = [make_phantom(case_seed(seed, i), "CT", shape) for i in range(cases)]
    return trivial_predictor_dice(train, test, "liver")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_segments_every_case_in_its_source_geometry(trained, tmp_path: Path, fmt: str, same_geometry) -> None:
    archive = tmp_path / "incoming"
    make_archive(archive, cases=3, modality="CT", fmt=fmt, seed=21, shape=(64, 64, 16))
    summary = segment(trained, archive, tmp_path / "out")
    out = tmp_path / "out"

    depths = registry.production_depths("liver", "CT", uri=trained["uri"])
    expected = choose_depth(candidates_from_registry(depths), DepthPolicy())
    assert (summary.ok, summary.failed, summary.skipped, summary.depth) == (3, 0, 0, expected.depth)
    assert summary.slices == 3 * 16 and summary.slices_per_second > 0
    rows = manifest(out)
    table = pq.read_table(out / "manifest.parquet")
    assert table.schema.names[: len(CONTRACT_COLUMNS)] == CONTRACT_COLUMNS
    assert table.schema.metadata[b"depth_reason"].decode() == expected.reason
    version = depths[expected.depth].version
    for row, case in zip(rows, discover_cases(archive), strict=True):
        source = read_volume(case.image, modality="CT")
        data = same_geometry(out / "masks" / f"{case.case_id}.nii.gz", source)
        assert row["case_id"] == case.case_id and row["status"] == "ok" and row["error"] is None
        assert row["depth"] == expected.depth and row["depth_reason"] == expected.reason
        assert row["model_version"] == f"models:/anunet-liver-ct-L{expected.depth}/{version}"
        assert row["organ_voxels"] == int(data.sum()) > 0
        assert row["organ_ml"] == pytest.approx(data.sum() * voxel_volume_ml(source.affine))
        assert row["source"] == os.path.relpath(case.image, archive) and row["seconds"] > 0
        with Image.open(out / "previews" / f"{case.case_id}.png") as preview:
            assert preview.size[0] >= 3 * 256 and preview.size[1] >= 256, "three panels of at least 256 px"
    scores = summarize(evaluate(out, archive, organ="liver", modality="CT"))
    trivial = _trivial_dice(trained, seed=21, cases=3, shape=(64, 64, 16))
    assert scores["ok"] == 3 and scores["dice"] > 0.5, scores
    assert scores["dice"] > trivial["all_background"] and scores["dice"] > trivial["fixed_blob"], (scores, trivial)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["ok"] == 3 and saved["depth"] == expected.depth and saved["model_version"] == row["model_version"]
    # where the time went: each stage's seconds summed over the cases, within the run's own time
    stages, wall = saved["stage_seconds"], saved["slices"] / saved["slices_per_second"]
    assert set(stages) == {"read", "segment", "write"} and all(v > 0 for v in stages.values()), stages
    assert sum(stages.values()) <= saved["actors"] * wall and 0 < saved["actors_ready_seconds"] < wall


@pytest.mark.slow
def test_rerun_skips_what_is_done_and_redoes_what_changed(trained, tmp_path: Path) -> None:
    archive, out = tmp_path / "incoming", tmp_path / "out"
    make_archive(archive, cases=3, modality="CT", fmt="nifti", seed=22, shape=(64, 64, 16))
    first = segment(trained, archive, out, depth=1)
    assert first.ok == 3
    masks = {p.name: p.stat().st_mtime_ns for p in (out / "masks").iterdir()}
    before = {r["case_id"]: r for r in manifest(out)}

    again = segment(trained, archive, out, depth=1)
    assert (again.ok, again.skipped, again.actors) == (0, 3, 0), "nothing to do: no actor pool started"
    assert {p.name: p.stat().st_mtime_ns for p in (out / "masks").iterdir()} == masks
    for row in manifest(out):
        assert row["status"] == "skipped" and row["organ_ml"] == before[row["case_id"]]["organ_ml"]

    replaced = archive / "case_0001" / "image.nii.gz"
    os.utime(replaced, ns=(replaced.stat().st_atime_ns, replaced.stat().st_mtime_ns + 10**9))
    changed = segment(trained, archive, out, depth=1)
    assert {r["case_id"]: r["status"] for r in manifest(out)} == {
        "case_0000": "skipped", "case_0001": "ok", "case_0002": "skipped"}
    assert changed.ok == 1

    other_model = segment(trained, archive, out, depth=2)
    assert other_model.ok == 3 and {r["model_version"] for r in manifest(out)} == {
        model_uri("anunet-liver-ct-L2", registry.production_depths("liver", "CT", uri=trained["uri"])[2].version)}
    assert segment(trained, archive, out, depth=2, recompute=True).ok == 3


def _write_nifti(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 3.0, 1.0])), str(path))


@pytest.mark.slow
def test_bad_scans_are_failed_rows_and_the_rest_goes_on(trained, tmp_path: Path) -> None:
    archive, out = tmp_path / "incoming", tmp_path / "out"
    make_archive(archive, cases=1, modality="CT", fmt="nifti", seed=23, shape=(64, 64, 16), layout="pairs")
    good = (archive / "case_0000" / "image.nii.gz").read_bytes()
    (archive / "truncated").mkdir()
    (archive / "truncated" / "image.nii.gz").write_bytes(good[: len(good) // 3])
    (archive / "garbage").mkdir()
    (archive / "garbage" / "image.nii.gz").write_bytes(gzip.compress(b"not a nifti at all" * 100))
    _write_nifti(archive / "four-d" / "image.nii.gz", np.zeros((16, 16, 4, 2), np.int16))
    nan = np.full((32, 32, 8), np.nan, np.float32)
    _write_nifti(archive / "nan" / "image.nii.gz", nan)

    strict = tmp_path / "out-default-fraction"
    with pytest.raises(FailedFractionExceeded, match=r"4 of 5 cases failed \(80.0%\), above --max-failed-fraction 0.05"):
        segment(trained, archive, strict, depth=1)  # the default: a night with 80 % failures is a failed night
    assert json.loads((strict / "summary.json").read_text())["failed_fraction"] == 0.8, "written before the verdict"
    assert len(manifest(strict)) == 5
    summary = segment(trained, archive, out, depth=1, max_failed_fraction=1.0)
    rows = {r["case_id"]: r for r in manifest(out)}
    assert rows["case_0000"]["status"] == "ok" and (summary.ok, summary.failed) == (1, 4)
    for case_id in ("truncated", "garbage", "four-d", "nan"):
        row = rows[case_id]
        assert row["status"] == "failed" and row["error"] and "\n" not in row["error"], row
        assert row["organ_ml"] is None and not (out / "masks" / f"{case_id}.nii.gz").exists()
    assert "image.nii.gz" in rows["truncated"]["error"]
    assert "no finite voxel" in rows["nan"]["error"], rows["nan"]["error"]

    rerun = segment(trained, archive, out, depth=1, max_failed_fraction=0.8)
    assert (rerun.skipped, rerun.failed) == (1, 4), "failed cases are tried again, done ones are not"

    only_bad = tmp_path / "only-bad"
    (only_bad / "garbage").mkdir(parents=True)
    (only_bad / "garbage" / "image.nii.gz").write_bytes(b"\x00" * 400)
    with pytest.raises(SegmentError, match="no case of .* could be segmented"):
        segment(trained, only_bad, tmp_path / "out-bad", depth=1)
    assert manifest(tmp_path / "out-bad")[0]["status"] == "failed", "the manifest is written even then"


def _job(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "jobs" / "segment.py"), *args], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True, **kwargs,
    )


@pytest.mark.slow
def test_a_killed_run_rerun_finishes_only_the_rest(trained, tmp_path: Path) -> None:
    import ray

    archive, out = tmp_path / "incoming", tmp_path / "out"
    make_archive(archive, cases=8, modality="CT", fmt="nifti", seed=24, shape=(96, 96, 48))
    env = dict(os.environ, MLFLOW_TRACKING_URI=trained["uri"], RAY_ADDRESS=ray.get_runtime_context().gcs_address)
    job = _job("--archive", str(archive), "--out", str(out), "--model", "anunet-liver-ct", "--depth", "4",
               "--batch-size", "4", "--num-actors", "1", env=env)
    records = out / "records"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None:
        if records.is_dir() and any(records.glob("*.json")):
            break
        time.sleep(0.05)
    assert job.poll() is None, f"the job ended before it could be killed: {job.communicate()}"
    os.killpg(job.pid, signal.SIGKILL)  # the driver and anything it spawned; the cluster stays
    job.wait(timeout=60)
    done = {p.stem for p in records.glob("*.json")}
    assert 1 <= len(done) < 8 and not (out / "manifest.parquet").exists()
    mtimes = {c: (out / "masks" / f"{c}.nii.gz").stat().st_mtime_ns for c in done}

    rerun = _job("--archive", str(archive), "--out", str(out), "--model", "anunet-liver-ct", "--depth", "4", env=env)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-3000:]
    rows = {r["case_id"]: r for r in manifest(out)}
    assert {c for c, r in rows.items() if r["status"] == "skipped"} == done
    assert {c for c, r in rows.items() if r["status"] == "ok"} == {f"case_{i:04d}" for i in range(8)} - done
    assert {c: (out / "masks" / f"{c}.nii.gz").stat().st_mtime_ns for c in done} == mtimes, "done masks untouched"
    assert f"8 cases: {8 - len(done)} to segment, {len(done)} already done" in stdout
    assert "8 cases (8 pairs) from 16 files in " in stdout
    assert "skipped of 8 cases" in stdout


def _real(name: str) -> Path:
    path = REAL / name
    if not path.is_dir():
        pytest.skip(f"real test data not found at {path} (a clone without ../shared/data/real)")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("folder,model,modality", [("totalseg-ct-dicom", "anunet-liver-ct", "CT"),
                                                   ("totalseg-mr", "anunet-liver-mr", "MR")])
def test_real_scans_round_trip_their_geometry(trained, tmp_path: Path, folder: str, model: str, modality: str,
                                              caplog: pytest.LogCaptureFixture, same_geometry) -> None:
    archive = _real(folder)
    out = tmp_path / "out"
    config = SegmentConfig(archive=archive, out=out, model=model, depth=1, tracking_uri=trained["uri"],
                           output_format="nifti,dicom-seg")
    if modality == "MR":  # registered, never promoted: refused unless asked for
        with pytest.raises(registry.RegistryError, match=r"no version with alias 'production' for anunet-liver-mr-L1 .*--allow-unpromoted"):
            run_segmentation(config)
        config = replace(config, allow_unpromoted=True)
    summary = run_segmentation(config)
    assert summary.ok == 1
    case = discover_cases(archive)[0]
    source = read_volume(case.image, modality=modality)
    same_geometry(out / "masks" / f"{case.case_id}.nii.gz", source)
    (row,) = manifest(out)
    if modality == "CT":  # its slices' Study, Series and SOP Instance UIDs are blank: no SEG can reference them
        assert row["dicom_seg"] is None and "has no StudyInstanceUID: the source series cannot be referenced" in (
            row["dicom_seg_error"]), row["dicom_seg_error"]
    else:  # a NIfTI scan: no SEG, and no error
        assert (row["dicom_seg"], row["dicom_seg_error"]) == (None, None)
    if modality == "MR":
        assert "has no alias 'production'; using its newest version" in caplog.text


def test_job_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for args, message in [
        (["--archive", str(tmp_path / "empty"), "--model", "anunet-liver-ct"], "no cases found"),
        (["--archive", str(tmp_path / "missing"), "--model", "anunet-liver-ct"], "is not a folder"),
    ]:
        job = _job(*args, "--out", str(tmp_path / "out"), env=env)
        _, stderr = job.communicate(timeout=120)
        assert job.returncode == 2 and stderr.strip().count("\n") == 0, stderr
        assert stderr.startswith("jobs/segment.py: error:") and message in stderr


def test_a_second_run_on_the_same_out_is_refused_and_a_killed_one_s_lease_taken_over(tmp_path: Path) -> None:
    """Two nightly runs on one --out: the second exits 2 naming the first before any work; once
    the first is SIGKILLed its lease is taken over (the run then goes on to the registry)."""
    make_archive(tmp_path / "a", cases=1, modality="CT", fmt="nifti", seed=0, shape=(16, 16, 4))
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom anunet_core.io import output_lock\n"
         "with output_lock(sys.argv[1], 'segment'):\n    print('held', flush=True)\n    time.sleep(600)",
         str(out / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    config = SegmentConfig(archive=tmp_path / "a", out=out, model="anunet-liver-ct",
                           tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked, match=rf"{re.escape(str(out))} is being written by segment \(pid {holder.pid} on "):
            run_segmentation(config)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE], "the refused run wrote nothing"
        holder.kill()
        holder.wait(timeout=30)
        with pytest.raises(registry.RegistryError, match="no registered versions"):  # got past the lease
            run_segmentation(config)
        assert not (out / LOCK_FILE).exists(), "released on the way out"
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    make_archive(tmp_path / "a", cases=1, modality="CT", fmt="nifti", seed=0, shape=(16, 16, 4))
    config = SegmentConfig(archive=tmp_path / "a", out=tmp_path / "out", model="anunet-spleen-ct",
                           tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(registry.RegistryError, match="no registered versions of anunet-spleen-ct"):
        run_segmentation(config)
    with pytest.raises(registry.RegistryError, match="family name like"):
        run_segmentation(SegmentConfig(archive=tmp_path / "a", out=tmp_path / "out", model="liver"))


# ----------------------------------------------------------------------------------------------
# A hostile archive: every kind of bad input at once, a killed actor and a poison scan
# ----------------------------------------------------------------------------------------------


class _WorkerKiller:
    """A thread that SIGKILLs Ray worker processes, as the kernel's OOM killer or a crashing
    decoder would: every worker that has ``poison`` open (each attempt at that scan dies), and
    once the first case is written, one segment actor. It also records the largest resident
    memory (VmHWM) of any Ray worker, to show that the bombs never got allocated."""

    def __init__(self, poison: Path, records: Path) -> None:
        import threading

        self.poison, self.records = str(poison), records
        self.poison_killed: set[int] = set()  # pids: a SIGKILLed process lingers a moment, still "open"
        self.actor_kills, self.peak_rss_kib = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _WorkerKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _workers() -> list[tuple[int, str]]:
        out = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if cmdline.startswith("ray::"):
                    out.append((int(pid), cmdline))
        return out

    def _has_open(self, pid: int) -> bool:
        try:
            return any(os.readlink(f"/proc/{pid}/fd/{fd}") == self.poison for fd in os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return False

    def _kill(self, pid: int) -> bool:
        try:
            os.kill(pid, signal.SIGKILL)
            return True
        except ProcessLookupError:
            return False

    @property
    def poison_kills(self) -> int:
        return len(self.poison_killed)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, cmdline in self._workers():
                if pid in self.poison_killed:
                    continue
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    self.peak_rss_kib = max(self.peak_rss_kib, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
                except (OSError, AttributeError):
                    pass
                if self._has_open(pid) and self._kill(pid):
                    self.poison_killed.add(pid)
                elif (not self.actor_kills and "Segmenter" in cmdline and self.records.is_dir()
                      and any(self.records.glob("*.json")) and self._kill(pid)):
                    self.actor_kills += 1
            time.sleep(0.002)


def _hostile_archive(root: Path, outside: Path) -> dict[str, str]:
    """Good and bad scans of every kind; returns {source: the expected status or reason}."""
    from anunet_core.synthetic.files import write_gzip_bomb_nifti, write_oversized_header_nifti

    make_archive(root / "nifti", cases=2, modality="CT", fmt="nifti", seed=31, shape=(64, 64, 16), layout="pairs")
    make_archive(root / "dicom", cases=4, modality="CT", fmt="dicom", seed=32, shape=(64, 64, 12))
    series = sorted(p for p in (root / "dicom").iterdir() if p.is_dir())
    zero_byte, gap, end_gap = series[1:]
    slices = sorted(p for p in zero_byte.rglob("*") if p.is_file() and "label" not in p.name)
    slices[3].write_bytes(b"")  # a slice copied as zero bytes
    gap_slices = sorted((p for p in gap.rglob("*") if p.is_file() and "label" not in p.name),
                        key=lambda p: int(pydicom_instance(p)))
    gap_slices[5].unlink()  # a slice missing in the middle
    end_slices = sorted((p for p in end_gap.rglob("*") if p.is_file() and "label" not in p.name),
                        key=lambda p: int(pydicom_instance(p)))
    end_slices[0].unlink()  # the first slice missing
    good = (root / "nifti" / "case_0000" / "image.nii.gz").read_bytes()
    bad = root / "bad"
    bad.mkdir()
    (bad / os.fsdecode(b"M\xfcller_scan.nii.gz")).write_bytes(good)  # a good scan with a Latin-1 name
    (bad / "truncated.nii.gz").write_bytes(good[: len(good) // 3])
    (bad / "garbage.nii.gz").write_bytes(gzip.compress(b"not a nifti at all" * 100))
    _write_nifti(bad / "four_d.nii.gz", np.zeros((16, 16, 4, 2), np.int16))
    _write_nifti(bad / "all_nan.nii.gz", np.full((32, 32, 8), np.nan, np.float32))
    write_oversized_header_nifti(bad / "oversized.nii.gz", (4096, 4096, 4096))
    write_gzip_bomb_nifti(bad / "bomb.nii.gz", (1024, 1024, 1024))
    rng = np.random.default_rng(0)  # the poison: big and incompressible, so each read takes a while
    _write_nifti(bad / "poison.nii.gz", rng.integers(-1000, 1000, (256, 256, 400), dtype=np.int16))
    os.mkfifo(bad / "pipe")
    (outside / "secret.nii.gz").write_bytes(good)
    os.symlink(outside / "secret.nii.gz", bad / "link_out.nii.gz")
    (root / "README.txt").write_text("exported by PACS")
    return {
        "nifti/case_0000/image.nii.gz": "ok", "nifti/case_0001/image.nii.gz": "ok",
        f"dicom/{series[0].name}/dicom": "ok", "bad/M\\xfcller_scan.nii.gz": "ok",
        f"dicom/{zero_byte.name}/dicom": "unreadable slice", f"dicom/{gap.name}/dicom": "missing",
        f"dicom/{end_gap.name}/dicom": "missing",
        "bad/truncated.nii.gz": "truncated.nii.gz", "bad/garbage.nii.gz": "garbage.nii.gz",
        "bad/four_d.nii.gz": "4", "bad/all_nan.nii.gz": "no finite voxel",
        "bad/oversized.nii.gz": "too large (68719476736 voxels", "bad/bomb.nii.gz": "too large (1073741824 voxels",
        "bad/poison.nii.gz": "worker process died 3 times",
        "bad/pipe": "not a regular file (FIFO)", "bad/link_out.nii.gz": "symbolic link leaving the archive",
        "README.txt": "not a scan (.txt file)",
    }


def pydicom_instance(path: Path) -> int:
    import pydicom

    return int(pydicom.dcmread(path, stop_before_pixels=True).InstanceNumber)


@pytest.mark.slow
def test_a_hostile_archive_every_file_accounted_for_and_the_night_goes_on(trained, tmp_path: Path) -> None:
    archive, out, outside = tmp_path / "hostile", tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    expected = _hostile_archive(archive, outside)
    files_present = sum(len(files) for _, _, files in os.walk(archive))
    with _WorkerKiller(archive / "bad" / "poison.nii.gz", out / "records") as killer:
        summary = segment(trained, archive, out, depth=1, max_failed_fraction=1.0)
        rows = manifest(out)
        assert killer.actor_kills == 1, "one segment actor was SIGKILLed mid-run"
        assert killer.poison_kills == 3, "the poison scan was tried three times, no more"
        assert killer.peak_rss_kib < 1_500_000, f"a worker reached {killer.peak_rss_kib} KiB: a bomb was allocated"

        by_source = {r["source"]: r for r in rows}
        for source, want in expected.items():
            row = by_source.pop(source, None)
            assert row is not None, f"{source} is missing from the manifest"
            if want == "ok":
                assert row["status"] == "ok", (source, row["error"])
            else:
                assert row["status"] in ("failed", "ignored") and want in row["error"], (source, row["status"], row["error"])
                assert "\n" not in row["error"] and (row["case_id"] is None or not (out / "masks" / f"{row['case_id']}.nii.gz").exists())
        assert not by_source, f"unexpected rows: {by_source}"
        assert sum(r["files"] for r in rows) == files_present, "manifest rows + ignored entries = the files present"
        assert (summary.ok, summary.failed) == (4, 10) and summary.files == files_present

        rerun = segment(trained, archive, out, depth=1, max_failed_fraction=1.0)
        again = {r["source"]: r["status"] for r in manifest(out)}
        assert (rerun.skipped, rerun.ok, rerun.failed) == (4, 0, 10), "the rerun redoes only what failed"
        assert {s for s, st in again.items() if st == "skipped"} == {s for s, w in expected.items() if w == "ok"}
        assert killer.poison_kills == 6


def _plain_bytes(path: Path) -> bytes:
    """A file's content as a reader would see it: gzip decompressed and the HTML report's
    base64 images decoded (random base64 text holds any three letters about once in 260 kB),
    with NUL padding removed."""
    import base64

    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if path.suffix == ".html":
        data = re.sub(rb"data:image/png;base64,([A-Za-z0-9+/=]+)", lambda m: base64.b64decode(m.group(1)), data)
    return data.replace(b"\0", b"")


@pytest.mark.slow
def test_pseudonymized_outputs_and_logs_carry_no_name(trained, tmp_path: Path, monkeypatch, caplog) -> None:
    """PACS folders named after patients: with --pseudonymize no output file, manifest row,
    record or log line carries the name; the map goes only to --id-map; reruns resume."""
    archive, out, id_map = tmp_path / "pacs", tmp_path / "out", tmp_path / "private" / "ids.json"
    make_archive(archive, cases=2, modality="CT", fmt="nifti", seed=33, shape=(64, 64, 16), layout="pairs")
    (archive / "case_0000").rename(archive / "DOE^JANE")
    (archive / "case_0001").rename(archive / "SMITH^JOHN")
    (archive / "SMITH^JOHN" / "image.nii.gz").write_bytes(b"broken")  # its error names the file
    (archive / "DOE^JANE" / "notes_DOE.txt").write_text("referral")
    monkeypatch.delenv("ANUNET_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ValueError, match="ANUNET_PSEUDONYM_KEY"):
        segment(trained, archive, out, depth=1, pseudonymize=True)
    monkeypatch.setenv("ANUNET_PSEUDONYM_KEY", "a-test-key-of-32-characters-long")
    caplog.set_level("INFO")
    summary = segment(trained, archive, out, depth=1, pseudonymize=True, id_map=id_map, max_failed_fraction=1.0)
    assert (summary.ok, summary.failed, summary.ignored) == (1, 1, 1)
    rows = manifest(out)
    assert all(r["source"].startswith("anon-") for r in rows)
    assert all(r["case_id"] is None or re.fullmatch(r"anon-[0-9a-f]{16}", r["case_id"]) for r in rows)
    for path in out.rglob("*"):
        if path.is_file():
            assert not re.search(rb"DOE|SMITH", _plain_bytes(path)), path
            assert "DOE" not in path.name and "SMITH" not in path.name
    assert "DOE" not in caplog.text and "SMITH" not in caplog.text
    mapping = json.loads(id_map.read_text())
    assert {v for k, v in mapping.items() if not k.startswith("patient:")} == {
        "DOE^JANE/image.nii.gz", "SMITH^JOHN/image.nii.gz", "DOE^JANE/notes_DOE.txt"}
    assert id_map.stat().st_mode & 0o777 == 0o600
    again = segment(trained, archive, out, depth=1, pseudonymize=True, max_failed_fraction=1.0)
    assert again.skipped == 1, "the same key gives the same ids: the rerun resumes"


# ----------------------------------------------------------------------------------------------
# Several organs in one pass: a label map, per-organ depths, DICOM SEG, statistics, resume
# ----------------------------------------------------------------------------------------------

ORGAN_MODELS = ("anunet-kidney-ct", "anunet-liver-ct", "anunet-spleen-ct")  # any order: the map's values are fixed


def _strip_sop_instance_uids(series: Path) -> None:
    """Make a DICOM series impossible to reference: no slice keeps its SOP Instance UID."""
    import pydicom

    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        del ds.SOPInstanceUID
        del ds.file_meta.MediaStorageSOPInstanceUID
        ds.save_as(path, enforce_file_format=False)


@pytest.mark.slow
def test_several_organs_in_one_pass(trained, tmp_path: Path, same_geometry) -> None:
    import read_counter

    from anunet_core.io.dicom_seg import read_dicom_seg

    archive, out = tmp_path / "incoming", tmp_path / "out"
    make_archive(archive, cases=3, modality="CT", fmt="dicom", seed=25, shape=(64, 64, 16))
    make_archive(tmp_path / "nifti", cases=1, modality="CT", fmt="nifti", seed=26, shape=(64, 64, 16), layout="pairs")
    (tmp_path / "nifti" / "case_0000" / "image.nii.gz").rename(archive / "extra.nii.gz")  # a case of its own
    cases = discover_cases(archive, require_labels=False)
    assert sorted(c.case_id for c in cases) == ["case_0000", "case_0001", "case_0002", "extra"]
    unreferenced = next(c for c in cases if c.case_id == "case_0002")
    _strip_sop_instance_uids(unreferenced.image)
    summary = run_segmentation(SegmentConfig(archive=archive, out=out, model=ORGAN_MODELS, tracking_uri=trained["uri"],
                                             output_format="nifti,dicom-seg"))

    reads = read_counter.reads(trained["reads"], archive)
    assert reads == {str(c.image): 1 for c in cases}, "each scan read once for the three organs"
    choices = {organ: choose_depth(candidates_from_registry(registry.production_depths(organ, "CT", uri=trained["uri"])),
                                   DepthPolicy()) for organ in ("liver", "spleen", "kidney")}
    assert [m["organ"] for m in summary.models] == ["liver", "spleen", "kidney"]
    assert {m["organ"]: m["depth"] for m in summary.models} == {o: c.depth for o, c in choices.items()}
    assert (summary.ok, summary.failed, summary.cases, summary.depth) == (4, 0, 4, None)
    labels = json.loads((out / "labels.json").read_text())
    assert labels["labels"] == {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}

    rows = manifest(out)
    assert [(r["case_id"], r["organ"]) for r in rows] == [(c.case_id, o) for c in sorted(cases, key=lambda c: c.case_id)
                                                          for o in ("liver", "spleen", "kidney")]
    statistics = json.loads((out / "statistics.json").read_text())
    for case in cases:
        source = read_volume(case.image, modality="CT")
        label_map = np.asarray(nib.load(out / "masks" / f"{case.case_id}.nii.gz").dataobj)
        assert label_map.shape == source.shape and set(np.unique(label_map)) <= {0, 1, 2, 3}
        description = json.loads(read_mask_description(out / "masks" / f"{case.case_id}.nii.gz"))
        assert description["labels"] == labels["labels"] and description["models"] == labels["models"]
        case_rows = [r for r in rows if r["case_id"] == case.case_id]
        assert case_rows[0]["files"] > 0 and [r["files"] for r in case_rows[1:]] == [0, 0], "files counted once"
        for row in case_rows:
            organ, value = row["organ"], row["label_value"]
            mask = same_geometry(out / "masks" / organ / f"{case.case_id}.nii.gz", source)
            np.testing.assert_array_equal(mask, label_map == value)
            assert row["status"] == "ok" and row["organ_voxels"] == int(mask.sum())
            assert row["depth"] == choices[organ].depth and row["depth_reason"] == choices[organ].reason
            assert row["model_version"] == labels["models"][organ]
            assert 0 <= row["overlap_lost_voxels"] <= row["overlap_voxels"]
            assert statistics[case.case_id][organ]["organ_ml"] == pytest.approx(row["organ_ml"])
            if row["organ_voxels"]:
                assert row["mean_intensity"] == pytest.approx(float(source.array[mask > 0].mean()), rel=1e-4)
        with Image.open(out / "previews" / f"{case.case_id}.png") as preview:
            assert preview.size[1] >= 256, "panels of at least 256 px"
        seg = out / "dicom-seg" / f"{case.case_id}.dcm"
        if not case.image.is_dir():
            assert not seg.exists() and {r["dicom_seg"] for r in case_rows} == {None}
        elif case is unreferenced:
            assert not seg.exists() and all("SOPInstanceUID" in r["dicom_seg_error"] for r in case_rows)
        else:
            assert {r["dicom_seg"] for r in case_rows} == {f"dicom-seg/{case.case_id}.dcm"}
            np.testing.assert_array_equal(read_dicom_seg(seg, source.dicom_headers), label_map)

    again = run_segmentation(SegmentConfig(archive=archive, out=out, model=ORGAN_MODELS, tracking_uri=trained["uri"],
                                           output_format="nifti,dicom-seg"))
    assert (again.skipped, again.ok, again.actors) == (4, 0, 0) and sum(read_counter.reads(trained["reads"], archive).values()) == 4
    assert {r["status"] for r in manifest(out)} == {"skipped"}

    # a new spleen model (another depth): every case is redone, the other organs keep their versions and masks
    spleen_depth = 2 if choices["spleen"].depth != 2 else 3
    models = ("anunet-liver-ct", f"anunet-spleen-ct-L{spleen_depth}", "anunet-kidney-ct")
    changed = run_segmentation(SegmentConfig(archive=archive, out=out, model=models, tracking_uri=trained["uri"],
                                             output_format="nifti,dicom-seg"))
    assert changed.ok == 4
    after = {(r["case_id"], r["organ"]): r for r in manifest(out)}
    for (case_id, organ), row in after.items():
        before = next(r for r in rows if (r["case_id"], r["organ"]) == (case_id, organ))
        if organ == "spleen":
            assert row["depth"] == spleen_depth and row["model_version"] != before["model_version"]
        else:
            assert row["model_version"] == before["model_version"]

    with pytest.raises(SegmentError, match=r"holds label maps of kidney, liver, spleen .* this run segments liver"):
        segment(trained, archive, out)


@pytest.mark.slow
def test_postprocess_modes_are_recorded_per_organ(trained, tmp_path: Path) -> None:
    archive = tmp_path / "incoming"
    make_archive(archive, cases=1, modality="CT", fmt="nifti", seed=27, shape=(64, 64, 16), layout="pairs")
    tags = {organ: registry.production_depths(organ, "CT", uri=trained["uri"])[1].tags for organ in ("liver", "kidney")}
    for organ in tags:
        assert tags[organ]["postprocess"] in ("on", "off") and "validation cases" in tags[organ]["postprocess_reason"]
        assert 0.0 <= float(tags[organ]["val_volume_dice"]) <= 1.0
    auto = run_segmentation(SegmentConfig(archive=archive, out=tmp_path / "auto", model=("anunet-liver-ct-L1", "anunet-kidney-ct-L1"),
                                          tracking_uri=trained["uri"]))
    assert {m["organ"]: m["postprocess"] for m in auto.models} == {o: tags[o]["postprocess"] for o in tags}
    on = run_segmentation(SegmentConfig(archive=archive, out=tmp_path / "on", model=("anunet-liver-ct-L1", "anunet-kidney-ct-L1"),
                                        tracking_uri=trained["uri"], postprocess="on"))
    rows = manifest(tmp_path / "on")
    assert on.ok == 1 and {r["postprocess"] for r in rows} == {"on"}
    assert all(r["postprocess_reason"] == "on: --postprocess on" for r in rows)
    for row in rows:
        mask = np.asarray(nib.load(tmp_path / "on" / "masks" / row["organ"] / "case_0000.nii.gz").dataobj)
        import scipy.ndimage
        _, components = scipy.ndimage.label(mask, structure=np.ones((3, 3, 3)))
        assert components <= (2 if row["organ"] == "kidney" else 1), (row["organ"], components)


# ----------------------------------------------------------------------------------------------
# The nested heads: adaptive depth, quality control, the report
# ----------------------------------------------------------------------------------------------


def _check_qc_columns(row: dict) -> None:
    """The QC columns of an ``ok`` row: in range, and ``needs_review`` exactly when the score is below 0.5."""
    assert 0.0 <= row["head_agreement"] <= 1.0 and 0.0 <= row["uncertain_fraction"] <= 1.0
    assert 0.0 <= row["qc_score"] <= 1.0
    assert row["needs_review"] == (row["qc_score"] < 0.5)
    assert (row["qc_reasons"] is not None) == row["needs_review"], row["qc_reasons"]
    assert row["volume_z"] is not None and np.isfinite(row["volume_z"]), "the training volumes are registered"


@pytest.mark.slow
def test_adaptive_depth_records_each_slice_s_depth_its_cost_and_qc(trained, tmp_path: Path) -> None:
    """``--depth adaptive`` runs the deepest version with its calibrated exit rule: every slice
    stops at some depth, the manifest holds the histogram and the GFLOP it cost; a fixed-depth
    rerun of the same version is not mistaken for it; the report shows the night."""
    from anunet_core import ANUNet
    from anunet_core.anytime import depth_gflops
    from anunet_core.exit_rule import ExitRule

    archive, out = tmp_path / "incoming", tmp_path / "out"
    make_archive(archive, cases=3, modality="CT", fmt="nifti", seed=23, shape=(64, 64, 16))
    deepest = registry.production_depths("liver", "CT", uri=trained["uri"])[4]
    rule = ExitRule.from_tags(deepest.tags)
    gflops = depth_gflops(ANUNet(), SIZE, SIZE)

    summary = segment(trained, archive, out, depth="adaptive")
    assert (summary.ok, summary.depth) == (3, 4) and "adaptive" in summary.depth_reason
    rows = manifest(out)
    for row in rows:
        histogram = row["depth_histogram"]
        assert len(histogram) == 4 and sum(histogram) == row["slices"] == 16
        assert row["model_version"] == model_uri(deepest.name, deepest.version)
        assert json.loads(row["exit_rule"]) == rule.to_tags()
        assert row["gflop_per_slice"] == pytest.approx(sum(n * gflops[d] for d, n in zip(range(1, 5), histogram)) / 16)
        if rule.exits_by_agreement:
            assert row["deep_slice_fraction"] == pytest.approx(histogram[3] / 16)
        else:  # the fixture's 1 validation case allows only the organ-absent exit: no deep-slice feature
            assert row["deep_slice_fraction"] is None
        _check_qc_columns(row)
    assert summary.depth_histogram == [sum(r["depth_histogram"][d] for r in rows) for d in range(4)]
    report = (out / "report.html").read_text()
    assert all(r["case_id"] in report for r in rows)
    # previews are embedded for the cases that need review, and only for them
    assert ("data:image/png;base64," in report) == any(r["needs_review"] for r in rows)

    again = segment(trained, archive, out, depth="adaptive")
    assert (again.ok, again.skipped) == (0, 3) and again.depth_histogram == summary.depth_histogram
    fixed = segment(trained, archive, out, depth=4)
    assert fixed.ok == 3, "the same version at a fixed depth is another result: redone"
    for row in manifest(out):
        assert row["depth_histogram"] == [0, 0, 0, 16] and row["exit_rule"] is None
        assert row["gflop_per_slice"] == pytest.approx(gflops[4]) and row["deep_slice_fraction"] is None
        _check_qc_columns(row)


@pytest.mark.slow
def test_quality_control_flags_the_cases_made_hard_on_purpose(trained, tmp_path: Path) -> None:
    """A cohort of normal CT phantoms and cases made hard on purpose (MR given to the CT model,
    heavy noise, a bias field, a field of view cut through the organ, an organ of unusual size
    or position): quality control must rank the failed segmentations first. The floor here is
    well below the issue's target (AUROC 0.85, reported from benchmarks/bench_qc.py with the
    demo's model) because the fixture's model is trained for a few epochs at 64 px."""
    from anunet_core.synthetic.hard_cases import make_qc_cohort, read_cohort
    from anunet_platform.qc import detection

    archive, out = tmp_path / "cohort", tmp_path / "out"
    make_qc_cohort(archive, cases_per_kind=1, seed=31, shape=(64, 64, 16))
    kinds = {c.case_id: c.kind for c in read_cohort(archive)}
    summary = segment(trained, archive, out, depth="adaptive")
    assert summary.ok == len(kinds) and summary.needs_review >= 1
    rows = {r["case_id"]: r for r in manifest(out)}
    dice = {e.case_id: e.dice for e in evaluate(out, archive, organ="liver", modality="CT")}
    ids = sorted(kinds)
    found = detection([rows[c]["qc_score"] for c in ids], [rows[c]["needs_review"] for c in ids], [dice[c] for c in ids],
                      dice_threshold=float(np.median([dice[c] for c in ids])) + 1e-9)
    print(found.line())
    for c in ids:
        print(f"{c} {kinds[c]:>9} dice {dice[c]:.3f} qc {rows[c]['qc_score']:.3f} {rows[c]['qc_reasons']}")
    assert found.auroc is not None and found.auroc >= 0.6, found.line()
    assert found.flagged_dice is None or found.unflagged_dice is None or found.flagged_dice < found.unflagged_dice
    # A segmentation that failed outright is flagged. (Which partial failures are flagged depends
    # on the model: the weak 4-epoch one flagged the MR case; the 12-epoch one scores it Dice 0.52
    # with heads that agree and a plausible volume, and ranks it below both normal cases instead.)
    failed = [c for c in ids if dice[c] < 0.25]
    assert failed and all(rows[c]["needs_review"] for c in failed), {c: (dice[c], rows[c]["needs_review"]) for c in ids}
    flagged = sorted((rows[c]["qc_score"], c) for c in ids if rows[c]["needs_review"])
    report = (out / "report.html").read_text()
    assert report.index("Needs review") < report.index(flagged[0][1]), "flagged cases come first"
    assert report.count("data:image/png;base64,") == len(flagged), "a preview per flagged case"
