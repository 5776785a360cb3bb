"""Every figure of stage 06, drawn for a run with six conditions and long names, has no overlapping text.

After a draw, every Text the renderer really drew (titles, axis and tick labels, legends, cell numbers, notes, the
run stamp) is a box on the canvas (turned with the text when it is rotated). No two boxes may overlap, and no text
may run into the data area of an axes it does not belong to (a panel's class names into the previous panel's cells).
"""
from __future__ import annotations

import itertools

import matplotlib
import matplotlib.text
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from paraqa_utils import analysis, plots, runs

plt = matplotlib.pyplot
CONDS = ["zero_shot", "baseline", "pqa_star", "implicit", "explicit", "implicit_explicit"]
EMOTIONS = ["angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised"]
TOLERANCE_PX = 1.0  # boxes that overlap by less than this count as touching, not overlapping


# --- the geometry of drawn text -----------------------------------------------------------------------------------
def drawn_texts(fig, monkeypatch) -> list[matplotlib.text.Text]:
    """Draw the figure and return the Text artists the renderer drew (visible, non-empty, not culled)."""
    if not hasattr(fig.canvas, "get_renderer"):  # plots.save closed it: pyplot left it a bare canvas
        FigureCanvasAgg(fig)
    seen: list[matplotlib.text.Text] = []
    original = matplotlib.text.Text.draw

    def recording(self, renderer):
        if self.get_visible() and self.get_text().strip():
            seen.append(self)
        return original(self, renderer)

    with monkeypatch.context() as m:
        m.setattr(matplotlib.text.Text, "draw", recording)
        fig.canvas.draw()
    return list({id(t): t for t in seen}.values())


def corners(t: matplotlib.text.Text, renderer) -> np.ndarray:
    """The four corners of a text's box on the canvas; a rotated text gives a turned rectangle, not its hull."""
    bb = t.get_window_extent(renderer)
    a = np.deg2rad(t.get_rotation())
    if np.isclose(np.sin(2 * a), 0):
        return np.array([[bb.x0, bb.y0], [bb.x1, bb.y0], [bb.x1, bb.y1], [bb.x0, bb.y1]])
    rotation = t.get_rotation()
    t.set_rotation(0)
    w, h = t.get_window_extent(renderer).size
    t.set_rotation(rotation)
    c = np.array([(bb.x0 + bb.x1) / 2, (bb.y0 + bb.y1) / 2])  # a turned box's hull shares its centre
    u, v = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    return np.array([c + sx * w / 2 * u + sy * h / 2 * v for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])


def overlap(p: np.ndarray, q: np.ndarray, tol: float = TOLERANCE_PX) -> bool:
    """Separating-axis test for two convex quadrilaterals."""
    for poly in (p, q):
        for i in range(4):
            e = poly[(i + 1) % 4] - poly[i]
            n = np.array([-e[1], e[0]]) / np.hypot(*e)
            a, b = p @ n, q @ n
            if a.max() - tol <= b.min() or b.max() - tol <= a.min():
                return False
    return True


def box(bb) -> np.ndarray:
    return np.array([[bb.x0, bb.y0], [bb.x1, bb.y0], [bb.x1, bb.y1], [bb.x0, bb.y1]])


def text_clashes(fig, monkeypatch) -> list[str]:
    """Each pair of overlapping texts, and each text inside another axes' data area, in words."""
    texts = drawn_texts(fig, monkeypatch)
    r = fig.canvas.get_renderer()
    owner = {id(t): ax for ax in fig.axes for t in ax.findobj(matplotlib.text.Text)}
    boxes = {id(t): corners(t, r) for t in texts}
    out = [f"{t.get_text()!r} overlaps {s.get_text()!r}" for t, s in itertools.combinations(texts, 2)
           if overlap(boxes[id(t)], boxes[id(s)])]
    areas = [(ax, box(ax.get_window_extent(r))) for ax in fig.axes if ax.get_visible() and ax.axison]
    out += [f"{t.get_text()!r} runs into the axes {ax.get_title() or ax.get_label()!r}" for t in texts
            for ax, area in areas if owner.get(id(t)) is not ax and overlap(boxes[id(t)], area)]
    return out


