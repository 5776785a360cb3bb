"""Explicit method and training mixtures: label verbalisation, the five conditions, test sets, leakage guards."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import yaml

from paraqa_utils import prompts
from paraqa_utils.text import dominant_label

TEMPLATES_FILE = prompts.path("templates_v1.yaml")
REFERENCE_FILE = prompts.path("reference_qa_v1.yaml")
MODES = ("categories", "numbers", "words")
DIMS = ("valence", "arousal", "dominance")
# Which data sources each condition trains on, and whether the explicit block goes into its prompts (PAPER.md §3).
CONDITIONS: dict[str, dict[str, Any]] = {
    "baseline": {"tasks": ("asr", "emotion", "gender"), "explicit": False},            # S10
    "pqa_star": {"tasks": ("asr", "emotion", "gender", "pqa_star"), "explicit": False},  # S20
    "implicit": {"tasks": ("asr", "emotion", "gender", "pqa_star", "cpqa"), "explicit": False},  # S30
    "implicit_explicit": {"tasks": ("asr", "emotion", "gender", "pqa_star", "cpqa"), "explicit": True},  # S32
    "explicit": {"tasks": ("asr", "emotion", "gender"), "explicit": True},  # isolates the explicit effect
}


class MergeError(RuntimeError):
    """A condition that cannot be built, or a leakage guard that tripped; the message says which and why."""


def load_bank(path: Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def stable_rng(seed: int, *keys: str) -> random.Random:
    """A per-item RNG: the same clip gets the same phrasing whatever else is in the run."""
    digest = hashlib.sha256("|".join([str(seed), *keys]).encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def label_bins(annotations: Iterable[dict[str, Any]]) -> dict[str, list[float]]:
    """Tertile edges of V/A/D over the training split's annotated segments (for low/mid/high words)."""
    vals: dict[str, list[float]] = {d: [] for d in DIMS}
    for rec in annotations:
        if rec.get("split") == "train":
            for seg in rec.get("segments", []):
                for d in DIMS:
                    if seg.get(d) is not None:
                        vals[d].append(float(seg[d]))
    return {d: ([float(x) for x in np.quantile(v, [1 / 3, 2 / 3])] if v else [1 / 3, 2 / 3]) for d, v in vals.items()}


def _level(x: float, edges: list[float]) -> str:
    return "low" if x < edges[0] else ("high" if x > edges[1] else "mid")


def verbalise(segments: list[dict[str, Any]], mode: str = "numbers", bins: dict[str, list[float]] | None = None,
              include_gender: bool = True) -> str:
    """The explicit block: one time-stamped line per run of equal labels, from the *annotator's* segments.

    Format is ours [decided], e.g. `[0.0-4.2 s] female, angry (valence 0.21, arousal 0.83, dominance 0.60)`.
    """
    if mode not in MODES:
        raise MergeError(f"explicit mode '{mode}' unknown; choose one of {', '.join(MODES)}")
    merged: list[dict[str, Any]] = []
    for seg in segments:
        key = (seg.get("emotion"), seg.get("gender") if include_gender else None)
        if merged and merged[-1]["_key"] == key and mode == "categories":
            merged[-1]["end_s"] = seg["end_s"]  # adjacent windows with the same labels read as one span
            continue
        merged.append({**seg, "_key": key})
    lines = []
    for seg in merged:
        who = f"{seg['gender']}, " if include_gender and seg.get("gender") else ""
        text = f"[{seg['start_s']:.1f}-{seg['end_s']:.1f} s] {who}{seg.get('emotion') or 'unknown'}"
        if mode != "categories" and all(seg.get(d) is not None for d in DIMS):
            if mode == "numbers":
                text += " (" + ", ".join(f"{d} {float(seg[d]):.2f}" for d in DIMS) + ")"
            else:
                edges = bins or {d: [1 / 3, 2 / 3] for d in DIMS}
                text += " (" + ", ".join(f"{d} {_level(float(seg[d]), edges[d])}" for d in DIMS) + ")"
        lines.append(text)
    return "Detected voice cues:\n" + "\n".join(lines)


def fill(template: str, words: dict[str, dict[str, str]], **kw: Any) -> str:
    vals = dict(kw)
    if "emotion" in kw:
        vals["emotion"] = words["emotion"].get(kw["emotion"], kw["emotion"])
        vals["emotion_cap"] = vals["emotion"].capitalize()
    if "emotion2" in kw:
        vals["emotion2"] = words["emotion"].get(kw["emotion2"], kw["emotion2"])
    if "gender" in kw:
        vals["gender_noun"] = words["gender_noun"].get(kw["gender"], kw["gender"])
        vals["gender"] = words["gender"].get(kw["gender"], kw["gender"])
        vals["gender_cap"] = vals["gender"].capitalize()
    return template.format(**vals)


