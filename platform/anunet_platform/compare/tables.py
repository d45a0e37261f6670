"""The comparison's tables and chart from the per-case scores: pure functions, tested without Ray.

- :func:`method_rows`: the paper's Tables 2-5, one row per method at its full depth (L4):
  IoU and Dice in %, precision and recall as fractions, plus HD95 and ASSD in mm; each a mean
  ± standard deviation over every (seed, test case) pair. Distances are averaged over their
  finite values; how many were infinite (one mask empty) is counted beside them.
- :func:`depth_rows`: Table 6 for a nested network (ANU-Net, UNet++) at L1-L4: seconds to
  segment the paper's 2,000 slices, parameters, Dice and IoU.
- :func:`format_markdown`, :func:`write_comparison_csv`, :func:`write_table6_csv`,
  :func:`plot_fig13` (the paper's Fig. 13: Dice against time, bubble area = parameters).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from anunet_core.io import write_atomic
from anunet_core.vocabulary import ARCH_NAMES, MAX_DEPTH
from anunet_platform.compare.evaluation import CaseScore

__all__ = ["MethodRow", "Table6Row", "depth_rows", "format_markdown", "mean_std", "method_rows", "plot_fig13",
           "write_comparison_csv", "write_table6_csv"]


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """``(mean, std, number of infinite values)`` over the finite values; NaN, NaN when none is."""
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, len(values)
    return float(np.mean(finite)), float(np.std(finite)), len(values) - len(finite)


@dataclass(frozen=True)
class MethodRow:
    """One row of Tables 2-5: a method at ``depth`` over ``n`` (seed, case) pairs. ``error``
    says why a method has no scores (its training failed)."""

    method: str
    arch: str
    depth: int
    n: int
    seeds: int
    cases: int
    iou_mean: float
    iou_std: float
    dice_mean: float
    dice_std: float
    precision_mean: float
    precision_std: float
    recall_mean: float
    recall_std: float
    hd95_mm_mean: float
    hd95_mm_std: float
    hd95_inf: int
    assd_mm_mean: float
    assd_mm_std: float
    assd_inf: int
    params: int | None = None
    error: str | None = None


def _row(arch: str, depth: int, scores: Sequence[CaseScore], params: int | None, error: str | None) -> MethodRow:
    metric = {name: mean_std([getattr(s, name) for s in scores])
              for name in ("iou", "dice", "precision", "recall", "hd95_mm", "assd_mm")}
    return MethodRow(
        method=ARCH_NAMES[arch], arch=arch, depth=depth, n=len(scores), seeds=len({s.seed for s in scores}),
        cases=len({s.case_id for s in scores}),
        **{f"{name}_{part}": metric[name][i] for name in ("iou", "dice", "precision", "recall", "hd95_mm", "assd_mm")
           for i, part in enumerate(("mean", "std"))},
        hd95_inf=metric["hd95_mm"][2], assd_inf=metric["assd_mm"][2], params=params, error=error,
    )


def method_rows(scores: Sequence[CaseScore], archs: Sequence[str], params: Mapping[str, int] | None = None,
                errors: Mapping[str, str] | None = None) -> list[MethodRow]:
    """Tables 2-5: one :class:`MethodRow` per architecture in ``archs`` (in that order), from its
    scores at depth 4 (every network's full depth). An architecture without scores keeps its row,
    with NaN metrics and its error (``errors``)."""
    errors, params = errors or {}, params or {}
    rows = []
    for arch in archs:
        own = [s for s in scores if s.arch == arch and s.depth == MAX_DEPTH]
        error = errors.get(arch) or (None if own else "no test scores")
        rows.append(_row(arch, MAX_DEPTH, own, params.get(arch), error))
    return rows


@dataclass(frozen=True)
class Table6Row:
    """Table 6: a nested network at one depth: ``seconds`` to segment ``slices`` slices
    (extrapolated from ``timed_slices`` timed ones), parameters, Dice and IoU (%, mean ± std)."""

    method: str
    arch: str
    depth: int
    seconds: float
    slices: int
    timed_slices: int
    params: int
    dice_mean: float
    dice_std: float
    iou_mean: float
    iou_std: float
    n: int


def depth_rows(scores: Sequence[CaseScore], arch: str, seconds: Mapping[int, float], params: Mapping[int, int],
               slices: int, timed_slices: int) -> list[Table6Row]:
    """Table 6 of ``arch``: one :class:`Table6Row` per depth of ``seconds`` (time for ``slices``
    slices per depth) and ``params`` (parameters of the pruned network), with the Dice and IoU of
    its scores at that depth."""
    rows = []
    for depth in sorted(seconds):
        own = [s for s in scores if s.arch == arch and s.depth == depth]
        d, i = mean_std([s.dice for s in own]), mean_std([s.iou for s in own])
        rows.append(Table6Row(ARCH_NAMES[arch], arch, depth, float(seconds[depth]), slices, timed_slices,
                              int(params[depth]), 100 * d[0], 100 * d[1], 100 * i[0], 100 * i[1], len(own)))
    return rows


def _pm(mean: float, std: float, scale: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def _distance(mean: float, std: float, infinite: int) -> str:
    text = _pm(mean, std, 1.0, 2)
    return f"{text} ({infinite} inf)" if infinite else text


def format_markdown(title: str, rows: Sequence[MethodRow], table6: Mapping[str, Sequence[Table6Row]]) -> str:
    """Tables 2-5 (one row per method) and a Table 6 per nested network, as Markdown."""
    lines = [f"# {title}", "",
             "Tables 2-5 layout: mean ± std over seeds and test cases, per volume; the best mean of each column is "
             "**bold** (HD95 and ASSD: lowest).", "",
             "| Method | IoU (%) | Dice (%) | Precision | Recall | HD95 (mm) | ASSD (mm) | Params (M) | n |",
             "|---|---|---|---|---|---|---|---|---|"]
    best = {}
    for key, better in (("iou", max), ("dice", max), ("precision", max), ("recall", max), ("hd95_mm", min),
                        ("assd_mm", min)):
        values = [getattr(r, f"{key}_mean") for r in rows if math.isfinite(getattr(r, f"{key}_mean"))]
        best[key] = better(values) if values else None

    def cell(row: MethodRow, key: str, text: str) -> str:
        return f"**{text}**" if best[key] is not None and getattr(row, f"{key}_mean") == best[key] else text

    for r in rows:
        if r.error and not r.n:
            lines.append(f"| {r.method} | failed: {r.error} | | | | | | | 0 |")
            continue
        lines.append(
            f"| {r.method} | {cell(r, 'iou', _pm(r.iou_mean, r.iou_std, 100, 2))} "
            f"| {cell(r, 'dice', _pm(r.dice_mean, r.dice_std, 100, 2))} "
            f"| {cell(r, 'precision', _pm(r.precision_mean, r.precision_std, 1, 4))} "
            f"| {cell(r, 'recall', _pm(r.recall_mean, r.recall_std, 1, 4))} "
            f"| {cell(r, 'hd95_mm', _distance(r.hd95_mm_mean, r.hd95_mm_std, r.hd95_inf))} "
            f"| {cell(r, 'assd_mm', _distance(r.assd_mm_mean, r.assd_mm_std, r.assd_inf))} "
            f"| {'' if r.params is None else f'{r.params / 1e6:.4f}'} | {r.n} |"
        )
    for arch, depth_table in table6.items():
        if not depth_table:
            continue
        first = depth_table[0]
        lines += ["", f"## Table 6: pruned {first.method}", "",
                  f"| Depth | Time for {first.slices:,} slices (s) | Parameters (M) | Dice (%) | IoU (%) |",
                  "|---|---|---|---|---|"]
        lines += [f"| L{r.depth} | {r.seconds:.2f} | {r.params / 1e6:.4f} | {_pm(r.dice_mean / 100, r.dice_std / 100, 100, 2)} "
                  f"| {_pm(r.iou_mean / 100, r.iou_std / 100, 100, 2)} |" for r in depth_table]
        lines.append(f"\nTime: the BatchNorm-folded network at each depth, {first.timed_slices} slices timed on the "
                     f"node that ran the evaluation, scaled to {first.slices:,}.")
    return "\n".join(lines) + "\n"


def _write_rows(rows: Sequence[object], cls: type, path: Path) -> Path:
    names = [f.name for f in fields(cls)]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=names)
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)

    return write_atomic(Path(path), write)


def write_comparison_csv(rows: Sequence[MethodRow], path: Path) -> Path:
    """Tables 2-5 as CSV: one row per method, the columns of :class:`MethodRow` (fractions and
    mm, not %), atomically."""
    return _write_rows(rows, MethodRow, path)


def write_table6_csv(rows: Sequence[Table6Row], path: Path) -> Path:
    """Table 6 as CSV, one row per network and depth, atomically."""
    return _write_rows(rows, Table6Row, path)


def plot_fig13(table6: Mapping[str, Sequence[Table6Row]], path: Path, title: str) -> Path:
    """The paper's Fig. 13 for each nested network: Dice (%) against the time for the slices,
    one bubble per depth, its area proportional to the parameters; written atomically (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    from matplotlib.lines import Line2D

    largest = max((r.params for rows in table6.values() for r in rows), default=1)
    handles = []
    for (arch, rows), colour in zip(table6.items(), ("tab:blue", "tab:orange", "tab:green")):
        if not rows:
            continue
        x, y = [r.seconds for r in rows], [r.dice_mean for r in rows]
        axes.plot(x, y, color=colour, alpha=0.4)
        axes.scatter(x, y, s=[2000 * r.params / largest for r in rows], color=colour, alpha=0.35)
        handles.append(Line2D([], [], marker="o", linestyle="", color=colour, alpha=0.6, markersize=9,
                              label=f"{rows[0].method} (area: parameters)"))
        for r in rows:
            axes.annotate(f"L{r.depth}\n{r.params / 1e6:.2f}M", (r.seconds, r.dice_mean), ha="center", va="center",
                          fontsize=8)
    slices = next((rows[0].slices for rows in table6.values() if rows), 2000)
    axes.set_xlabel(f"time to segment {slices:,} slices (s)")
    axes.set_ylabel("Dice (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.margins(x=0.15, y=0.15)  # room for the largest bubbles
    axes.legend(handles=handles, loc="lower right", fontsize=8)
    figure.tight_layout()
    try:
        return write_atomic(Path(path), lambda tmp: figure.savefig(tmp, dpi=110))
    finally:
        plt.close(figure)