# --- a run with six conditions -----------------------------------------------------------------------------------
def six_condition_inputs(runs_root, seed=0):
    """Upstream stages 00, 04 and 05 and the tables 06 passes to draw_figures, for six conditions."""
    rng = np.random.default_rng(seed)
    run = runs.make_run_dir("full", "20250301T142233Z_full-six-conditions_abc1234")  # a real-length run id
    st0 = runs.Stage(run, "00_corpus")
    runs.write_jsonl(st0.dir / "clips.jsonl", [{"clip_id": f"c{i}", "segments": [
        {"valence": float(rng.random()), "arousal": float(rng.random()), "emotion": EMOTIONS[(i + k) % 7]}
        for k in range(3)]} for i in range(40)])
    st0.finish()
    st4 = runs.Stage(run, "04_finetune")
    st4.write_metrics(conditions={c: {} for c in CONDS})
    for j, c in enumerate(CONDS[1:]):
        runs.write_jsonl(st4.dir / c / "train_log.jsonl",
                         [{"step": s, "loss": float(3.0 * np.exp(-s / (20 + 5 * j)) + 0.4)} for s in range(0, 100, 5)])
    st4.finish()
    st5 = runs.Stage(run, "05_judge")
    rows = []
    for facet, classes in (("emotion", EMOTIONS), ("gender", ["female", "male"])):
        for c in CONDS:
            for i in range(60):
                label = classes[i % len(classes)]
                mapped = rng.choice([label, label, rng.choice(classes), None, "other"])
                rows.append({"test_set": facet, "condition": c, "label": label, "mapped": mapped})
    pd.DataFrame(rows).to_csv(st5.dir / "label_mapping.csv", index=False)
    st5.finish()
    st = runs.Stage(run, "06_analysis")
    judges = ["judge_a", "qwen/Qwen2.5-72B-Instruct"]
    scores = pd.DataFrame([{"judge": j, "condition": c, "test_set": "cpqa_ref", "question_type": t, "item_id": f"i{i}",
                            "score": float(rng.integers(0, 5) * 25)}
                           for j in judges for c in CONDS for t in ("C", "CE", "CG") for i in range(6)])
    main = pd.DataFrame([{"judge": j, "condition": c, "micro": 40.0 + 3 * k + (2.0 if j == "judge_a" else 0.0)}
                         for j in judges for k, c in enumerate(CONDS)])
    classification = pd.DataFrame([{"condition": c, "test_set": "emotion", "ua": 0.30 + 0.01 * k}
                                   for k, c in enumerate(CONDS)])
    kinds = {"cpqa": ["C", "CE", "CG"], "pqa_star": ["emotion", "gender", "emotion_gender"],
             "emotion": ["label"], "gender": ["label"]}
    qa_types = pd.DataFrame([{"kind": k, "question_type": t, "n_before": 40 + 7 * i, "n_after": 30 + 5 * i}
                             for k, ts in kinds.items() for i, t in enumerate(ts)])
    return st, analysis.Inputs(st), scores, main, classification, {"qa_types": qa_types}


def draw_run(runs_root, monkeypatch):
    """draw_figures (what notebook 06 calls) on six conditions; returns {topic: figure} as saved, stamp included."""
    drawn: dict[str, plt.Figure] = {}
    save = plots.save

    def keeping(fig, out_dir, topic, run_id):
        drawn[topic] = fig
        return save(fig, out_dir, topic, run_id)

    monkeypatch.setattr(plots, "save", keeping)
    st, inp, scores, main, classification, tables = six_condition_inputs(runs_root)
    files = analysis.draw_figures(st, inp, scores, main, classification, tables, CONDS)
    assert not inp.missing and len(files) == 2 * len(drawn)
    return drawn


