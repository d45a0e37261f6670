"""The per-depth trade-off chart (Fig. 13): one bubble per depth, labelled with depth and parameters."""

from __future__ import annotations

import io

from anunet_platform.registry import RegisteredDepth, tradeoff_figure


def test_tradeoff_figure_has_one_labelled_bubble_per_depth(table6_params: dict[int, int]) -> None:
    rows = [
        RegisteredDepth(f"anunet-liver-ct-L{d}", "1", d, {"params": str(table6_params[d]), "val_dice": str(0.8 + 0.03 * d),
                                                          "latency_ms_per_slice": str(0.5 * d)})
        for d in (4, 2, 1, 3)
    ]
    fig = tradeoff_figure(rows, "liver")
    ax = fig.axes[0]
    assert ax.get_title() == "liver" and ax.get_xlabel() == "CPU latency (ms per slice)"
    assert [t.get_text() for t in ax.texts] == ["L1 (0.10M)", "L2 (0.51M)", "L3 (2.19M)", "L4 (8.95M)"]
    offsets = [tuple(c.get_offsets()[0]) for c in ax.collections]
    assert offsets == [(0.5 * d, 0.8 + 0.03 * d) for d in (1, 2, 3, 4)]
    sizes = [float(c.get_sizes()[0]) for c in ax.collections]
    assert sizes == sorted(sizes) and sizes[-1] == 3040.0, "area grows with parameters; the largest is 3000 + 40"
    png = io.BytesIO()
    fig.savefig(png, format="png")
    assert png.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
