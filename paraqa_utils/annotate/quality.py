"""Annotator quality against ground truth: accuracy, unweighted accuracy, macro-F1, CCC, and their figures."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from paraqa_utils.text import DIMENSIONS


def categorical_scores(truth: Sequence, pred: Sequence) -> dict[str, Any]:
    """Accuracy, unweighted accuracy (mean recall over the true classes) and macro-F1 over the true classes.

    Items without a true label are skipped; an item the annotator left unlabelled counts as wrong.
    """
    from sklearn.metrics import f1_score

    pairs = [(t, "∅" if p is None else p) for t, p in zip(truth, pred) if t is not None]
    if not pairs:
        return {"n": 0, "accuracy": None, "uar": None, "macro_f1": None}
    t, p = zip(*pairs)
    classes = sorted(set(t))
    recalls = [np.mean([pi == c for ti, pi in pairs if ti == c]) for c in classes]
    return {"n": len(pairs), "accuracy": round(float(np.mean(np.array(t) == np.array(p))), 4),
            "uar": round(float(np.mean(recalls)), 4),
            "macro_f1": round(float(f1_score(t, p, labels=classes, average="macro", zero_division=0)), 4),
            "recall": {c: round(float(r), 4) for c, r in zip(classes, recalls)}}


def ccc(truth: Sequence[float | None], pred: Sequence[float | None]) -> float | None:
    """Lin's concordance correlation coefficient (agreement in correlation *and* scale/offset)."""
    pairs = [(t, p) for t, p in zip(truth, pred) if t is not None and p is not None]
    if len(pairs) < 2:
        return None
    x, y = np.asarray(pairs, dtype=float).T
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    denom = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    return round(float(2 * cov / denom), 4) if denom > 0 else None


def confusion(truth: Sequence, pred: Sequence, classes: Sequence[str] | None = None):
    """Confusion counts as a DataFrame (rows: truth, columns: prediction)."""
    import pandas as pd

    pairs = [(t, "∅" if p is None else p) for t, p in zip(truth, pred) if t is not None]
    classes = list(classes or sorted({t for t, _ in pairs}))
    cols = classes + sorted({p for _, p in pairs} - set(classes))
    m = pd.DataFrame(0, index=pd.Index(classes, name="truth"), columns=pd.Index(cols, name="predicted"))
    for t, p in pairs:
        m.loc[t, p] += 1
    return m


def plot_confusion(matrix, title: str, path: Path | None = None):
    """Row-normalised heatmap with counts; saved to `path` (png) when given."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    norm = matrix.div(matrix.sum(axis=1).replace(0, 1), axis=0)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * matrix.shape[1], 1.0 + 0.7 * matrix.shape[0]))
    sns.heatmap(norm, annot=matrix.values, fmt="d", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
    return fig


def plot_condensation(table, path: Path | None = None):
    """Stacked bars of kept vs dropped windows per emotion (table: index emotion, columns kept/dropped)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    table.plot.bar(stacked=True, ax=ax, color=["#4c72b0", "#dd8452"][:table.shape[1]])
    ax.set_ylabel("windows")
    ax.set_title("condensation: kept vs dropped per predicted emotion")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
    return fig


def kept_windows(records: Sequence[dict], labels: dict[str, Any]) -> set[int]:
    """Global indices of the windows that survive condensation (kept window of a kept clip)."""
    return {labels["index"][(r["clip_id"], k)] for r in records if r["kept"]
            for k, s in enumerate(r["segments"]) if s["kept"]}


def evaluate(records: Sequence[dict], labels: dict[str, Any], asr_info: dict[str, Any],
             split: str = "test") -> dict[str, Any]:
    """Window-level quality on one split, per backend and final, before and after condensation (+ counts).

    A window's truth is the corpus segment it overlaps most. 'condensed' = kept windows of kept clips.
    """
    gt, kept = labels["gt"], kept_windows(records, labels)
    on = [i for i, r in enumerate(gt) if r["split"] == split]
    after = [i for i in on if i in kept]
    m: dict[str, Any] = {"split_evaluated": split, "n_clips": len(records),
                         "n_kept_clips": sum(r["kept"] for r in records),
                         "n_windows": len(gt), "n_kept_windows": len(kept),
                         "drop_reasons": dict(Counter(_reason_kind(r["drop_reason"]) for r in records
                                                      if not r["kept"])),
                         "backends": labels["backends"], "wer": asr_info.get("wer"),
                         "wer_test": asr_info.get("wer_test")}
    for task in ("emotion", "gender"):
        res = {}
        for name, (pred, _) in [*labels[task]["members"].items(), ("final", labels[task]["final"])]:
            res[name] = {"all": categorical_scores([gt[i][task] for i in on], [pred[i] for i in on]),
                         "condensed": categorical_scores([gt[i][task] for i in after], [pred[i] for i in after])}
        m[task] = res
    dims: dict[str, dict] = {}
    for name, (pred, _) in [*labels["dimensional"]["members"].items(), ("final", labels["dimensional"]["final"])]:
        for when, idx in (("all", on), ("condensed", after)):
            dims.setdefault(name, {})[when] = {
                d: ccc([gt[i]["dimensional"][j] if gt[i]["dimensional"] else None for i in idx],
                       [pred[i][j] if pred[i] is not None else None for i in idx]) for j, d in enumerate(DIMENSIONS)}
    m["ccc"] = dims
    fe, fg = m["emotion"]["final"], m["gender"]["final"]
    m.update({f"{k}_test": fe["all"][k] for k in ("accuracy", "uar", "macro_f1")})
    m.update({f"{k}_test_condensed": fe["condensed"][k] for k in ("accuracy", "uar", "macro_f1")})
    m.update({f"ccc_{d}_test": dims["final"]["all"][d] for d in DIMENSIONS})
    m.update({f"ccc_{d}_test_condensed": dims["final"]["condensed"][d] for d in DIMENSIONS})
    m["gender_accuracy_test"] = fg["all"]["accuracy"]
    m["gender_accuracy_test_condensed"] = fg["condensed"]["accuracy"]
    m["n_windows_with_truth"] = {t: sum(r[t] is not None for r in gt) for t in ("emotion", "gender")}
    m["predicted"] = predicted_labels(labels, sorted(kept))
    return m


