"""``OUT/report.html``: the nightly run at a glance, one self-contained static page.

No server and no external asset: the CSS and the script are inline, the charts are SVG drawn
here, and the previews (``OUT/previews/{case_id}.png``) are embedded as ``data:`` URIs. A
Content-Security-Policy in the page lets it load nothing else and run no script but its own
(pinned by hash), so it can be mailed, archived or opened from a file share as it is.

The page, top to bottom:

- the run: archive, generation time, each organ's model, version and depth (and why), and the
  counts of cases ok / failed / skipped, of ignored files, and of cases that need review;
- **Needs review**: the ``ok``/``skipped`` cases with ``needs_review``, lowest ``qc_score``
  first, each with its preview and reasons; at most ``max_previews`` cases get a card (and an
  image), the rest are listed by name, so the page stays small for archives of thousands;
- the failed cases with their one-line errors, and the ignored files per reason;
- per organ, the organ volume (``organ_ml``) histogram, the flagged cases stacked in red and
  marked under the axis;
- per organ, the depth histogram of this run's ``ok`` rows: the slices that stopped at each
  depth (``depth_histogram``; a row without one counts its slices at its fixed ``depth``);
- every case row in a table that sorts on a header click (numbers as numbers, empty cells
  last). The page's address can ask for a sort: ``report.html#sort=organ_ml`` sorts by
  organ volume ascending, ``#sort=-qc_score`` by score descending (the keys are the column
  names: ``case_id organ status depth organ_ml qc_score needs_review qc_reasons
  seconds``). Once its script ran, ``<body>`` carries ``data-ready="1"``, ``data-sort`` (the
  applied sort) and, after the load event, ``data-images`` (images decoded).

Only manifest columns are shown (no DICOM header, no ``source`` path); every text from the
rows or the summary is HTML-escaped. Rows written before the quality-control columns existed
(no ``qc_score``, ``needs_review``, ``depth_histogram``...) are shown with empty cells. The
same inputs give the same page, byte for byte, but for the generation time.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anunet_core.io import write_atomic
from anunet_platform.contracts import preview_path

__all__ = ["REPORT_FILE", "TABLE_COLUMNS", "render_report", "write_report"]

REPORT_FILE = "report.html"

TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("case_id", "case"),
    ("organ", "organ"),
    ("status", "status"),
    ("depth", "depth"),
    ("organ_ml", "organ mL"),
    ("qc_score", "QC score"),
    ("needs_review", "review"),
    ("qc_reasons", "reasons"),
    ("seconds", "seconds"),
)
"""The table's columns: the manifest column (also the ``#sort=`` key) and its header."""

_NUMERIC = {key: ' class="r"' for key in ("depth", "organ_ml", "qc_score", "seconds")}  # right-aligned columns
MAX_FAILED_LINES = 500  # failed cases listed with their error; the rest are counted
MAX_ERROR_CHARS = 400  # an error longer than this is cut (the manifest has it whole)
MAX_RUG_MARKS = 400  # flagged cases marked under a volume chart

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STATUS_ORDER = ("ok", "failed", "skipped", "ignored")


def write_report(out: str | Path, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                 max_previews: int = 60, *, generated: datetime | None = None) -> Path:
    """Write ``OUT/report.html`` atomically (a hidden temporary file in OUT, then a rename) and
    return its path.

    Args:
        out: the segmentation folder; the previews are read from ``OUT/previews/{case_id}.png``.
        summary: ``OUT/summary.json`` (``SegmentSummary`` as a dict).
        rows: the manifest rows (``MANIFEST_SCHEMA`` columns; the newer ones may be missing).
        max_previews: at most this many cases needing review get a card with their preview.
        generated: the generation time shown (default: now, UTC).
    """
    out = Path(out)
    page = render_report(summary, rows, lambda case_id: _read_png(preview_path(out, case_id)),
                         max_previews=max_previews, generated=generated)
    return write_atomic(out / REPORT_FILE, lambda tmp: Path(tmp).write_bytes(page.encode("utf-8")))


def render_report(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                  preview: Any = None, *, max_previews: int = 60, generated: datetime | None = None) -> str:
    """The page as a string; ``preview(case_id)`` gives a case's PNG bytes or None (default:
    no previews). Pure but for calling ``preview``."""
    generated = generated or datetime.now(UTC)
    models = list(summary.get("models") or [])
    default_organ = models[0]["organ"] if len(models) == 1 and models[0].get("organ") else "organ"
    cases = [_case_row(r, default_organ) for r in rows if r.get("case_id") is not None]
    cases.sort(key=lambda r: (r["case_id"], _num(r.get("label_value")) or 0, r["organ"]))
    ignored = [r for r in rows if r.get("case_id") is None and r.get("status") == "ignored"]
    counts = _counts(summary, rows)
    review = _review_cases(cases)

    parts = [
        _head(summary),
        '<body data-ready="0">',
        _header(summary, models, counts, len(review), generated),
        "<main>",
        _review_section(review, preview or (lambda _case_id: None), max(0, int(max_previews))),
        _failed_section(cases, ignored),
        _volume_section(cases),
        _depth_section(cases, models),
        _table_section(cases),
        "</main>",
        f"<script>{_SCRIPT}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """HTML-escaped text (quotes too: safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> float | None:
    """A finite number, or None (None, NaN, text)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _read_png(path: Path) -> bytes | None:
    """A preview's bytes, or None when there is none (or it is no PNG)."""
    try:
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    return data if data.startswith(_PNG_SIGNATURE) else None


def _case_row(row: Mapping[str, Any], default_organ: str) -> dict[str, Any]:
    """One table row: the manifest row with its organ named and the optional columns present."""
    histogram = row.get("depth_histogram")
    histogram = [int(n or 0) for n in histogram] if histogram is not None else None
    return {
        "case_id": str(row["case_id"]),
        "organ": row.get("organ") or default_organ,
        "label_value": row.get("label_value"),
        "status": row.get("status") or "",
        "error": row.get("error"),
        "depth": _num(row.get("depth")),
        "depth_histogram": histogram,
        "slices": _num(row.get("slices")),
        "organ_ml": _num(row.get("organ_ml")),
        "qc_score": _num(row.get("qc_score")),
        "needs_review": bool(row.get("needs_review")),
        "qc_reasons": row.get("qc_reasons") or "",
        "seconds": _num(row.get("seconds")),
        "gflop_per_slice": _num(row.get("gflop_per_slice")),
    }


def _counts(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """ok / failed / skipped cases and ignored files: the summary's, else from the rows (a
    case's rows, one per organ, count once; ignored rows count their files)."""
    first: dict[str, str] = {}
    for r in rows:
        if r.get("case_id") is not None:
            first.setdefault(str(r["case_id"]), r.get("status") or "")
    statuses = Counter(first.values())
    computed = {"ok": statuses["ok"], "failed": statuses["failed"], "skipped": statuses["skipped"],
                "ignored": sum(int(r.get("files") or 0) for r in rows if r.get("status") == "ignored"),
                "cases": len(first)}
    return {k: int(summary[k]) if _num(summary.get(k)) is not None else v for k, v in computed.items()}


def _review_cases(cases: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The segmented cases with a flagged organ: ``{case_id, qc_score (lowest), organs: [row]}``,
    lowest score first (no score last), then by case id."""
    flagged: dict[str, list[Mapping[str, Any]]] = {}
    for r in cases:
        if r["needs_review"] and r["status"] in ("ok", "skipped"):
            flagged.setdefault(r["case_id"], []).append(r)
    review = []
    for case_id, organs in flagged.items():
        scores = [r["qc_score"] for r in organs if r["qc_score"] is not None]
        review.append({"case_id": case_id, "qc_score": min(scores) if scores else None, "organs": organs})
    review.sort(key=lambda c: (c["qc_score"] is None, c["qc_score"] or 0.0, c["case_id"]))
    return review


def _organs(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({r["organ"] for r in cases})


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


def _head(summary: Mapping[str, Any]) -> str:
    archive = Path(str(summary.get("archive") or "")).name or str(summary.get("archive") or "")
    script_hash = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
    policy = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Segmentation report: {_e(archive)}</title>\n<style>{_CSS}</style>\n</head>"
    )


def _header(summary: Mapping[str, Any], models: Sequence[Mapping[str, Any]], counts: Mapping[str, int],
            review: int, generated: datetime) -> str:
    when = generated.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = [f"<b>{counts['cases']}</b> cases"]
    if _num(summary.get("slices")):
        facts.append(f"<b>{int(summary['slices'])}</b> slices segmented")
    if _num(summary.get("seconds")) is not None:
        facts.append(f"<b>{float(summary['seconds']):.1f}</b> s")
    if _num(summary.get("slices_per_second")):
        facts.append(f"<b>{float(summary['slices_per_second']):.1f}</b> slices/s")
    if summary.get("device"):
        facts.append(f"on {_e(summary['device'])}")
    model_rows = []
    for m in models:
        reason = str(m.get("depth_reason") or "")
        adaptive = ' <span class="badge">adaptive</span>' if "adaptive" in reason.lower() else ""
        model_rows.append(
            f"<tr><td>{_e(m.get('organ'))}</td><td>{_e(m.get('model'))}</td><td>{_e(m.get('model_version'))}</td>"
            f"<td class=\"depth\">L{_e(m.get('depth'))}{adaptive}</td><td>{_e(reason)}</td></tr>"
        )
    models_table = (
        '<table class="models"><thead><tr><th>organ</th><th>model</th><th>version</th><th>depth</th>'
        "<th>why this depth</th></tr></thead><tbody>" + "".join(model_rows) + "</tbody></table>"
    ) if model_rows else ""
    tiles = [("ok", counts["ok"], "cases ok"), ("failed", counts["failed"], "cases failed"),
             ("ignored", counts["ignored"], "files ignored"),
             ("skipped", counts["skipped"], "cases skipped (done before)"), ("review", review, "cases need review")]
    tiles_html = "".join(
        f'<div class="tile {key}" id="count-{key}"><span class="n">{n}</span><span class="l">{label}</span></div>'
        for key, n, label in tiles
    )
    return (
        "<header>\n"
        f"<h1>Segmentation report</h1>\n<p class=\"run\">archive <code>{_e(summary.get('archive'))}</code> &middot; "
        f"out <code>{_e(summary.get('out'))}</code> &middot; generated {when}</p>\n"
        f"<div class=\"tiles\">{tiles_html}</div>\n"
        f"<p class=\"facts\">{' &middot; '.join(facts)}</p>\n{models_table}\n</header>"
    )


def _review_section(review: Sequence[Mapping[str, Any]], preview: Any, max_previews: int) -> str:
    title = f'<section id="review"><h2>Needs review <span class="count">{len(review)}</span></h2>'
    if not review:
        return title + '<p class="empty">No case needs review.</p></section>'
    cards = []
    for case in review[:max_previews]:
        png = preview(case["case_id"])
        image = (f'<img alt="preview of {_e(case["case_id"])}" src="data:image/png;base64,'
                 f'{base64.b64encode(png).decode("ascii")}">' if png else '<div class="noimg">no preview</div>')
        organs = "".join(
            f"<li><b>{_e(r['organ'])}</b> {_score(r['qc_score'])} {_e(r['qc_reasons']) or '<i>no reason given</i>'}"
            f"{_volume_text(r)}</li>"
            for r in case["organs"]
        )
        cards.append(
            f'<article class="card" data-case="{_e(case["case_id"])}"><h3><code>{_e(case["case_id"])}</code> '
            f"{_score(case['qc_score'])}</h3><ul>{organs}</ul>{image}</article>"
        )
    rest = review[max_previews:]
    more = ""
    if rest:
        names = ", ".join(f"<code>{_e(c['case_id'])}</code> {_fmt(c['qc_score'], 2)}" for c in rest)
        more = (f'<details class="more"><summary>{len(rest)} more case{"s" if len(rest) != 1 else ""} need review '
                f"(no preview here: the {max_previews} lowest scores are shown above; "
                f'<a href="#sort=qc_score">sort the table by score</a>)</summary><p>{names}</p></details>')
    return title + f'<div class="cards">{"".join(cards)}</div>{more}</section>'


def _score(score: float | None) -> str:
    if score is None:
        return '<span class="score none">no score</span>'
    level = "bad" if score < 0.25 else "warn" if score < 0.5 else "good"
    return f'<span class="score {level}" title="QC score (1 = no sign of trouble)">{score:.2f}</span>'


def _volume_text(r: Mapping[str, Any]) -> str:
    return f' <span class="dim">({r["organ_ml"]:.1f} mL)</span>' if r["organ_ml"] is not None else ""


def _failed_section(cases: Sequence[Mapping[str, Any]], ignored: Sequence[Mapping[str, Any]]) -> str:
    failed: dict[str, str] = {}
    for r in cases:
        if r["status"] == "failed":
            failed.setdefault(r["case_id"], str(r["error"] or "no error recorded"))
    lines = []
    for case_id, error in list(failed.items())[:MAX_FAILED_LINES]:
        error = " ".join(error.split())
        if len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 1] + "\u2026"
        lines.append(f"<li><code>{_e(case_id)}</code> {_e(error)}</li>")
    if len(failed) > MAX_FAILED_LINES:
        lines.append(f'<li class="dim">and {len(failed) - MAX_FAILED_LINES} more (status failed in the manifest)</li>')
    body = f'<ul class="failed">{"".join(lines)}</ul>' if lines else '<p class="empty">No case failed.</p>'
    reasons: Counter = Counter()
    for r in ignored:
        reasons[str(r.get("error") or "no reason recorded")] += int(r.get("files") or 0)
    if reasons:
        items = "".join(f"<li>{n} &times; {_e(reason)}</li>"
                        for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        body += (f'<details class="ignored"><summary>{sum(reasons.values())} ignored files of the archive, '
                 f"by reason</summary><ul>{items}</ul></details>")
    return f'<section id="failed"><h2>Failed <span class="count">{len(failed)}</span></h2>{body}</section>'


def _volume_section(cases: Sequence[Mapping[str, Any]]) -> str:
    segmented = [r for r in cases if r["status"] in ("ok", "skipped") and r["organ_ml"] is not None]
    charts = [_volume_chart(organ, [r for r in segmented if r["organ"] == organ]) for organ in _organs(segmented)]
    body = "".join(charts) if charts else '<p class="empty">No organ volume yet.</p>'
    return ('<section id="volumes"><h2>Organ volumes</h2><p class="dim">Cases per volume bin (ok and skipped '
            'cases); the cases that need review are stacked in red and marked under the axis.</p>'
            f'<div class="charts">{body}</div></section>')


def _depth_section(cases: Sequence[Mapping[str, Any]], models: Sequence[Mapping[str, Any]]) -> str:
    ok = [r for r in cases if r["status"] == "ok"]
    charts = []
    for organ in _organs(ok):
        rows = [r for r in ok if r["organ"] == organ]
        bins: list[int] = [0, 0, 0, 0]
        gflop, gflop_slices = 0.0, 0.0
        for r in rows:
            histogram = r["depth_histogram"]
            if histogram is None and r["depth"] is not None and r["depth"] >= 1:
                histogram = [0] * (int(r["depth"]) - 1) + [int(r["slices"] or 0)]
            for i, n in enumerate(histogram or []):
                if i >= len(bins):
                    bins.extend([0] * (i + 1 - len(bins)))
                bins[i] += n
            if r["gflop_per_slice"] is not None and r["slices"]:
                gflop += r["gflop_per_slice"] * r["slices"]
                gflop_slices += r["slices"]
        charts.append(_depth_chart(organ, bins, gflop / gflop_slices if gflop_slices else None))
    body = "".join(charts) if charts else '<p class="empty">No case was segmented in this run.</p>'
    return ('<section id="depth"><h2>Depth used</h2><p class="dim">Slices of the cases segmented in this run, '
            "by the depth (the head) they stopped at.</p>"
            f'<div class="charts">{body}</div></section>')


def _table_section(cases: Sequence[Mapping[str, Any]]) -> str:
    heads = "".join(f'<th data-key="{key}" tabindex="0"{_NUMERIC.get(key, "")}>{label}</th>'
                    for key, label in TABLE_COLUMNS)
    body = []
    for r in cases:
        histogram = r["depth_histogram"]
        depth_v, depth_t, depth_title = r["depth"], _fmt(r["depth"], 0), ""
        if histogram and sum(histogram):
            mean = sum((i + 1) * n for i, n in enumerate(histogram)) / sum(histogram)
            depth_title = " title=\"slices per depth: " + ", ".join(
                f"L{i + 1} {n}" for i, n in enumerate(histogram) if n) + '"'
            if sum(1 for n in histogram if n) > 1:
                depth_v, depth_t = mean, f"mean {mean:.2f}"
        status = _e(r["status"])
        cells = [
            f"<td><code>{_e(r['case_id'])}</code></td>",
            f"<td>{_e(r['organ'])}</td>",
            f'<td><span class="st {status}">{status}</span></td>',
            f'<td class="r" data-v="{_fmt(depth_v, 6)}"{depth_title}>{depth_t}</td>',
            f'<td class="r" data-v="{_fmt(r["organ_ml"], 6)}">{_fmt(r["organ_ml"], 1)}</td>',
            f'<td class="r" data-v="{_fmt(r["qc_score"], 6)}">{_fmt(r["qc_score"], 2)}</td>',
            f'<td data-v="{int(r["needs_review"])}">{"yes" if r["needs_review"] else ""}</td>',
            f'<td>{_e(r["qc_reasons"])}</td>',
            f'<td class="r" data-v="{_fmt(r["seconds"], 6)}">{_fmt(r["seconds"], 1)}</td>',
        ]
        flag = ' class="flag"' if r["needs_review"] else ""
        body.append(f'<tr data-case="{_e(r["case_id"])}"{flag}>{"".join(cells)}</tr>')
    return (f'<section id="all"><h2>All cases <span class="count">{len(cases)}</span></h2>'
            '<p class="dim">Click a header to sort (again: reverse). The address can ask for a sort too: '
            "<code>report.html#sort=organ_ml</code>, <code>#sort=-qc_score</code> (descending).</p>"
            f'<table id="cases"><thead><tr>{heads}</tr></thead><tbody>{"".join(body)}</tbody></table></section>')


# ----------------------------------------------------------------------------------------------
# Charts (SVG)
# ----------------------------------------------------------------------------------------------

_W, _H = 520, 240  # chart size (SVG user units)
_ML, _MR, _MT, _MB = 44, 14, 28, 52  # margins: left (y labels), right, top (title), bottom (x labels, rug)


def _ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round numbers between lo and hi, about ``target`` of them."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _nice_top(count: int) -> float:
    """The top of a count axis: ``count`` rounded up to the next round number."""
    ticks = _ticks(0, max(1, count), 4)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1
    return max(1.0, math.ceil(count / step - 1e-9) * step)


def _label(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:g}"


def _svg_open(title: str, label: str) -> list[str]:
    return [f'<figure class="chart"><svg viewBox="0 0 {_W} {_H}" role="img" aria-label="{_e(label)}">',
            f'<text class="t" x="{_ML}" y="16">{_e(title)}</text>']


def _y_axis(top: int, x0: float, x1: float, y0: float, height: float) -> list[str]:
    parts = []
    for t in _ticks(0, top, 4):
        if t != int(t):
            continue
        y = y0 - height * t / top
        parts.append(f'<line class="g" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="yl" x="{x0 - 6}" y="{y + 4:.1f}">{int(t)}</text>')
    return parts


def _volume_chart(organ: str, rows: Sequence[Mapping[str, Any]]) -> str:
    values = [r["organ_ml"] for r in rows]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        pad = max(abs(lo) * 0.1, 1.0)
        lo, hi = lo - pad, hi + pad
    bins = min(40, max(8, round(2 * len(values) ** (1 / 3))))
    width = (hi - lo) / bins
    total, flagged = [0] * bins, [0] * bins
    for r in rows:
        i = min(bins - 1, max(0, int((r["organ_ml"] - lo) / width)))
        total[i] += 1
        flagged[i] += int(r["needs_review"])
    x0, x1, y0 = _ML, _W - _MR, _H - _MB
    height = y0 - _MT
    top = _nice_top(max(total))

    def x_of(v: float) -> float:
        return x0 + (x1 - x0) * (v - lo) / (hi - lo)

    n_flagged = sum(flagged)
    parts = _svg_open(f"{organ}: {_plural(len(rows), 'case')}, {n_flagged} need{'s' if n_flagged == 1 else ''} review",
                      f"{organ} volume histogram of {len(rows)} cases")
    parts += _y_axis(top, x0, x1, y0, height)
    bar = (x1 - x0) / bins
    for i in range(bins):
        if not total[i]:
            continue
        left, right = lo + i * width, lo + (i + 1) * width
        h_all, h_flag = height * total[i] / top, height * flagged[i] / top
        x = x0 + i * bar + 0.5
        tip = (f"{_label(round(left, 1))}-{_label(round(right, 1))} mL: {_plural(total[i], 'case')}, "
               f"{flagged[i]} need{'s' if flagged[i] == 1 else ''} review")
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{y0 - h_all:.1f}" width="{bar - 1:.1f}" height="{h_all:.1f}">'
                     f"<title>{_e(tip)}</title></rect>")
        if flagged[i]:
            parts.append(f'<rect class="barf" x="{x:.1f}" y="{y0 - h_flag:.1f}" width="{bar - 1:.1f}" '
                         f'height="{h_flag:.1f}"><title>{_e(tip)}</title></rect>')
    parts.append(f'<line class="ax" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/>')
    for t in _ticks(lo, hi, 6):
        x = x_of(t)
        parts.append(f'<line class="ax" x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{y0 + 4}"/>'
                     f'<text class="xl" x="{x:.1f}" y="{y0 + 16}">{_label(t)}</text>')
    marks = sorted((r for r in rows if r["needs_review"]), key=lambda r: (r["qc_score"] is None, r["qc_score"] or 0.0,
                                                                          r["case_id"]))
    for r in marks[:MAX_RUG_MARKS]:
        x = x_of(r["organ_ml"])
        tip = f"{r['case_id']}: {r['organ_ml']:.1f} mL, QC {_fmt(r['qc_score'], 2) or 'none'}"
        parts.append(f'<path class="rug" d="M{x:.1f} {y0 + 22} l-4 7 h8 z"><title>{_e(tip)}</title></path>')
    parts.append(f'<text class="xt" x="{(x0 + x1) / 2:.1f}" y="{_H - 6}">{_e(organ)} volume (mL)</text>')
    parts.append("</svg></figure>")
    return "".join(parts)


def _depth_chart(organ: str, bins: Sequence[int], gflop: float | None) -> str:
    x0, x1, y0 = _ML, _W - _MR, _H - _MB
    height = y0 - _MT
    total = sum(bins)
    top = _nice_top(max(bins))
    mean = sum((i + 1) * n for i, n in enumerate(bins)) / total if total else None
    title = f"{organ}: {_plural(total, 'slice')}" + (f", mean depth {mean:.2f}" if mean is not None else "")
    title += f", {gflop:.2f} GFLOP/slice" if gflop is not None else ""
    parts = _svg_open(title, f"{organ} depth histogram")
    parts += _y_axis(top, x0, x1, y0, height)
    slot = (x1 - x0) / len(bins)
    for i, n in enumerate(bins):
        h = height * n / top
        x = x0 + i * slot + slot * 0.2
        share = f"{100 * n / total:.0f}%" if total else ""
        parts.append(f'<rect class="dbar" x="{x:.1f}" y="{y0 - h:.1f}" width="{slot * 0.6:.1f}" height="{h:.1f}">'
                     f"<title>L{i + 1}: {_plural(n, 'slice')} {share}</title></rect>")
        parts.append(f'<text class="bl" x="{x + slot * 0.3:.1f}" y="{y0 - h - 5:.1f}">{n}'
                     f'{f" ({share})" if n else ""}</text>')
        parts.append(f'<text class="xl" x="{x + slot * 0.3:.1f}" y="{y0 + 16}">L{i + 1}</text>')
    parts.append(f'<line class="ax" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/>')
    parts.append(f'<text class="xt" x="{(x0 + x1) / 2:.1f}" y="{_H - 6}">depth the slices stopped at</text>')
    parts.append("</svg></figure>")
    return "".join(parts)


# ----------------------------------------------------------------------------------------------
# Style and script (constant: the page's CSP pins the script by its hash)
# ----------------------------------------------------------------------------------------------

_CSS = """
:root{--ok:#1b7a3a;--failed:#b3261e;--ignored:#6b6b6b;--skipped:#1f5fa8;--review:#a35200;--line:#d9dde3;--dim:#5f6670}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
  color:#1d232a;background:#f5f6f8}
header,main{max-width:1240px;margin:0 auto;padding:0 20px}
header{padding-top:18px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:28px 0 10px;border-bottom:2px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:0 0 6px;display:flex;gap:8px;align-items:center;flex-wrap:wrap}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.run,.facts,.dim{color:var(--dim)}
.tiles{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0}
.tile{background:#fff;border:1px solid var(--line);border-left:6px solid;border-radius:8px;padding:8px 16px;
  min-width:150px}
.tile .n{display:block;font-size:36px;font-weight:700;line-height:1.1}
.tile .l{color:var(--dim)}
.tile.ok{border-left-color:var(--ok)}.tile.ok .n{color:var(--ok)}
.tile.failed{border-left-color:var(--failed)}.tile.failed .n{color:var(--failed)}
.tile.ignored{border-left-color:var(--ignored)}.tile.ignored .n{color:var(--ignored)}
.tile.skipped{border-left-color:var(--skipped)}.tile.skipped .n{color:var(--skipped)}
.tile.review{border-left-color:var(--review)}.tile.review .n{color:var(--review)}
table{border-collapse:collapse;background:#fff;border:1px solid var(--line)}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#eceff3;font-weight:600}
.models{margin:6px 0 4px}
.badge{background:#e8def8;color:#4a2c82;border-radius:4px;padding:0 5px;font-size:12px;font-weight:600}
.count{background:#e3e6ea;border-radius:10px;padding:0 8px;font-size:14px;vertical-align:middle}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:14px}
.card{background:#fff;border:1px solid var(--line);border-left:5px solid var(--review);border-radius:8px;padding:10px}
.card ul{margin:0 0 8px;padding-left:18px}
.card img{display:block;width:100%;height:auto;border-radius:4px;background:#000;image-rendering:auto}
.noimg{color:var(--dim);border:1px dashed var(--line);padding:20px;text-align:center}
.score{border-radius:4px;padding:0 6px;font-weight:700;color:#fff;font-size:13px}
.score.bad{background:var(--failed)}.score.warn{background:var(--review)}.score.good{background:var(--ok)}.score.none{background:var(--ignored)}
.failed li{margin:2px 0}.failed code{font-weight:600;margin-right:6px}
details{margin:8px 0}summary{cursor:pointer;color:var(--dim)}
.empty{color:var(--dim);font-style:italic}
.charts{display:flex;flex-wrap:wrap;gap:14px}
.chart{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:6px;width:560px;max-width:100%}
.chart svg{width:100%;height:auto;display:block;font-size:11px;font-family:inherit}
.chart .t{font-size:13px;font-weight:600;fill:#1d232a}
.chart .g{stroke:#eceff3}.chart .ax{stroke:#8a929c}
.chart .yl{text-anchor:end;fill:var(--dim)}.chart .xl,.chart .xt,.chart .bl{text-anchor:middle;fill:var(--dim)}
.chart .xt{fill:#1d232a}
.chart .bar{fill:#8fb3d9}.chart .barf{fill:#d64541}.chart .rug{fill:#d64541}.chart .dbar{fill:#4e79a7}
#cases{width:100%;font-size:13px}
#cases th{cursor:pointer;user-select:none;white-space:nowrap;position:sticky;top:0}
#cases th:hover{background:#dfe4ea}
#cases th[aria-sort=ascending]::after{content:" \\25B2"}#cases th[aria-sort=descending]::after{content:" \\25BC"}
#cases .r{text-align:right;font-variant-numeric:tabular-nums}
#cases tr.flag td{background:#fff6e8}
.st{border-radius:4px;padding:0 6px;font-size:12px;font-weight:600;color:#fff;background:var(--ignored)}
.st.ok{background:var(--ok)}.st.failed{background:var(--failed)}.st.skipped{background:var(--skipped)}
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var table = document.getElementById("cases");
  var body = document.body;
  var heads = table ? table.tHead.rows[0].cells : [];
  var current = null;
  function value(row, i) {
    var cell = row.cells[i];
    var v = cell.getAttribute("data-v");
    return v === null ? cell.textContent.trim() : v;
  }
  function compare(a, b) {
    var x = Number(a), y = Number(b);
    if (!isNaN(x) && !isNaN(y)) { return x - y; }
    return a.localeCompare(b, undefined, {numeric: true, sensitivity: "base"});
  }
  function sortBy(key, descending) {
    if (!table) { return false; }
    var index = -1;
    for (var i = 0; i < heads.length; i++) {
      if (heads[i].getAttribute("data-key") === key) { index = i; }
      heads[i].removeAttribute("aria-sort");
    }
    if (index < 0) { return false; }
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows).map(function (row, n) {
      return {row: row, v: value(row, index), n: n};
    });
    rows.sort(function (a, b) {
      if (a.v === "" || b.v === "") {  /* empty cells last, either way */
        return (a.v === "") - (b.v === "") || a.n - b.n;
      }
      var c = compare(a.v, b.v);
      return (descending ? -c : c) || a.n - b.n;
    });
    var fragment = document.createDocumentFragment();
    rows.forEach(function (r) { fragment.appendChild(r.row); });
    tbody.appendChild(fragment);
    heads[index].setAttribute("aria-sort", descending ? "descending" : "ascending");
    current = {key: key, descending: descending};
    body.setAttribute("data-sort", (descending ? "-" : "") + key);
    return true;
  }
  function fromHash() {
    var match = /(?:^#|&)sort=(-?)([a-z_]+)/.exec(window.location.hash);
    return match ? sortBy(match[2], match[1] === "-") : false;
  }
  for (var i = 0; i < heads.length; i++) {
    heads[i].addEventListener("click", function (event) {
      var key = event.currentTarget.getAttribute("data-key");
      var descending = current !== null && current.key === key && !current.descending;
      sortBy(key, descending);
      try { history.replaceState(null, "", "#sort=" + (descending ? "-" : "") + key); } catch (e) { /* file: */ }
    });
    heads[i].addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); event.currentTarget.click(); }
    });
  }
  window.addEventListener("hashchange", function () {
    if (fromHash() && table) { table.scrollIntoView(); }
  });
  fromHash();
  body.setAttribute("data-ready", "1");
  function countImages() {
    var loaded = 0, images = document.images;
    for (var i = 0; i < images.length; i++) {
      if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
    }
    body.setAttribute("data-images", String(loaded));
  }
  if (document.readyState === "complete") { countImages(); } else { window.addEventListener("load", countImages); }
})();
"""
