"""Discovery plus signatures must grow linearly with the archive: time and driver memory at N and 4N.

What the segment job does before any Ray work, on an archive of small files: walk it and
classify every entry (:func:`anunet_core.archives.take_inventory`: one ``lstat`` per entry,
4 KiB of each DICOM file), find the cases, and sign each case's image files
(:func:`anunet_platform.segment.image_signature`). The archive mixes DICOM series folders
(90 slices each), NIfTI scans with labels and PACS debris (text files, non-image objects).

For each size it prints the seconds, the driver's peak Python memory (tracemalloc, in a second
pass: it would slow the timed one), and, as
the machine's own peak for the same tree, the floor every discovery pays: ``os.walk`` with one
``lstat`` per entry. Ratios 4N / N near 4 mean linear growth; inventory / floor says what
classifying costs on top of listing. Sizes are runs of fresh processes, alternating, median of
``--repeats``.

    python benchmarks/bench_discovery.py [--files 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchkit import cpu_name

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time, tracemalloc
sys.path[:0] = [sys.argv[3], sys.argv[3] + "/platform"]
root, what = sys.argv[1], sys.argv[2]
if what != "floor":  # imports are not discovery: outside the clock
    from anunet_core.archives import take_inventory
    from anunet_platform.segment.resume import image_signature

def work():
    if what == "floor":
        n = 0
        for top, dirs, files in os.walk(root):
            for name in files:
                os.lstat(os.path.join(top, name)); n += 1
        return n, 0
    inventory = take_inventory(root)
    signatures = [image_signature(c) for c in inventory.cases]
    return inventory.files, len(inventory.cases)

start = time.perf_counter()
n, cases = work()  # timed without tracemalloc (it slows allocation-heavy code several times)
seconds = time.perf_counter() - start
tracemalloc.start()
work()  # the same again, for the peak of the driver's Python memory
print(json.dumps({"seconds": seconds, "peak_mib": tracemalloc.get_traced_memory()[1] / 2**20, "files": n, "cases": cases}))
"""


def _dicom_slice_bytes() -> bytes:
    """One small, valid CT Image Storage file (8 x 8 pixels), written once and copied."""
    import numpy as np
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = FileDataset("x", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, "1.2.3.4", "CT"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.zeros((8, 8), np.uint16).tobytes()
    path = Path(tempfile.mkdtemp()) / "slice.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def build_archive(root: Path, files: int) -> None:
    """~``files`` entries: 90-slice series (80 %), NIfTI image + label pairs (15 %), debris (5 %)."""
    dicom = _dicom_slice_bytes()
    nifti = b"\0" * 400  # discovery never opens a NIfTI file: a name is enough
    n_series = max(1, int(files * 0.80) // 90)
    for s in range(n_series):
        folder = root / f"site_{s % 7}" / f"patient_{s:05d}" / "dicom"
        folder.mkdir(parents=True)
        for k in range(90):
            (folder / f"IM{k:04d}").write_bytes(dicom)
    for p in range(int(files * 0.15) // 2):
        folder = root / "nifti" / f"case_{p:05d}"
        folder.mkdir(parents=True)
        (folder / "image.nii.gz").write_bytes(nifti)
        (folder / "labels.nii.gz").write_bytes(nifti)
    for d in range(int(files * 0.05)):
        (root / "nifti" / f"notes_{d:05d}.txt").write_text("exported")


def run(root: Path, what: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), what, str(REPO)], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="N: files of the small archive (4N for the big one)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        roots = {}
        for label, n in (("N", args.files), ("4N", 4 * args.files)):
            roots[label] = Path(tmp) / label
            build_archive(roots[label], n)
        results: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.repeats):
            for label, root in roots.items():
                for what in ("floor", "inventory"):
                    results.setdefault((label, what), []).append(run(root, what))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "peak_mib")} | {"files": v[0]["files"],
           "cases": v[0]["cases"]} for k, v in results.items()}
    print(f"{'archive':<8} {'files':>7} {'cases':>6} {'floor s':>8} {'inventory s':>12} {'us/file':>8} "
          f"{'x floor':>8} {'peak MiB':>9}")
    for label in ("N", "4N"):
        floor, inv = med[(label, "floor")], med[(label, "inventory")]
        print(f"{label:<8} {inv['files']:>7} {inv['cases']:>6} {floor['seconds']:>8.3f} {inv['seconds']:>12.3f} "
              f"{1e6 * inv['seconds'] / inv['files']:>8.1f} {inv['seconds'] / floor['seconds']:>8.1f} "
              f"{inv['peak_mib']:>9.1f}")
    t = med[("4N", "inventory")]["seconds"] / med[("N", "inventory")]["seconds"]
    m = med[("4N", "inventory")]["peak_mib"] / med[("N", "inventory")]["peak_mib"]
    f = med[("4N", "inventory")]["files"] / med[("N", "inventory")]["files"]
    print(f"4N / N: files x{f:.2f}, time x{t:.2f}, driver memory x{m:.2f} (linear: both near x{f:.1f})")


if __name__ == "__main__":
    main()
