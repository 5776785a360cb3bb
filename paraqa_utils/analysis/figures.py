"""The paper's figures from this run's tables and upstream artifacts (missing inputs give empty-note figures)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from paraqa_utils import plots, runs
from paraqa_utils.analysis.tables import MAIN_SET, Inputs


def judge_accuracy_points(main: pd.DataFrame, classification: pd.DataFrame) -> pd.DataFrame:
    """Per judge and condition: the micro judge score beside the emotion UA (empty when either is missing)."""
    ua = (classification[classification["test_set"] == "emotion"].set_index("condition")["ua"]
          if len(classification) else pd.Series(dtype=float))
    if not (len(main) and len(ua)):
        return pd.DataFrame()
    return main[["judge", "condition", "micro"]].rename(columns={"micro": "judge_score"}).merge(
        ua.rename("ua").reset_index(), on="condition")


def draw_figures(stage: runs.Stage, inp: Inputs, scores: pd.DataFrame, main: pd.DataFrame,
                 classification: pd.DataFrame, tables: dict[str, pd.DataFrame], condition_order: Sequence[str],
                 test_set: str = MAIN_SET) -> list[Path]:
    """Scores by type per judge, judge vs accuracy, confusions, valence/arousal, QA types and loss curves, each
    saved as fig_*.png and .pdf in the stage folder; returns every file written."""
    rid, out = stage.run_dir.name, stage.dir
    on_set = scores[scores["test_set"] == test_set]
    figures: list[Path] = []
    for judge in sorted(on_set["judge"].unique()):
        figures += plots.save(plots.scores_by_type(on_set, judge, condition_order), out,
                              f"scores_{judge.replace('/', '_')}", rid)
    figures += plots.save(plots.judge_vs_accuracy(judge_accuracy_points(main, classification), condition_order),
                          out, "judge_vs_accuracy", rid)
    lab_path = inp.path("05_judge/label_mapping.csv")
    labels = pd.read_csv(lab_path) if lab_path else pd.DataFrame(columns=["test_set", "condition", "label", "mapped"])
    for facet in ("emotion", "gender"):
        figures += plots.save(plots.confusions(labels[labels["test_set"] == facet], facet, condition_order),
                              out, f"confusion_{facet}", rid)
    clips = inp.jsonl("00_corpus/clips.jsonl")
    segs = pd.DataFrame([s for segs in clips.get("segments", []) for s in segs])
    figures += plots.save(plots.va_scatter(segs.dropna(subset=["valence", "arousal"]) if len(segs) else segs),
                          out, "va_scatter", rid)
    figures += plots.save(plots.qa_types(tables.get("qa_types", pd.DataFrame())), out, "qa_types", rid)
    trained = [c for c in inp.metrics("04_finetune").get("conditions", {}) if c != "zero_shot"]
    logs = pd.concat([inp.jsonl(f"04_finetune/{c}/train_log.jsonl").assign(condition=c) for c in trained]
                     or [pd.DataFrame()])
    figures += plots.save(plots.loss_curves(logs if "loss" in logs else pd.DataFrame()), out, "loss", rid)
    return figures


def figure_names(figures: list[Path]) -> list[str]:
    """The PNG files among the figures (each figure is also saved as PDF)."""
    return [f.name for f in figures if f.suffix == ".png"]
