"""Figures for papers (seaborn; PNG and PDF), each with the run id in a small footer."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on CI or a cluster; notebooks still show the returned figures
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def save(fig: plt.Figure, out_dir: Path, topic: str, run_id: str) -> list[Path]:
    """fig_<topic>.png and .pdf with the run id in the footer."""
    fig.text(0.995, 0.005, f"ParaQA run {run_id}", ha="right", va="bottom", fontsize=6, color="0.5")
    paths = [out_dir / f"fig_{topic}.{ext}" for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=150 if p.suffix == ".png" else None, bbox_inches="tight", metadata=(
            {"CreationDate": None} if p.suffix == ".pdf" else None))
    plt.close(fig)
    return paths


def scores_by_type(scores: pd.DataFrame, judge: str, order: Sequence[str]) -> plt.Figure:
    """Bars per condition and question type with bootstrap 95 % CIs over items."""
    d = scores[scores["judge"] == judge]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if len(d):
        sns.barplot(d, x="condition", y="score", hue="question_type", order=[o for o in order if o in set(d["condition"])],
                    errorbar=("ci", 95), n_boot=1000, seed=0, ax=ax)
    ax.set(ylabel="judge score (0-100)", xlabel="", title=f"Reference CPQA set · judge {judge}", ylim=(0, 100))
    return fig


def judge_vs_accuracy(points: pd.DataFrame) -> plt.Figure:
    """One point per condition (and judge): judge score on CPQA vs unweighted accuracy on the emotion set."""
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    if len(points):
        sns.scatterplot(points, x="ua", y="judge_score", hue="judge", style="judge", s=60, ax=ax)
        for _, r in points.iterrows():
            ax.annotate(r["condition"], (r["ua"], r["judge_score"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="emotion UA (label mapping)", ylabel="judge score on CPQA (0-100)")
    return fig


def confusions(labels: pd.DataFrame, facet: str, conditions: Sequence[str]) -> plt.Figure:
    """Row-normalised confusion matrices of mapped answers vs labels, one panel per condition."""
    conds = [c for c in conditions if c in set(labels["condition"])] or ["(none)"]
    fig, axes = plt.subplots(1, len(conds), figsize=(3.2 * len(conds), 3.0), squeeze=False)
    classes = sorted(set(labels["label"].dropna()))
    for ax, cond in zip(axes[0], conds):
        g = labels[labels["condition"] == cond]
        m = pd.crosstab(g["label"], g["mapped"].fillna("none"), normalize="index").reindex(
            index=classes, columns=[*classes, "none"], fill_value=0.0) if len(g) else pd.DataFrame()
        if len(m):
            sns.heatmap(m, vmin=0, vmax=1, cmap="Blues", annot=len(classes) <= 6, fmt=".2f", cbar=False, ax=ax)
        ax.set(title=cond, xlabel="answer mapped to", ylabel="true" if ax is axes[0][0] else "")
    fig.suptitle(f"{facet}: confusion per condition", fontsize=9)
    return fig


def va_scatter(segments: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    if len(segments):
        sns.scatterplot(segments, x="valence", y="arousal", hue="emotion", s=12, alpha=0.6, ax=ax)
    ax.set(xlim=(0, 1), ylim=(0, 1), title="Valence / arousal by emotion (ground truth)")
    return fig


def qa_types(mix: pd.DataFrame) -> plt.Figure:
    """Question-type counts before and after the post-filters, per QA kind."""
    fig, ax = plt.subplots(figsize=(6, 3))
    if len(mix):
        long = mix.melt(id_vars=[c for c in ("kind", "question_type") if c in mix],
                        value_vars=[c for c in ("n_before", "n_after") if c in mix], var_name="when", value_name="n")
        long["what"] = ((long["kind"].astype(str) + " ") if "kind" in long else "") + long["question_type"].astype(str)
        sns.barplot(long, x="what", y="n", hue="when", ax=ax)
        ax.tick_params(axis="x", rotation=45)
    ax.set(xlabel="", ylabel="QA pairs", title="QA type mix before / after filters")
    return fig


def loss_curves(logs: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if len(logs):
        sns.lineplot(logs, x="step", y="loss", hue="condition", ax=ax)
    ax.set(title="Training loss (answer tokens only)", yscale="log" if len(logs) and (logs["loss"] > 0).all() else "linear")
    return fig


def empty_note(text: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, wrap=True)
    return fig


