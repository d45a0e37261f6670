"""What a tuning experiment tells a person: the trials table, the Dice map over alpha x gamma,
and the best configuration against the default one on the same budget.

Everything here is a pure function of ``TrialRow``s (built from Ray Tune's results by
``tune.trial_rows``), so it is tested without Ray; only ``plot_dice_map`` draws (matplotlib,
Agg backend).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anunet_core.vocabulary import DEPTHS

COMPLETED, STOPPED, ERRORED = "completed", "stopped", "error"


@dataclass(frozen=True)
class TrialRow:
    """One trial of an experiment.

    Attributes:
        trial_id: Ray Tune's trial id.
        alpha, gamma, learning_rate: the configuration it trained with.
        dice_history: the deepest head's validation Dice after each epoch it ran.
        best_dice: ``{depth: best validation Dice over its epochs}`` for depths 1..4.
        max_epochs: the experiment's epoch budget per trial (ASHA's ``max_t``).
        error: the trial's one-line error, if it failed.
        is_default: the untuned configuration (alpha 0.5, gamma 2, learning rate 1e-3).
        started, ended: wall-clock seconds (epoch time) of the trial's run, if known.
    """

    trial_id: str
    alpha: float
    gamma: float
    learning_rate: float
    dice_history: tuple[float, ...]
    best_dice: dict[int, float]
    max_epochs: int
    error: str | None = None
    is_default: bool = False
    started: float | None = None
    ended: float | None = None

    @property
    def epochs(self) -> int:
        """Epochs it ran: where ASHA stopped it, or the budget."""
        return len(self.dice_history)

    @property
    def status(self) -> str:
        if self.error:
            return ERRORED
        return COMPLETED if self.epochs >= self.max_epochs else STOPPED

    @property
    def score(self) -> float:
        """What the search maximises: the deepest head's best validation Dice (NaN if none)."""
        return max(self.dice_history, default=math.nan)


@dataclass(frozen=True)
class Comparison:
    """The best configuration against the default one, on the same number of epochs.

    ``epochs`` is the budget both are compared at: the epochs the default ran (ASHA may have
    stopped it early) and the best trial also reached. ``gain`` is ``best_dice - default_dice``.
    """

    epochs: int
    best_dice: float
    default_dice: float

    @property
    def gain(self) -> float:
        return self.best_dice - self.default_dice


@dataclass
class TuneReport:
    rows: list[TrialRow]
    best: TrialRow
    comparison: Comparison | None
    max_concurrent_trials: int
    observed_concurrency: int
    files: dict[str, Path] = field(default_factory=dict)


def best_trial(rows: Sequence[TrialRow]) -> TrialRow:
    """The trial with the highest deepest-head validation Dice (any epoch); ties go to the
    earlier trial id. Raises ``ValueError`` when no trial reported a Dice."""
    scored = [r for r in rows if not math.isnan(r.score)]
    if not scored:
        errors = [r.error for r in rows if r.error]
        raise ValueError(f"no trial reported a validation Dice; first error: {errors[0] if errors else 'none'}")
    return sorted(scored, key=lambda r: (-r.score, r.trial_id))[0]


def compare_to_default(rows: Sequence[TrialRow], best: TrialRow) -> Comparison | None:
    """The best trial against the default configuration's trial at the same epoch budget;
    ``None`` when the experiment has no default trial with a reported Dice."""
    default = next((r for r in rows if r.is_default and r.dice_history), None)
    if default is None:
        return None
    epochs = min(default.epochs, best.epochs)
    return Comparison(epochs, max(best.dice_history[:epochs]), max(default.dice_history[:epochs]))