# --- the tests -----------------------------------------------------------------------------------------------------
def test_the_detector_sees_overlapping_and_rotated_text(monkeypatch):
    """The check itself: two texts on one spot clash; turned labels clash only where the letters would."""
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.text(0.5, 0.5, "a long label")
    ax.text(0.52, 0.5, "another label")
    assert any("overlaps" in c for c in text_clashes(fig, monkeypatch))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.set_xticks(range(6), [f"condition_{i}_long" for i in range(6)], rotation=45, ha="right",
                  rotation_mode="anchor")
    ax.set(xlim=(-0.5, 5.5), yticks=[])
    assert text_clashes(fig, monkeypatch) == []  # their hulls overlap, their turned boxes do not
    plt.close(fig)


def test_every_figure_of_a_six_condition_run_has_no_overlapping_text(runs_root, monkeypatch):
    drawn = draw_run(runs_root, monkeypatch)
    assert sorted(drawn) == sorted(["scores_judge_a", "scores_qwen_Qwen2.5-72B-Instruct", "judge_vs_accuracy",
                                    "confusion_emotion", "confusion_gender", "va_scatter", "qa_types", "loss"])
    clashes = [f"fig_{topic}: {c}" for topic, fig in drawn.items() for c in text_clashes(fig, monkeypatch)]
    assert not clashes, f"{len(clashes)} text clashes:\n" + "\n".join(clashes)


def test_the_confusion_figure_wraps_six_conditions_into_rows_with_shared_class_names(runs_root, monkeypatch):
    fig = draw_run(runs_root, monkeypatch)["confusion_emotion"]
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == CONDS
    rows = sorted({round(ax.get_position().y0, 3) for ax in panels}, reverse=True)
    assert len(rows) == 2  # at most three panels a row
    for ax in panels:
        first_in_row = ax.get_position().x0 == min(a.get_position().x0 for a in panels)
        shown = [t.get_text() for t in ax.get_yticklabels()]  # the visible ones only
        assert shown == (EMOTIONS if first_in_row else []), ax.get_title()
        assert ax.get_ylabel() == ("true label" if first_in_row else "")
        in_bottom_row = ax.get_position().y0 == min(a.get_position().y0 for a in panels)
        assert bool(ax.get_xticklabels()) == in_bottom_row and (ax.get_xlabel() != "") == in_bottom_row
    assert len(fig.axes) - len(panels) == 1  # one shared colorbar
    cells = [t.get_text() for ax in panels for t in ax.texts]
    assert cells and all(t and t.strip("-0.%") for t in cells)  # no zero and no "-0.00" printed


@pytest.mark.parametrize("make", [
    lambda: plots.empty_note("no judge scores in this run: stage 05 did not finish, so the per-judge figures are "
                             "left out; rerun it with python -m paraqa_utils.pipeline --resume RUN --only 05_judge"),
    lambda: plots.confusions(pd.DataFrame(columns=["condition", "label", "mapped"]), "gender", CONDS),
    lambda: plots.scores_by_type(pd.DataFrame(columns=["judge", "condition", "question_type", "score"]), "j", CONDS),
    lambda: plots.judge_vs_accuracy(pd.DataFrame()),
    lambda: plots.va_scatter(pd.DataFrame()),
    lambda: plots.qa_types(pd.DataFrame()),
    lambda: plots.loss_curves(pd.DataFrame()),
], ids=["empty_note", "confusion", "scores", "judge_vs_accuracy", "va_scatter", "qa_types", "loss"])
def test_empty_figures_have_no_overlapping_text(tmp_path, monkeypatch, make):
    fig = make()
    plots.save(fig, tmp_path, "t", "20250301T142233Z_full-six-conditions_abc1234")
    clashes = text_clashes(fig, monkeypatch)
    assert not clashes, "\n".join(clashes)