def clip_transcript(clip: dict[str, Any] | None, annotation: dict[str, Any]) -> str:
    """ASR target: the corpus transcript when it has one, else the annotator's words."""
    texts = [s.get("text") for s in (clip or {}).get("segments", []) if s.get("text")]
    return " ".join(texts) if texts else " ".join(w["w"].strip() for w in annotation.get("words", []))


def baseline_examples(clip: dict[str, Any] | None, ann: dict[str, Any], bank: dict[str, Any], seed: int,
                      label_source: str = "annotator") -> Iterator[dict[str, Any]]:
    """ASR + template emotion/gender QA for one training clip (labels from the annotator, as in the paper)."""
    rng = stable_rng(seed, ann["clip_id"])
    text = clip_transcript(clip, ann)
    if text:
        yield {"task": "asr", "instruction": rng.choice(bank["asr"]), "target": text}
    if not ann.get("kept", True):
        return  # condensation dropped it: its labels are not reliable enough to teach (PAPER.md §1)
    segs = (clip or {}).get("segments", []) if label_source == "ground_truth" else ann.get("segments", [])
    emo, gen = dominant_label(segs, "emotion"), dominant_label(segs, "gender")
    if emo:
        yield {"task": "emotion", "instruction": rng.choice(bank["emotion_q"]),
               "target": fill(rng.choice(bank["emotion_a"]), bank["words"], emotion=emo)}
    if gen:
        yield {"task": "gender", "instruction": rng.choice(bank["gender_q"]),
               "target": fill(rng.choice(bank["gender_a"]), bank["words"], gender=gen)}


def _quote(text: str, n_words: int = 6) -> str:
    words = text.rstrip(".!?").split()
    return " ".join(words[:n_words]) + ("..." if len(words) > n_words else "")


def reference_items(clip: dict[str, Any], bank: dict[str, Any], words: dict[str, Any], seed: int) -> list[dict]:
    """Reference CPQA items (C, CE, CG) for one test clip, answers written from ground truth and text."""
    rng = stable_rng(seed, "ref", clip["clip_id"])
    segs = [s for s in clip.get("segments", []) if s.get("text")]
    if not segs:
        return []
    items = []

    def add(qtype: str, q: str, a: str, seg_idx: list[int], label: str | None = None) -> None:
        items.append({"question_type": qtype, "question": q, "reference": a, "evidence_segments": seg_idx,
                      "label": label})

    t = rng.choice(bank["C"]["q"]), rng.choice(bank["C"]["a"])
    add("C", t[0], fill(t[1], words, text=segs[0]["text"]), [0])
    if len(segs) > 1:
        t = rng.choice(bank["C_last"]["q"]), rng.choice(bank["C_last"]["a"])
        add("C", t[0], fill(t[1], words, text=segs[-1]["text"]), [len(segs) - 1])
    for i, s in enumerate(segs):
        if s.get("emotion"):
            q = fill(rng.choice(bank["CE"]["q"]), words, quote=_quote(s["text"]))
            add("CE", q, fill(rng.choice(bank["CE"]["a"]), words, quote=_quote(s["text"]), emotion=s["emotion"]),
                [i], s["emotion"])
    if len(segs) > 1 and segs[0].get("emotion") and segs[-1].get("emotion"):
        a, b = segs[0], segs[-1]
        q = fill(rng.choice(bank["CE_change"]["q"]), words, quote=_quote(a["text"]), quote2=_quote(b["text"]))
        key = "a_change" if a["emotion"] != b["emotion"] else "a_same"
        add("CE", q, fill(rng.choice(bank["CE_change"][key]), words, quote=_quote(a["text"]),
                           quote2=_quote(b["text"]), emotion=a["emotion"], emotion2=b["emotion"]),
            [0, len(segs) - 1])
    g = rng.randrange(len(segs))
    if segs[g].get("gender"):
        q = fill(rng.choice(bank["CG"]["q"]), words, quote=_quote(segs[g]["text"]))
        add("CG", q, fill(rng.choice(bank["CG"]["a"]), words, quote=_quote(segs[g]["text"]),
                           gender=segs[g]["gender"]), [g], segs[g]["gender"])
    return items


def label_words(label: str, words: dict[str, Any]) -> set[str]:
    """Every surface form of a label we might write (for the 'label in the prompt' leakage guard)."""
    forms = {label.lower()}
    for table in words.values():
        if label in table and table[label] != "hard to place":
            forms.add(str(table[label]).lower().split()[-1])  # "a woman" -> "woman"
    return forms