def observed_concurrency(intervals: Iterable[tuple[float, float]]) -> int:
    """The largest number of ``(start, end)`` intervals open at one instant (an interval that
    ends exactly when another starts does not overlap it)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def _epochs_cell(row: TrialRow) -> str:
    return f"{row.epochs}/{row.max_epochs}" + (" (stopped)" if row.status == STOPPED else "")


def table_rows(rows: Sequence[TrialRow], best: TrialRow | None = None) -> list[dict[str, str]]:
    """The trials table as strings, ordered by Dice (best first); ``best`` is starred and the
    default configuration marked."""
    ordered = sorted(rows, key=lambda r: (math.isnan(r.score), -r.score if not math.isnan(r.score) else 0.0, r.trial_id))
    out = []
    for r in ordered:
        mark = ("*" if best is not None and r.trial_id == best.trial_id else "") + (" (default)" if r.is_default else "")
        cells = {
            "trial": r.trial_id + mark,
            "alpha": f"{r.alpha:.3f}",
            "gamma": f"{r.gamma:.3f}",
            "learning_rate": f"{r.learning_rate:.2e}",
        }
        cells |= {f"dice_L{d}": ("-" if math.isnan(r.best_dice.get(d, math.nan)) else f"{r.best_dice[d]:.4f}") for d in DEPTHS}
        cells |= {"epochs": _epochs_cell(r), "status": r.status if not r.error else f"error: {r.error}"}
        out.append(cells)
    return out


def format_trials_table(rows: Sequence[TrialRow], best: TrialRow | None = None) -> str:
    """A Markdown table (readable as plain text too): alpha, gamma, learning rate, the best
    validation Dice of every depth, and the epoch each trial ended at."""
    body = table_rows(rows, best)
    header = ["trial", "alpha", "gamma", "learning rate", *(f"Dice L{d}" for d in DEPTHS), "epochs", "status"]
    lines = [[*row.values()] for row in body]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(fmt(line) for line in lines)])


def write_trials_csv(rows: Sequence[TrialRow], path: Path) -> Path:
    """One line per trial, numbers unrounded (for a spreadsheet or a notebook)."""
    columns = ["trial_id", "alpha", "gamma", "learning_rate", *(f"best_val_dice_L{d}" for d in DEPTHS), "epochs",
               "max_epochs", "status", "is_default", "started", "ended", "error"]
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([r.trial_id, r.alpha, r.gamma, r.learning_rate, *(r.best_dice.get(d, math.nan) for d in DEPTHS),
                             r.epochs, r.max_epochs, r.status, r.is_default, r.started, r.ended, r.error or ""])
    return Path(path)


def format_summary(report: TuneReport) -> str:
    """The best configuration, and what it gains over the default on the same budget."""
    b = report.best
    lines = [
        f"best: alpha {b.alpha:.3f}, gamma {b.gamma:.3f}, learning rate {b.learning_rate:.2e}: validation Dice "
        f"{b.score:.4f} (deepest head, {b.epochs}/{b.max_epochs} epochs, trial {b.trial_id})",
    ]
    c = report.comparison
    if c is None:
        lines.append("default (alpha 0.5, gamma 2, learning rate 1e-3): not in this experiment, no comparison")
    else:
        lines.append(
            f"default (alpha 0.5, gamma 2, learning rate 1e-3): validation Dice {c.default_dice:.4f} in {c.epochs} "
            f"epoch(s); the best reached {c.best_dice:.4f} in the same epochs: {c.gain:+.4f}"
        )
    lines.append(
        f"trials: {len(report.rows)} ({sum(r.status == COMPLETED for r in report.rows)} completed, "
        f"{sum(r.status == STOPPED for r in report.rows)} stopped by ASHA, {sum(r.status == ERRORED for r in report.rows)} failed); "
        f"at most {report.max_concurrent_trials} at once, {report.observed_concurrency} observed"
    )
    return "\n".join(lines)


def plot_dice_map(
    rows: Sequence[TrialRow], path: Path, title: str = "",
    alpha_range: tuple[float, float] | None = None, gamma_range: tuple[float, float] | None = None,
) -> Path:
    """Validation Dice over alpha x gamma: one marker per trial, coloured by its best Dice
    (deepest head) and labelled with it and its learning rate; circles ran the whole budget,
    crosses were stopped by ASHA (labelled with the epoch), the default configuration is a
    square and the best is ringed by a star. Trials without a Dice are drawn grey. The axes
    span the searched ranges where given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if not math.isnan(r.score)]
    best = best_trial(rows) if scored else None
    low = min((r.score for r in scored), default=0.0)
    high = max((r.score for r in scored), default=1.0)
    norm = matplotlib.colors.Normalize(vmin=low, vmax=high if high > low else low + 1e-6)
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=110)
    for r in rows:
        marker = "o" if r.status == COMPLETED else ("X" if r.status == STOPPED else "s")
        if r.is_default:
            marker = "s"
        color = "lightgrey" if math.isnan(r.score) else plt.cm.viridis(norm(r.score))
        ax.scatter(r.alpha, r.gamma, s=140, marker=marker, c=[color], edgecolors="black", linewidths=0.8, zorder=3)
        label = "-" if math.isnan(r.score) else f"{r.score:.3f}"
        if r.status == STOPPED:
            label += f" @{r.epochs}"
        label += f"\nlr {r.learning_rate:.1e}"
        ax.annotate(label, (r.alpha, r.gamma), textcoords="offset points", xytext=(8, 6), fontsize=8)
    if best is not None:
        ax.scatter(best.alpha, best.gamma, s=420, marker="*", facecolors="none", edgecolors="red", linewidths=1.5, zorder=4)
    mappable = plt.cm.ScalarMappable(norm=norm, cmap="viridis")
    fig.colorbar(mappable, ax=ax, label="best validation Dice (L4)")
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color="grey", markeredgecolor="black", label="ran all epochs"),
        plt.Line2D([], [], marker="X", linestyle="", color="grey", markeredgecolor="black", label="stopped by ASHA (@epoch)"),
        plt.Line2D([], [], marker="s", linestyle="", color="grey", markeredgecolor="black", label="default (0.5, 2)"),
        plt.Line2D([], [], marker="*", linestyle="", color="none", markeredgecolor="red", markersize=14, label="best"),
    ]
    ax.legend(handles=handles, loc="best", fontsize=8)
    for bounds, set_limits in ((alpha_range, ax.set_xlim), (gamma_range, ax.set_ylim)):
        if bounds is not None:
            pad = 0.08 * (bounds[1] - bounds[0] or 1.0)
            set_limits(bounds[0] - pad, bounds[1] + pad)
    ax.set_xlabel("alpha (weight of organ pixels)")
    ax.set_ylabel("gamma (focusing exponent)")
    ax.set_title(title or "Validation Dice over the hybrid loss's alpha and gamma")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


__all__ = [
    "COMPLETED", "ERRORED", "STOPPED", "Comparison", "TrialRow", "TuneReport", "best_trial", "compare_to_default",
    "format_summary", "format_trials_table", "observed_concurrency", "plot_dice_map", "table_rows", "write_trials_csv",
]
