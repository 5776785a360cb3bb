"""Non-LLM scorers (answer -> label, reference similarity) and the judge's own validation."""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from paraqa_utils import stats
from paraqa_utils.judge.validity import judge_verdict
from paraqa_utils.text import Embed, label_lexicon, mentions, normalise, wer

LEXICON_FILE = "label_words_v1.txt"
# Label descriptions the embedding fallback compares answers with (our wording).
DESCRIPTIONS = {
    "emotion": {"neutral": "The speaker sounds calm and neutral.", "happy": "The speaker sounds happy and cheerful.",
                "sad": "The speaker sounds sad and unhappy.", "angry": "The speaker sounds angry and annoyed.",
                "fearful": "The speaker sounds afraid and nervous.",
                "surprised": "The speaker sounds surprised and astonished."},
    "gender": {"female": "The speaker is a woman.", "male": "The speaker is a man."}}


def map_labels(answers: Sequence[str], facet: str, labels: Sequence[str], embed: Embed | None,
               min_similarity: float) -> list[tuple[str | None, str]]:
    """Each answer -> (label or None, method): a unique keyword label first, else the nearest description.

    Keyword hits naming several labels are ambiguous and go to the embedding step too; below `min_similarity`
    the answer maps to None (counted as wrong by the metrics, never dropped).
    """
    lex = {w: ls & set(labels) for w, ls in label_lexicon(LEXICON_FILE).get(facet, {}).items() if ls & set(labels)}
    out: list[tuple[str | None, str] | None] = []
    pending = []
    for i, ans in enumerate(answers):
        found = Counter(lab for _, ls in mentions(ans or "", lex, set()) for lab in ls)
        top = found.most_common(2)
        if top and (len(top) == 1 or top[0][1] > top[1][1]):
            out.append((top[0][0], "keyword"))
        else:
            out.append(None)
            pending.append(i)
    if pending and embed is not None and (ans_texts := [answers[i] or "" for i in pending]):
        descs = [DESCRIPTIONS[facet].get(lab, lab) for lab in labels]
        sims = embed(ans_texts) @ embed(descs).T
        for row, i in enumerate(pending):
            j = int(np.argmax(sims[row]))
            out[i] = (labels[j], "embedding") if sims[row, j] >= min_similarity and answers[i] else (None, "none")
    return [o if o is not None else (None, "none") for o in out]


def reference_similarity(answers: Sequence[str], references: Sequence[str], embed: Embed) -> np.ndarray:
    """Cosine of MiniLM embeddings between each answer and its reference (rows are L2-normalised)."""
    if not answers:
        return np.zeros(0)
    a, r = embed([x or "" for x in answers]), embed(list(references))
    return np.sum(a * r, axis=1)


ASR_COLUMNS = ["condition", "wer", "n_items", "n_ref_words", "n_empty_answers"]


