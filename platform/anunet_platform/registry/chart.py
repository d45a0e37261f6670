"""The per-depth trade-off chart (the paper's Fig. 13), logged to every registering run."""

from __future__ import annotations

import math
from collections.abc import Sequence

from anunet_platform.registry.naming import RegisteredDepth

TRADEOFF_ARTIFACT = "tradeoff.png"


def tradeoff_figure(rows: Sequence[RegisteredDepth], title: str = ""):
    """The per-depth trade-off chart (the paper's Fig. 13): x latency (ms/slice), y
    validation Dice, bubble area proportional to parameters, labelled ``L{d}`` + params."""
    from matplotlib.figure import (
        Figure,  # no pyplot: no global backend or figure state (Agg)
    )

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.add_subplot()
    largest = max(r.params for r in rows) or 1
    for r in sorted(rows, key=lambda r: r.depth):
        area = 3000 * r.params / largest + 40  # points^2
        ax.scatter(r.latency_ms_per_slice, r.val_dice, s=area, alpha=0.45, edgecolors="black")
        ax.annotate(
            f"L{r.depth} ({r.params / 1e6:.2f}M)",
            (r.latency_ms_per_slice, r.val_dice),
            xytext=(math.sqrt(area / math.pi) + 4, 0),  # right of the bubble's edge
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=9,
        )
    ax.set_xlabel("CPU latency (ms per slice)")
    ax.set_ylabel("validation Dice")
    ax.set_title(title or "ANU-Net pruning depths: accuracy vs speed")
    ax.margins(x=0.35, y=0.25)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig
