"""Figures for papers (seaborn; PNG and PDF), each with the run id in a small footer below everything else."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on CI or a cluster; notebooks still show the returned figures
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

# Every figure uses constrained layout, so titles, tick labels and legends outside the axes get room of their own;
# legends sit outside the data on the right, where six conditions never cover bars or points.
LEGEND_OUTSIDE = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
PANELS_PER_ROW = 3  # confusion panels: six conditions wrap into two rows of three
CELL_IN, CELL_PT = 0.34, 7  # a confusion cell's side in inches, and its number's size ("100" fits)
STAMP_PT, STAMP_GAP_IN = 6, 0.04


def _figure(width_in: float, height_in: float) -> tuple[plt.Figure, plt.Axes]:
    return plt.subplots(figsize=(width_in, height_in), layout="constrained")


def stamp(fig: plt.Figure, run_id: str) -> Text:
    """The run id, right-aligned just below everything the layout placed (so it never meets a label)."""
    fig.canvas.draw()  # runs the layout engine; the stamp takes no part in it, so later draws keep these positions
    bb = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    w, h = fig.get_size_inches()
    # in figure fractions (below 0 when it hangs under the canvas): savefig's bbox "tight" moves those along
    return fig.text(bb.x1 / w, (bb.y0 - STAMP_GAP_IN) / h, f"ParaQA run {run_id}", ha="right", va="top",
                    fontsize=STAMP_PT, color="0.5")


def save(fig: plt.Figure, out_dir: Path, topic: str, run_id: str) -> list[Path]:
    """fig_<topic>.png and .pdf with the run id in the footer (bbox "tight" takes the footer in)."""
    stamp(fig, run_id)
    paths = [out_dir / f"fig_{topic}.{ext}" for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=150 if p.suffix == ".png" else None, bbox_inches="tight", metadata=(
            {"CreationDate": None} if p.suffix == ".pdf" else None))
    plt.close(fig)
    return paths


def fit_xticklabels(ax: plt.Axes, gap_px: float = 4.0) -> None:
    """Turn the x tick labels 45° when, drawn flat, two would run into each other (long or many condition names)."""
    ax.figure.canvas.draw()
    r = ax.figure.canvas.get_renderer()
    boxes = sorted((t.get_window_extent(r) for t in ax.get_xticklabels() if t.get_text()), key=lambda b: b.x0)
    if any(a.x1 + gap_px > b.x0 for a, b in zip(boxes, boxes[1:])):
        for t in ax.get_xticklabels():
            t.set(rotation=45, ha="right", rotation_mode="anchor")


def _legend_outside(ax: plt.Axes, title: str | None = None) -> None:
    if ax.get_legend() is not None:
        sns.move_legend(ax, **LEGEND_OUTSIDE, title=title)


def scores_by_type(scores: pd.DataFrame, judge: str, order: Sequence[str]) -> plt.Figure:
    """Bars per condition and question type with bootstrap 95 % CIs over items."""
    d = scores[scores["judge"] == judge]
    present = [o for o in order if o in set(d["condition"])]
    fig, ax = _figure(max(5.5, 2.4 + 0.9 * len(present)), 3.5)
    if len(d):
        sns.barplot(d, x="condition", y="score", hue="question_type", order=present,
                    errorbar=("ci", 95), n_boot=1000, seed=0, ax=ax)
        _legend_outside(ax, "question type")
    ax.set(ylabel="judge score (0-100)", xlabel="", title=f"Reference CPQA set · judge {judge}", ylim=(0, 100))
    fit_xticklabels(ax)
    return fig


def judge_vs_accuracy(points: pd.DataFrame, order: Sequence[str] = ()) -> plt.Figure:
    """One point per condition (colour) and judge (marker): judge score on CPQA vs unweighted accuracy on the
    emotion set. A legend names the conditions: text beside each point collides when conditions score alike."""
    fig, ax = _figure(6.0, 3.5)
    if len(points):
        present = list(points["condition"].unique())
        hue_order = [c for c in order if c in present] + [c for c in present if c not in order]
        sns.scatterplot(points, x="ua", y="judge_score", hue="condition", hue_order=hue_order, style="judge", s=60,
                        ax=ax)
        _legend_outside(ax)
    ax.set(xlabel="emotion UA (label mapping)", ylabel="judge score on CPQA (0-100)")
    return fig


def _grid(n: int) -> tuple[int, int]:
    """Rows and columns for n panels, at most PANELS_PER_ROW a row, rows as even as they can be."""
    n_rows = math.ceil(n / PANELS_PER_ROW)
    return n_rows, math.ceil(n / n_rows)


def _cells(ax: plt.Axes, m: np.ndarray) -> None:
    """Row shares as whole percents, only where they carry information: no zeros, no "-0"."""
    for (i, j), v in np.ndenumerate(m):
        if round(100 * v) >= 1:
            ax.text(j + 0.5, i + 0.5, f"{100 * v:.0f}", ha="center", va="center", fontsize=CELL_PT,
                    color="white" if v > 0.6 else "0.15")


def confusions(labels: pd.DataFrame, facet: str, conditions: Sequence[str]) -> plt.Figure:
    """Row-normalised confusion matrices of mapped answers vs labels, one panel per condition, wrapped into rows
    of at most three; class names once per row, answers under each column's lowest panel, one colorbar."""
    conds = [c for c in conditions if c in set(labels["condition"])] or ["(none)"]
    classes = sorted(set(labels["label"].dropna()))
    answers = [*classes, "none"]
    n_rows, n_cols = _grid(len(conds))
    longest = max((len(c) for c in answers), default=4)
    panel_w, panel_h = max(1.5, CELL_IN * len(answers)), max(0.9, CELL_IN * len(classes))
    ticks_in = 0.3 + 0.055 * longest  # class names, turned 45°, plus the axis label
    n_label_rows = 1 if len(conds) % n_cols == 0 else min(2, n_rows)  # a short last row: labels above it too
    fig = plt.figure(layout="constrained", figsize=(
        0.4 + 0.07 * longest + n_cols * (panel_w + 0.2) + (0.9 if classes else 0),
        0.4 + n_rows * (panel_h + 0.35) + n_label_rows * ticks_in))
    gs = fig.add_gridspec(n_rows, n_cols)
    groups = [labels[(labels["condition"] == c) & labels["label"].notna()] for c in conds]
    cells = [bool(len(g) and classes) for g in groups]
    panels: list[plt.Axes] = []
    mesh, ref = None, None  # ref: the first panel with cells; the others share its axes
    for k, (cond, g, has_cells) in enumerate(zip(conds, groups, cells)):
        ax = fig.add_subplot(gs[k // n_cols, k % n_cols], sharex=ref if has_cells else None,
                             sharey=ref if has_cells else None)
        panels.append(ax)
        ref = ref or (ax if has_cells else None)
        # class names on the first panel with cells in its row, answers on the lowest one in its column
        first_in_row = not any(cells[k - k % n_cols:k])
        lowest_in_column = not any(cells[k + n_cols::n_cols])
        ax.set_title(cond, fontsize=9)
        if not has_cells:
            ax.set(xticks=[], yticks=[])
            ax.text(0.5, 0.5, "no label mappings", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            continue
        m = pd.crosstab(g["label"], g["mapped"].fillna("none"), normalize="index").reindex(
            index=classes, columns=answers, fill_value=0.0).clip(lower=0.0).to_numpy()
        mesh = ax.pcolormesh(m, vmin=0, vmax=1, cmap="Blues", edgecolors="white", linewidth=0.5)
        _cells(ax, m)
        ax.set_xticks(np.arange(len(answers)) + 0.5, answers)  # shared: every panel has the same cells
        ax.set_yticks(np.arange(len(classes)) + 0.5, classes)
        ax.set_ylim(len(classes), 0)  # first class on top, as a table reads
        ax.tick_params(labelsize=8, length=0, labelleft=first_in_row, labelbottom=lowest_in_column)
        for t in ax.get_xticklabels():
            t.set(rotation=45, ha="right", rotation_mode="anchor")
        ax.set(xlabel="answer mapped to" if lowest_in_column else "", ylabel="true label" if first_in_row else "")
    if mesh is not None:
        cbar = fig.colorbar(mesh, ax=panels, shrink=min(1.0, 0.5 + 0.25 * n_rows), aspect=12 * n_rows,
                            label="share of the true class")
        cbar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        cbar.ax.tick_params(labelsize=8)
    fig.suptitle(f"{facet}: confusion per condition", fontsize=10)
    return fig


def va_scatter(segments: pd.DataFrame) -> plt.Figure:
    fig, ax = _figure(5.5, 4.0)
    if len(segments):
        sns.scatterplot(segments, x="valence", y="arousal", hue="emotion", s=12, alpha=0.6, ax=ax)
        _legend_outside(ax, "emotion")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="valence", ylabel="arousal")
    ax.set_title("Valence / arousal by emotion (ground truth)", fontsize=10)
    return fig


def qa_types(mix: pd.DataFrame) -> plt.Figure:
    """Question-type counts before and after the post-filters, per QA kind."""
    n = len(mix)
    fig, ax = _figure(max(6.0, 2.0 + 0.6 * n), 3.5)
    if n:
        long = mix.melt(id_vars=[c for c in ("kind", "question_type") if c in mix],
                        value_vars=[c for c in ("n_before", "n_after") if c in mix], var_name="when", value_name="n")
        long["what"] = ((long["kind"].astype(str) + " ") if "kind" in long else "") + long["question_type"].astype(str)
        sns.barplot(long, x="what", y="n", hue="when", ax=ax)
        _legend_outside(ax)
    ax.set(xlabel="", ylabel="QA pairs", title="QA type mix before / after filters")
    fit_xticklabels(ax)
    return fig


def loss_curves(logs: pd.DataFrame) -> plt.Figure:
    fig, ax = _figure(6.5, 3.2)
    if len(logs):
        sns.lineplot(logs, x="step", y="loss", hue="condition", ax=ax)
        _legend_outside(ax, "condition")
    ax.set(title="Training loss (answer tokens only)", yscale="log" if len(logs) and (logs["loss"] > 0).all() else "linear")
    return fig


def empty_note(text: str, width_chars: int = 60) -> plt.Figure:
    """A figure that says why it is empty; wrapped here (matplotlib's wrap=True ignores bbox "tight")."""
    lines = textwrap.fill(text, width_chars)
    fig, ax = _figure(4.5, 0.4 + 0.16 * (lines.count("\n") + 1))
    ax.axis("off")
    ax.text(0.5, 0.5, lines, ha="center", va="center", fontsize=8)
    return fig