def asr_table(items: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Corpus WER (text.wer: edits over reference words, after normalising) per condition, with its counts."""
    rows = []
    for cond in dict.fromkeys(it["condition"] for it in items):
        refs = [it["reference"] for it in items if it["condition"] == cond]
        hyps = [it.get("answer") or "" for it in items if it["condition"] == cond]
        rows.append({"condition": cond, "wer": wer(refs, hyps), "n_items": len(refs),
                     "n_ref_words": sum(len(normalise(r)) for r in refs),
                     "n_empty_answers": sum(not h.strip() for h in hyps)})
    return pd.DataFrame(rows, columns=ASR_COLUMNS)


def classification_table(items: pd.DataFrame) -> pd.DataFrame:
    """WA / UA / macro-F1 per condition and test set from columns condition, test_set, label, mapped."""
    rows = []
    for (cond, tset), g in items.groupby(["condition", "test_set"]):
        s = stats.classification_scores(g["label"].tolist(), g["mapped"].tolist())
        rows.append({"condition": cond, "test_set": tset, **s})
    return pd.DataFrame(rows)


def correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Pearson, Spearman and Kendall with n; all None below 3 items or when either side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return {"pearson": None, "spearman": None, "kendall": None, "n": int(len(x))}
    return {"pearson": float(sps.pearsonr(x, y)[0]), "spearman": float(sps.spearmanr(x, y)[0]),
            "kendall": float(sps.kendalltau(x, y)[0]), "n": int(len(x))}


def judge_vs_correctness(j: pd.DataFrame) -> dict[str, Any]:
    """Correlation of judge scores with label correctness, per item and per condition (classification sets)."""
    out: dict[str, Any] = {}
    for judge, g in j.groupby("judge"):
        per_cond = g.groupby("condition").agg(score=("score_100", "mean"), correct=("correct", "mean"))
        out[judge] = {"per_item": correlations(g["score_100"], g["correct"]),
                      "per_condition": correlations(per_cond["score"], per_cond["correct"])}
    return out


def ranking_agreement(judge_means: pd.Series, ua: pd.Series) -> dict[str, Any]:
    """Do judge and UA rank the conditions the same way? Kendall tau and the two orders."""
    common = judge_means.index.intersection(ua.index)
    res: dict[str, Any] = {"judge_order": judge_means[common].sort_values(ascending=False).index.tolist(),
                           "ua_order": ua[common].sort_values(ascending=False).index.tolist()}
    tau = sps.kendalltau(judge_means[common], ua[common])[0] if len(common) >= 2 else float("nan")
    res["kendall_tau"] = None if np.isnan(tau) else float(tau)
    return res


def judge_agreement(j: pd.DataFrame) -> dict[str, Any]:
    """Pairwise agreement between judges on the same items (same 0-100 scale): correlation and mean gap."""
    wide = j.pivot_table(index=["item_id", "condition"], columns="judge", values="score_100", aggfunc="mean")
    names, out = list(wide.columns), {}
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            pair = wide[[names[a], names[b]]].dropna()
            out[f"{names[a]} vs {names[b]}"] = {**correlations(pair[names[a]], pair[names[b]]),
                                                 "mean_abs_gap": float((pair[names[a]] - pair[names[b]]).abs().mean())
                                                 if len(pair) else None}
    return out


def length_bias(j: pd.DataFrame) -> dict[str, Any]:
    """Judge score vs answer length with correctness held fixed: Spearman within correct and within wrong answers."""
    out = {}
    for judge, g in j.dropna(subset=["correct", "score_100"]).groupby("judge"):
        out[judge] = {("correct" if c else "wrong"): correlations(h["answer_chars"], h["score_100"])
                      for c, h in g.groupby("correct")}
    return out


def probe_items(items: list[dict[str, Any]], seed: int, n: int) -> list[dict[str, Any]]:
    """Reference-swap probes: each answer paired with another item's reference (same test set, other label)."""
    rng = np.random.default_rng(seed)
    pool = [it for it in items if (it.get("answer") or "").strip()]
    picked = [pool[i] for i in rng.permutation(len(pool))[:n]]
    out = []
    for it in picked:
        others = [o for o in items if o["test_set"] == it["test_set"] and o["reference"] != it["reference"]
                  and (o.get("label") is None or o.get("label") != it.get("label"))]
        if others:
            o = others[int(rng.integers(len(others)))]
            out.append({**it, "item_id": f"{it['item_id']}#swap", "reference": o["reference"], "probe": "swap",
                        "probe_of": it["item_id"]})
    return out


def good_probe_items(items: list[dict[str, Any]], seed: int, n: int) -> list[dict[str, Any]]:
    """Reference-swap probes that test the judge, not the models: a known-good answer (the item's own reference)
    scored against its own reference (`good_own`) and against another item's (`good_swap`, same test set, another
    reference). A judge must score the second lower, whatever the models answered."""
    rng = np.random.default_rng(seed + 1)
    pool = list({it["reference"]: it for it in items if (it.get("reference") or "").strip()}.values())
    out = []
    for i in rng.permutation(len(pool))[:n]:
        it = pool[int(i)]
        others = [o for o in pool if o["test_set"] == it["test_set"] and o["reference"] != it["reference"]]
        if not others:
            continue
        o = others[int(rng.integers(len(others)))]
        base = {**it, "answer": it["reference"], "probe_of": it["item_id"]}
        out += [{**base, "item_id": f"{it['item_id']}#good", "probe": "good_own"},
                {**base, "item_id": f"{it['item_id']}#good_swap", "reference": o["reference"], "probe": "good_swap"}]
    return out


def good_swap_report(j: pd.DataFrame) -> dict[str, Any]:
    """Per judge: the known-good answers' mean score with their own reference and with another item's, and the
    share of pairs where the swapped one scored lower (validity's reference_swap check reads this)."""
    out = {}
    for judge, g in j.groupby("judge"):
        g = g.dropna(subset=["score_100"]).assign(of=lambda d: d["item_id"].astype(str).str.split("#").str[0])
        own = g[g["probe"] == "good_own"].groupby("of")["score_100"].mean()
        sw = g[g["probe"] == "good_swap"].groupby("of")["score_100"].mean()
        both = own.index.intersection(sw.index)
        if not len(both) and not len(own) and not len(sw):
            continue
        o, s = own[both].to_numpy(), sw[both].to_numpy()
        out[judge] = {"n": int(len(both)), "mean_original": float(o.mean()) if len(both) else None,
                      "mean_swapped": float(s.mean()) if len(both) else None,
                      "share_swapped_lower": float(np.mean(s < o)) if len(both) else None,
                      "probe": "known-good answer (the reference) with its own vs another item's reference"}
    return out


def swap_report(j: pd.DataFrame) -> dict[str, Any]:
    """Mean judge score for the original pairs vs the swapped-reference probes of the models' answers (the latter
    should be low; information only, as it depends on how good the models' answers are)."""
    out = {}
    for judge, g in j.groupby("judge"):
        sw = g[g["probe"] == "swap"].dropna(subset=["score_100"])
        orig = g[g["probe"].isna()].groupby(["item_id", "condition"])["score_100"].mean().to_dict()
        paired = [(orig.get((pid.split("#")[0], cond)), s)
                  for pid, cond, s in zip(sw["item_id"], sw["condition"], sw["score_100"])]
        paired = [(o, s) for o, s in paired if o is not None and not pd.isna(o)]
        out[judge] = {"n": len(paired), "mean_original": float(np.mean([o for o, _ in paired])) if paired else None,
                      "mean_swapped": float(np.mean([s for _, s in paired])) if paired else None,
                      "share_swapped_lower": float(np.mean([s < o for o, s in paired])) if paired else None,
                      "share_swapped_at_most_1_of_5": float(np.mean([s <= 20 for _, s in paired])) if paired else None}
    return out


def label_table(label_items: list[dict[str, Any]], embed: Embed | None, min_similarity: float) -> pd.DataFrame:
    """Label-set items with each answer mapped to a label (`mapped`, `map_method`) and `correct` (0/1)."""
    lab = pd.DataFrame(label_items)
    if lab.empty:
        return pd.DataFrame(columns=["item_id", "condition", "test_set", "label", "mapped", "map_method", "answer",
                                     "correct"])
    lab["mapped"], lab["map_method"] = None, "none"
    for facet in ("emotion", "gender"):
        sel = lab["test_set"] == facet
        if sel.any():
            mapped = map_labels(lab.loc[sel, "answer"].tolist(), facet, sorted(DESCRIPTIONS[facet]), embed,
                                min_similarity)
            lab.loc[sel, "mapped"] = [m for m, _ in mapped]
            lab.loc[sel, "map_method"] = [how for _, how in mapped]
    lab["correct"] = (lab["mapped"] == lab["label"]).astype(float)
    return lab


def validation_report(judgments: pd.DataFrame, lab: pd.DataFrame, classification: pd.DataFrame,
                      label_sets: Sequence[str], open_sets: Sequence[str],
                      graded: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything validation.json holds: the judge against correctness, UA ranking, other judges and probes, and
    the verdict on them (validity.judge_verdict: the one definition of a judge that passed)."""
    j = judgments
    jl = (j[j["test_set"].isin(label_sets) & j["probe"].isna()].merge(
        lab[["item_id", "condition", "correct"]], on=["item_id", "condition"], how="left") if len(lab) else j.iloc[:0])
    ua = classification.groupby("condition")["ua"].mean() if len(classification) else pd.Series(dtype=float)
    report = {
        "judge_vs_correctness": judge_vs_correctness(jl.dropna(subset=["score_100"])) if len(jl) else {},
        "ranking_vs_ua": {name: ranking_agreement(g.groupby("condition")["score_100"].mean(), ua)
                          for name, g in jl.groupby("judge")},
        "judge_agreement": judge_agreement(j[j["probe"].isna()].dropna(subset=["score_100"])),
        "length_bias": length_bias(jl) if len(jl) else {},
        "reference_swap": good_swap_report(j[j["test_set"].isin(open_sets)]),
        "reference_swap_model_answers": swap_report(j[j["test_set"].isin(open_sets)]),
        "parse_fail_rate": (1 - j.groupby("judge")["parse_ok"].mean()).to_dict(),
        "n_judgments": j.groupby("judge").size().astype(int).to_dict(),
        "graded_set": graded or {},  # judge -> {dev, heldout: {spearman, n, passed, sets}} (panel.graded_agreement)
    }
    return {**report, "verdict": judge_verdict(report)}
