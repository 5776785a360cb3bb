"""paraqa_utils.plots: every figure on tiny data and on empty data, saved as PNG and PDF with the run id."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from paraqa_utils import plots

plt = matplotlib.pyplot
CONDS = ["zero_shot", "baseline", "explicit"]


def saved(fig, tmp_path, topic="t", run_id="20240101-abc"):
    paths = plots.save(fig, tmp_path, topic, run_id)
    assert paths == [tmp_path / f"fig_{topic}.png", tmp_path / f"fig_{topic}.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000
    footers = [t.get_text() for t in fig.texts]
    assert f"ParaQA run {run_id}" in footers
    pixels = np.asarray(Image.open(paths[0]).convert("L"))
    edges = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    assert (edges == 255).all(), "something (the footer?) is cut off at the PNG's edge"
    assert not plt.fignum_exists(fig.number), "save must close the figure (no leak over many figures)"
    return paths


def n_bars(ax) -> int:
    return sum(1 for c in ax.containers for b in c if np.isfinite(b.get_height()) and b.get_height() > 0)


# --- save --------------------------------------------------------------------------------------------------------
def test_save_writes_png_and_pdf_with_the_footer(tmp_path):
    fig, ax = plt.subplots(layout="constrained")
    ax.plot([0, 1], [0, 1])
    ax.set(xlabel="a long x label that reaches the right-hand edge of the axes ......")
    saved(fig, tmp_path, "demo", "20250301T142233Z_full_abc1234")
    footer = next(t for t in fig.texts if t.get_text() == "ParaQA run 20250301T142233Z_full_abc1234")
    fig.canvas = FigureCanvasAgg(fig)  # closed by save; draw it again as it was saved
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    below = footer.get_window_extent(r)
    assert below.y1 < ax.get_tightbbox(r).y0  # under the x label and tick labels, never on them
    assert below.x1 == pytest.approx(ax.get_tightbbox(r).x1) and footer.get_ha() == "right"


def test_save_pdf_is_reproducible(tmp_path):
    """CreationDate is dropped, so the same figure gives the same PDF bytes (artifacts hash stably)."""
    def make():
        fig, ax = plt.subplots()
        ax.bar(["a", "b"], [1, 2])
        return fig
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    a = plots.save(make(), tmp_path / "1", "x", "r")[1].read_bytes()
    b = plots.save(make(), tmp_path / "2", "x", "r")[1].read_bytes()
    assert a == b and b"CreationDate" not in a


# --- each figure on tiny data ------------------------------------------------------------------------------------
def test_scores_by_type(tmp_path):
    rows = [{"judge": j, "condition": c, "question_type": t, "score": s}
            for j in ("judge_a", "judge_b") for c in CONDS[1:] for t in ("emotion", "gender")
            for s in (40.0, 60.0, 80.0)]
    scores = pd.DataFrame(rows)
    fig = plots.scores_by_type(scores, "judge_a", ["explicit", "missing", "baseline"])
    ax = fig.axes[0]
    assert n_bars(ax) == 4  # 2 conditions x 2 question types
    assert [t.get_text() for t in ax.get_xticklabels()] == ["explicit", "baseline"]  # order kept, absent dropped
    assert ax.get_ylim() == (0, 100) and "judge_a" in ax.get_title()
    heights = sorted(b.get_height() for c in ax.containers for b in c)
    assert heights == pytest.approx([60.0] * 4)
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["emotion", "gender"]
    saved(fig, tmp_path, "scores_judge_a")


def test_crowded_condition_names_are_turned_and_short_ones_stay_flat():
    rows = lambda conds: pd.DataFrame([{"judge": "j", "condition": c, "question_type": "C", "score": 50.0}
                                       for c in conds])
    long = [f"implicit_explicit_variant_{i}" for i in range(8)]
    fig = plots.scores_by_type(rows(long), "j", long)
    assert {t.get_rotation() for t in fig.axes[0].get_xticklabels()} == {45.0}
    plt.close(fig)
    fig = plots.scores_by_type(rows(CONDS), "j", CONDS)
    assert {t.get_rotation() for t in fig.axes[0].get_xticklabels()} == {0.0}
    plt.close(fig)


def test_judge_vs_accuracy(tmp_path):
    points = pd.DataFrame({"judge": ["a", "a", "b"], "condition": ["baseline", "explicit", "baseline"],
                           "ua": [0.3, 0.5, 0.3], "judge_score": [40.0, 55.0, 42.0]})
    fig = plots.judge_vs_accuracy(points)
    ax = fig.axes[0]
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(offsets) == 3
    assert sorted(map(tuple, offsets)) == sorted(zip(points["ua"], points["judge_score"]))
    assert not ax.texts  # conditions by colour in a legend: labels beside the points collide when scores are close
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["condition", "baseline", "explicit", "judge", "a", "b"]
    assert plots.judge_vs_accuracy(points, ["explicit", "baseline"]).axes[0].get_legend().get_texts()[1] \
        .get_text() == "explicit"  # the run's condition order
    saved(fig, tmp_path, "judge_vs_accuracy")


def test_confusions(tmp_path):
    labels = pd.DataFrame({"condition": ["baseline"] * 4 + ["explicit"] * 2,
                           "label": ["happy", "happy", "sad", "sad", "happy", "sad"],
                           "mapped": ["happy", "sad", "sad", None, "happy", "sad"]})
    fig = plots.confusions(labels, "emotion", ["zero_shot", "baseline", "explicit"])
    panels, bars = fig.axes[:-1], fig.axes[-1]
    assert [ax.get_title() for ax in panels] == ["baseline", "explicit"]  # one panel per present condition
    assert bars.get_label() == "<colorbar>"  # one colorbar for all panels
    m = panels[0].collections[0].get_array().reshape(2, 3)  # rows happy, sad; columns happy, sad, none
    np.testing.assert_allclose(m, [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(m.sum(axis=1), [1.0, 1.0])  # row-normalised
    np.testing.assert_allclose(panels[1].collections[0].get_array().reshape(2, 3),
                               [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert [t.get_text() for t in panels[0].texts] == ["50"] * 4  # percent of the row; zeros left blank
    assert [t.get_text() for t in panels[1].texts] == ["100"] * 2
    assert panels[0].get_ylabel() == "true label" and panels[1].get_ylabel() == ""
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["happy", "sad"]
    assert panels[1].get_yticklabels() == []  # class names once per row
    assert [t.get_text() for t in panels[1].get_xticklabels()] == ["happy", "sad", "none"]
    assert "emotion" in fig.get_suptitle()
    saved(fig, tmp_path, "confusion_emotion")


def test_va_scatter(tmp_path):
    segs = pd.DataFrame({"valence": [0.1, 0.5, 0.9, 0.7], "arousal": [0.2, 0.4, 0.8, 0.3],
                         "emotion": ["sad", "neutral", "happy", "happy"]})
    fig = plots.va_scatter(segs)
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 4
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["happy", "neutral", "sad"]
    saved(fig, tmp_path, "va_scatter")


def test_qa_types(tmp_path):
    mix = pd.DataFrame({"kind": ["cpqa", "cpqa", "emotion"], "question_type": ["why", "what", "label"],
                        "n_before": [10, 6, 4], "n_after": [8, 6, 1], "share_before": [0.6, 0.4, 1.0]})
    fig = plots.qa_types(mix)
    ax = fig.axes[0]
    assert n_bars(ax) == 6  # 3 types x before/after
    assert sorted(b.get_height() for c in ax.containers for b in c) == [1, 4, 6, 6, 8, 10]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cpqa why", "cpqa what", "emotion label"]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["n_after", "n_before"]
    saved(fig, tmp_path, "qa_types")


def test_qa_types_without_a_kind_column():
    fig = plots.qa_types(pd.DataFrame({"question_type": ["why"], "n_before": [3], "n_after": [2]}))
    assert n_bars(fig.axes[0]) == 2


def test_loss_curves(tmp_path):
    logs = pd.DataFrame({"step": [1, 2, 3] * 2, "loss": [3.0, 2.0, 1.5, 2.5, 1.8, 1.2],
                         "condition": ["baseline"] * 3 + ["explicit"] * 3})
    fig = plots.loss_curves(logs)
    ax = fig.axes[0]
    lines = [ln for ln in ax.lines if len(ln.get_xdata())]
    assert len(lines) == 2 and all(list(ln.get_xdata()) == [1, 2, 3] for ln in lines)
    assert sorted(tuple(ln.get_ydata()) for ln in lines) == [(2.5, 1.8, 1.2), (3.0, 2.0, 1.5)]
    assert ax.get_yscale() == "log"
    saved(fig, tmp_path, "loss")


def test_loss_curves_with_a_zero_loss_stay_linear():
    logs = pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.0], "condition": ["baseline"] * 2})
    fig = plots.loss_curves(logs)
    assert fig.axes[0].get_yscale() == "linear"
    plt.close(fig)


# --- empty inputs: a figure with no data, never a crash ----------------------------------------------------------
@pytest.mark.parametrize("name, make", [
    ("scores", lambda: plots.scores_by_type(pd.DataFrame(columns=["judge", "condition", "question_type", "score"]),
                                            "j", CONDS)),
    ("scores_other_judge", lambda: plots.scores_by_type(pd.DataFrame(
        {"judge": ["a"], "condition": ["baseline"], "question_type": ["x"], "score": [50.0]}), "b", CONDS)),
    ("judge_vs_accuracy", lambda: plots.judge_vs_accuracy(pd.DataFrame())),
    ("confusion", lambda: plots.confusions(pd.DataFrame(columns=["test_set", "condition", "label", "mapped"]),
                                           "gender", CONDS)),
    ("va_scatter", lambda: plots.va_scatter(pd.DataFrame())),
    ("qa_types", lambda: plots.qa_types(pd.DataFrame())),
    ("loss", lambda: plots.loss_curves(pd.DataFrame())),
])
def test_empty_data_gives_an_empty_figure_that_saves(tmp_path, name, make):
    fig = make()
    for ax in fig.axes:
        assert n_bars(ax) == 0 and not any(len(ln.get_xdata()) for ln in ax.lines)
        assert not any(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets"))
    saved(fig, tmp_path, f"empty_{name}")


def test_confusions_never_print_zero_or_negative_zero():
    """crosstab can give -0.0 and shares that round to 0: neither is printed."""
    labels = pd.DataFrame({"condition": ["baseline"] * 301, "label": ["happy"] * 300 + ["sad"],
                           "mapped": ["happy"] * 299 + ["sad", "sad"]})
    fig = plots.confusions(labels, "emotion", ["baseline"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["100", "100"]  # 299/300 shows as 100; 1/300 as nothing
    plt.close(fig)


def test_confusions_wrap_into_rows_of_at_most_three():
    for n, rows in ((1, 1), (3, 1), (4, 2), (6, 2), (7, 3)):
        conds = [f"condition_{i}" for i in range(n)]
        labels = pd.DataFrame({"condition": conds * 2, "label": ["a"] * n + ["b"] * n, "mapped": ["a"] * 2 * n})
        fig = plots.confusions(labels, "gender", conds)
        panels = fig.axes[:-1]
        assert len(panels) == n and len({round(ax.get_position().y0, 3) for ax in panels}) == rows
        assert max(sum(1 for a in panels if a.get_subplotspec().rowspan.start == r) for r in range(rows)) <= 3
        plt.close(fig)


def test_confusions_without_data_is_one_placeholder_panel():
    fig = plots.confusions(pd.DataFrame(columns=["condition", "label", "mapped"]), "gender", CONDS)
    assert [ax.get_title() for ax in fig.axes] == ["(none)"] and not fig.axes[0].collections
    plt.close(fig)


def test_empty_note(tmp_path):
    fig = plots.empty_note("no judge scores in this run")
    ax = fig.axes[0]
    assert not ax.axison
    assert [t.get_text() for t in ax.texts] == ["no judge scores in this run"]
    assert ax.texts[0].get_position() == (0.5, 0.5)
    saved(fig, tmp_path, "empty_note")
    long = plots.empty_note("word " * 40)
    assert long.axes[0].texts[0].get_text().count("\n") >= 2  # wrapped here, and the figure grows with it
    assert long.get_size_inches()[1] > fig.get_size_inches()[1]
    plt.close(long)
