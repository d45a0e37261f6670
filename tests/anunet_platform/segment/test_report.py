"""``OUT/report.html``: written atomically, self-contained, escaped, capped; and what a real
browser (Debian's headless ``chromium``) shows of it, with a screenshot kept as a CI artifact
(``$ANUNET_TEST_ARTIFACTS``, else ``<repo>/test-artifacts/``). No Ray, no model: the manifest
rows and the previews are made here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anunet_core.preview import write_preview
from anunet_platform.contracts import preview_path
from anunet_platform.segment.job import SegmentSummary
from anunet_platform.segment.report import REPORT_FILE, TABLE_COLUMNS, render_report, write_report

GENERATED = datetime(2025, 3, 14, 2, 30, tzinfo=UTC)
EVIL = "<img src=x onerror=alert(1)>\"'&evil"
REPO = Path(__file__).resolve().parents[3]


# ----------------------------------------------------------------------------------------------
# The run, made by hand
# ----------------------------------------------------------------------------------------------


def _row(case_id: str | None, status: str = "ok", **columns) -> dict:
    """A manifest row with the columns every version had; ``columns`` add or override."""
    row = {"case_id": case_id, "source": f"scans/{case_id}.nii.gz", "status": status, "error": None, "depth": 2,
           "model_version": "3", "organ_voxels": 1000, "organ_ml": 1500.0, "seconds": 1.5, "slices": 48,
           "depth_reason": "adaptive: exit rule calibrated", "files": 1, "organ": "liver", "label_value": 1}
    row.update(columns)
    return row


def _qc(score: float, reasons: str | None = None, histogram: list[int] | None = None) -> dict:
    """The quality-control columns of a row (review below 0.5)."""
    return {"qc_score": score, "needs_review": score < 0.5, "qc_reasons": reasons,
            "depth_histogram": histogram if histogram is not None else [30, 12, 4, 2],
            "gflop_per_slice": 1.25, "head_agreement": 0.9, "uncertain_fraction": 0.01, "volume_z": 0.3,
            "deep_slice_fraction": 2 / 48}


FLAGGED = {  # case id -> (qc_score, reasons): the cases that need review
    "case-003": (0.12, "heads disagree (0.61); volume z-score 4.1"),
    "case-007": (0.31, "many uncertain voxels (4.2%)"),
    "case-010": (0.45, "touches the scan's edge"),
    EVIL: (0.2, "<b>bold</b> & reason"),
}


def _rows() -> list[dict]:
    """12 liver cases (4 flagged, one with a hostile id), one also with a spleen row, a case
    from before quality control (no QC columns), a failed case and two ignored entries."""
    rows = []
    for i in range(1, 13):
        case_id = f"case-{i:03d}"
        score, reasons = FLAGGED.get(case_id, (0.9 - i / 100, None))
        rows.append(_row(case_id, organ_ml=1200.0 + 60 * i, seconds=1.0 + i / 10, **_qc(score, reasons)))
    score, reasons = FLAGGED[EVIL]
    rows.append(_row(EVIL, organ_ml=3100.0, **_qc(score, reasons, [0, 0, 10, 38])))
    rows.append(_row("case-002", organ="spleen", label_value=2, organ_ml=180.0, depth=3, files=0,
                     **_qc(0.8, None, [0, 0, 48, 0])))
    rows.append(_row("case-old", status="skipped", organ_ml=1700.0, seconds=0.0, depth=3))  # no QC columns
    rows.append(_row("case-bad", status="failed", error="cannot read: <truncated> & broken header", depth=None,
                     organ_voxels=None, organ_ml=None, slices=None))
    rows.append({"case_id": None, "source": "notes.txt", "status": "ignored", "error": "not a scan (.txt file)",
                 "files": 2, "organ": None})
    rows.append({"case_id": None, "source": "x.zip", "status": "ignored", "error": "not a scan (.zip file)",
                 "files": 1, "organ": None})
    return rows


def _summary(rows: list[dict]) -> dict:
    summary = SegmentSummary(
        archive="/archives/nightly-2025-03-14", out="/out/nightly", model="anunet-liver-ct,anunet-spleen-ct",
        model_version="3,1", depth=None, depth_reason=None, cases=15, seconds=42.0, device="cpu",
        models=[{"organ": "liver", "model": "anunet-liver-ct", "model_version": "3", "depth": 4,
                 "depth_reason": "adaptive: exit rule calibrated (tau 0.95)"},
                {"organ": "spleen", "model": "anunet-spleen-ct", "model_version": "1", "depth": 3,
                 "depth_reason": "bootstrap: L3 within 0.01 of L4 (95% upper 0.004)"}],
    )
    summary.count(rows)
    return asdict(summary)


def _previews(out: Path, case_ids) -> None:
    """A small preview PNG (made as the segment job makes them) for each case."""
    rng = np.random.default_rng(0)
    images = rng.random((6, 24, 24)).astype(np.float32)
    labels = np.zeros((6, 24, 24), np.uint8)
    labels[1:5, 6:18, 5:15] = 1
    for case_id in case_ids:
        write_preview(preview_path(out, case_id), images, labels, {1: "liver"}, min_panel_px=96)


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, dict, list[dict]]:
    """OUT with previews for every liver case; the summary and the rows."""
    out = tmp_path / "out"
    rows = _rows()
    _previews(out, sorted({r["case_id"] for r in rows if r["case_id"] and r["status"] == "ok"}))
    return out, _summary(rows), rows


def _tile(page: str, key: str) -> int:
    return int(re.search(rf'id="count-{key}"><span class="n">(\d+)<', page).group(1))


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------


def test_the_report_is_written_atomically_and_shows_the_counts_and_the_review_order(run) -> None:
    out, summary, rows = run
    path = write_report(out, summary, rows, generated=GENERATED)
    assert path == out / REPORT_FILE
    assert sorted(p.name for p in out.iterdir()) == ["previews", REPORT_FILE]  # no temporary file left
    page = path.read_text(encoding="utf-8")
    assert {k: _tile(page, k) for k in ("ok", "failed", "ignored", "skipped", "review")} == {
        "ok": 13, "failed": 1, "ignored": 3, "skipped": 1, "review": 4}
    assert "2025-03-14 02:30 UTC" in page and "/archives/nightly-2025-03-14" in page
    assert "adaptive</span>" in page and "L3 within 0.01 of L4" in page
    cards = re.findall(r'<article class="card" data-case="([^"]*)"', page)
    assert cards == ["case-003", "&lt;img src=x onerror=alert(1)&gt;&quot;&#x27;&amp;evil", "case-007", "case-010"]
    assert page.count("data:image/png;base64,") == 4
    assert "cannot read: &lt;truncated&gt; &amp; broken header" in page  # the failed case, one line
    assert "2 &times; not a scan (.txt file)" in page
    table = re.findall(r'<tr data-case="([^"]*)"', page)
    assert len(table) == 16 and table[1:4] == ["case-001", "case-002", "case-002"]  # every case row, by id; no ignored
    # the depth histogram of liver: 12 cases [30, 12, 4, 2], the hostile one [0, 0, 10, 38]; skipped not counted
    assert "L1: 360 slices" in page and "L4: 62 slices" in page
    assert "spleen: 48 slices, mean depth 3.00" in page
    assert "liver: 14 cases, 4 need review" in page  # the volume chart counts ok and skipped cases


def test_the_page_is_self_contained(run) -> None:
    out, summary, rows = run
    page = write_report(out, summary, rows).read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "//" not in re.sub(r"data:[^\"]*", "", page)
    references = re.findall(r'\b(?:src|href|action|srcset|poster)\s*=\s*"([^"]*)"', page)
    assert references and all(r.startswith(("data:image/png;base64,", "#")) for r in references), references
    assert "<link" not in page and "@import" not in page and "url(" not in page and "@font-face" not in page
    assert "default-src 'none'" in page  # and the page's policy forbids any other load


def test_user_text_is_escaped(run) -> None:
    out, summary, rows = run
    page = write_report(out, summary, rows).read_text(encoding="utf-8")
    assert EVIL not in page and "<img src=x" not in page and "<b>bold</b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&quot;&#x27;&amp;evil" in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; reason" in page
    assert len(re.findall(r"<script\b", page)) == 1 and len(re.findall(r"<img\b", page)) == 4


def test_previews_are_capped(run) -> None:
    out, summary, rows = run
    page = write_report(out, summary, rows, max_previews=2).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2
    assert len(re.findall(r'<article class="card"', page)) == 2
    assert "2 more cases need review" in page and "case-010</code> 0.45" in page
    page = write_report(out, summary, rows, max_previews=0).read_text(encoding="utf-8")
    assert "data:image/png" not in page and "4 more cases need review" in page


def test_a_case_without_a_preview_still_gets_its_card(run) -> None:
    out, summary, rows = run
    preview_path(out, "case-003").unlink()
    page = write_report(out, summary, rows).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3 and "no preview" in page


def test_same_inputs_same_page(run) -> None:
    out, summary, rows = run
    first = write_report(out, summary, rows, generated=GENERATED).read_bytes()
    second = write_report(out, summary, list(reversed(rows)), generated=GENERATED).read_bytes()
    assert first == second


def test_rows_from_before_quality_control_and_an_empty_run() -> None:
    rows = [_row("a", depth=2, slices=40), _row("b", depth=2, slices=8, organ_ml=None), _row("c", "failed", error="x")]
    for r in rows:
        r.pop("organ")  # older rows: no organ either; the one model's organ is used
    summary = {"archive": "/a", "models": [{"organ": "kidney", "model": "m", "model_version": "1", "depth": 2,
                                            "depth_reason": "fixed"}]}
    page = render_report(summary, rows, generated=GENERATED)
    assert _tile(page, "ok") == 2 and _tile(page, "failed") == 1 and _tile(page, "review") == 0
    assert "No case needs review." in page and "L2: 48 slices" in page and "kidney: 1 case, 0 need review" in page
    assert "adaptive</span>" not in page
    page = render_report({}, [], generated=GENERATED)
    assert "No case needs review." in page and "No case failed." in page and "No case was segmented" in page


# ----------------------------------------------------------------------------------------------
# In a real browser
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium): the report is not checked in a browser")


def _browse(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _artifacts() -> Path:
    folder = Path(os.environ.get("ANUNET_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_browser_shows_the_counts_a_flagged_case_and_its_images(run, chromium: str, tmp_path: Path) -> None:
    out, summary, rows = run
    path = write_report(out, summary, rows, generated=GENERATED)
    result = _browse(chromium, tmp_path / "profile", "--dump-dom", path.as_uri())
    dom = result.stdout
    assert result.returncode == 0 and "<body" in dom, result.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-ready="1"' in body, body  # the inline script ran (the page's CSP allowed it)
    assert 'data-images="4"' in body, body  # every embedded preview decoded (naturalWidth > 0)
    assert {k: _tile(dom, k) for k in ("ok", "failed", "ignored", "skipped", "review")} == {
        "ok": 13, "failed": 1, "ignored": 3, "skipped": 1, "review": 4}
    assert 'data-case="case-003"' in dom and "heads disagree (0.61)" in dom
    assert "<img src=x" not in dom  # the hostile id stayed text

    screenshot = tmp_path / "report.png"
    result = _browse(chromium, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,2000",
                     path.as_uri())
    assert result.returncode == 0 and screenshot.is_file(), result.stderr[-2000:]
    with Image.open(screenshot) as image:
        assert image.size == (1280, 2000)
        grey = np.asarray(image.convert("L"), dtype=np.float32)
    assert grey.std() > 10 and len(np.unique(grey)) > 50  # not blank: text, tiles, previews, charts
    shutil.copyfile(screenshot, _artifacts() / "report-screenshot.png")


@pytest.mark.parametrize("sort, descending", [("organ_ml", False), ("-qc_score", True)])
def test_the_table_sorts_from_the_address(run, chromium: str, tmp_path: Path, sort: str, descending: bool) -> None:
    out, summary, rows = run
    path = write_report(out, summary, rows, generated=GENERATED)
    key = sort.lstrip("-")
    column = [k for k, _ in TABLE_COLUMNS].index(key)
    result = _browse(chromium, tmp_path / "profile", "--dump-dom", f"{path.as_uri()}#sort={sort}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f'data-sort="{sort}"' in result.stdout
    table = re.search(r'<table id="cases">.*?</table>', result.stdout, re.DOTALL).group(0)
    values = []
    for row in re.findall(r"<tr data-case.*?</tr>", table, re.DOTALL):
        cell = re.findall(r"<td[^>]*>", row)[column]
        values.append(re.search(r'data-v="([^"]*)"', cell).group(1))
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers, reverse=descending) and len(numbers) >= 14
    assert values[len(numbers):] == [""] * (len(values) - len(numbers))  # empty cells last
    assert "aria-sort=" in table