def predicted_labels(labels: dict[str, Any], idx: Sequence[int]) -> dict[str, Any]:
    """What the final annotators said over the kept windows of every split: the one summary an unlabelled corpus
    has (no truth to score against). Label counts per task and the mean of each dimension."""
    out: dict[str, Any] = {"n_windows": len(idx)}
    for task in ("emotion", "gender"):
        pred = labels[task]["final"][0]
        out[task] = dict(sorted(Counter(str(pred[i]) for i in idx if pred[i] is not None).items()))
    dims = [labels["dimensional"]["final"][0][i] for i in idx]
    dims = [d for d in dims if d is not None]
    out["dimensional_mean"] = ({d: round(float(np.mean([v[j] for v in dims])), 3) for j, d in enumerate(DIMENSIONS)}
                               if dims else None)
    return out


def _reason_kind(reason: str | None) -> str:
    """'inconsistent: sad with positive valence 0.62' -> 'inconsistent: sad with positive valence'."""
    import re

    text = (reason or "").split("(")[0]
    if text.startswith("inconsistent"):
        return re.sub(r"\s*[\d.]+$", "", text.strip())
    return text.split(":")[0].strip() or "none"


def reject_summary(rejects: Sequence[dict]):
    """Dropped clips and windows counted per level and kind of reason (numbers stripped from the reasons)."""
    import pandas as pd

    if not rejects:
        return pd.DataFrame(columns=["level", "reason", "n"])
    df = pd.DataFrame([{"level": r["level"], "reason": _reason_kind(r["reason"])} for r in rejects])
    return df.groupby(["level", "reason"]).size().rename("n").reset_index()


def condensation_table(records: Sequence[dict]):
    """Windows kept vs dropped per predicted emotion (a window of a dropped clip counts as dropped)."""
    import pandas as pd

    rows = [{"emotion": s["emotion"] or "none", "kept": bool(r["kept"] and s["kept"])}
            for r in records for s in r["segments"]]
    if not rows:
        return pd.DataFrame(columns=["kept", "dropped"])
    df = pd.DataFrame(rows)
    tab = df.groupby("emotion")["kept"].agg(kept="sum", total="count")
    tab["dropped"] = tab["total"] - tab["kept"]
    return tab[["kept", "dropped"]].astype(int)


def timing_metrics(prep: Any, asr_info: dict[str, Any], labels: dict[str, Any]) -> dict[str, Any]:
    """Real-time factors (compute seconds per audio second, cache misses only), wall time per step, clips/s."""
    rtf = {k: round(prep.compute_s[k] / prep.audio_s[k], 4) for k in prep.compute_s if prep.audio_s.get(k)}
    if asr_info.get("audio_s"):
        rtf[f"asr:{asr_info['backend']}"] = round(asr_info["compute_s"] / asr_info["audio_s"], 4)
    audio_s = sum(p["duration_s"] for p in prep.clips.values() if p["status"] == "ok")
    for k, v in labels["compute_s"].items():  # includes the acoustic recogniser's training
        rtf[f"label:{k}"] = round(v / audio_s, 4) if audio_s else None
    wall = {"prepare": prep.wall_s, "transcribe": asr_info["wall_s"], "label": labels["wall_s"]}
    return {"rtf": rtf, "wall_s": wall, "audio_s": round(audio_s, 3), "n_cached_clips": prep.n_cached,
            "n_cached_asr": asr_info.get("n_cached", 0),
            "n_asr_retried_alone": asr_info.get("n_retried_alone", 0),  # pack members with no words, redone alone
            "n_align_errors": len(asr_info.get("align_errors") or {}),
            "clips_per_s": round(len(prep.clips) / max(1e-9, sum(wall.values())), 3)}


def quality_table(metrics: dict[str, Any]):
    """One row per backend (and final) for emotion and gender: accuracy, UAR, macro-F1 before/after condensing."""
    import pandas as pd

    rows = []
    for task in ("emotion", "gender"):
        for name, res in metrics[task].items():
            for when in ("all", "condensed"):
                r = res[when]
                rows.append({"task": task, "backend": name, "windows": when, "n": r["n"], "accuracy": r["accuracy"],
                             "uar": r["uar"], "macro_f1": r["macro_f1"]})
    return pd.DataFrame(rows).set_index(["task", "backend", "windows"])


def confusion_on(labels: dict[str, Any], task: str = "emotion", split: str = "test"):
    """Confusion matrix of the final labels against ground truth on one split."""
    gt, pred = labels["gt"], labels[task]["final"][0]
    on = [i for i, r in enumerate(gt) if r["split"] == split]
    return confusion([gt[i][task] for i in on], [pred[i] for i in on])
