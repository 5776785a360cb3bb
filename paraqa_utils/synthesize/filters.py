"""Stage 02's post-filters, each reporting what it removed: references to inputs, form and length, label consistency,
near-duplicates within a clip and across the set (PAPER.md step 2), plus the funnel and the question-type mix."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from paraqa_utils.params import check_types
from paraqa_utils.text import UNUSABLE_EMOTIONS, Embed, label_lexicon, mentions, tokens, word_lines

POLAR = re.compile(r"^\s*(?:does|do|did|is|are|was|were|can|could|would|will|has|have|had|should)\b|\bor\b", re.I)
STEPS = ("references", "form_length", "label_consistency", "dedup_within_clip", "dedup_across_set")


@dataclass
class FilterConfig:
    """The post-filters' knobs: each a parameter of 02_synthesize.ipynb of the same name, with no default here."""
    forbidden_references: str  # prompt-folder file of patterns that refer to the inputs
    label_words: str  # prompt-folder file of emotion and gender words
    min_answer_chars: int
    max_answer_words: int
    max_question_words: int
    min_question_words: int  # alphabetic words; "1. C, simple" or "3.9 s" is no question
    require_question_mark: bool
    dedup_ngram_n: int
    dedup_ngram_jaccard: float  # questions of one clip sharing this share of word n-grams are duplicates
    dedup_cosine_within_clip: float  # question embeddings within one clip
    dedup_cosine_across_set: float  # question+answer embeddings across clips (copy-paste QA)
    embedder: str  # sentence encoder for near-duplicates (empty: the embedded all-MiniLM-L6-v2)

    def __post_init__(self) -> None:
        problems = check_types(self)
        if problems:
            raise ValueError("filter settings:\n  - " + "\n  - ".join(problems))


def forbidden_patterns(name: str) -> list[re.Pattern]:
    return [re.compile(p, re.I) for p in word_lines(name)]


def label_problem(qa: dict[str, Any], ann: dict[str, Any], lex: dict[str, dict[str, set[str]]]) -> str | None:
    """Why the QA contradicts the annotation, or None. An emotion word must fit an emotion annotated somewhere in
    the clip (kept windows, or the dominant emotion); gender nouns are checked outside pure content questions.
    Questions are checked only when they presuppose ("Why is the man angry?"), not when they ask ("Is she angry?",
    "happy or sad?")."""
    segs = ann.get("segments") or []
    spoken = {t for w in ann.get("words") or [] for t in tokens(str(w.get("w", "")))}
    emotions = {s.get("emotion") for s in segs if s.get("kept", True)} | {ann.get("dominant_emotion")}
    emotions -= set(UNUSABLE_EMOTIONS)
    genders = {s.get("gender") for s in segs if s.get("gender")}
    for field in ("question", "answer"):
        if field == "question" and POLAR.search(qa["question"]):
            continue
        if emotions:
            for word, labels in mentions(qa[field], lex["emotion"], spoken):
                if not labels & emotions:
                    return f"{field} calls the speaker '{word}' but the clip is annotated {'/'.join(sorted(emotions))}"
        if genders and qa.get("question_type") != "C":
            for word, labels in mentions(qa[field], lex["gender"], spoken):
                if not labels & genders:
                    return f"{field} says '{word}' but the voice is annotated {'/'.join(sorted(genders))}"
    return None


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    toks = tokens(text)
    return {tuple(toks[i:i + n]) for i in range(max(1, len(toks) - n + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _within_clip(qas: list[dict], emb: np.ndarray, cfg: FilterConfig) -> dict[int, str]:
    """Index -> reason for questions that repeat an earlier kept question of the same clip and kind."""
    drop: dict[int, str] = {}
    groups: dict[tuple[str, str], list[int]] = {}
    for i, qa in enumerate(qas):
        groups.setdefault((qa["clip_id"], qa["kind"]), []).append(i)
    for idx in groups.values():
        kept: list[int] = []
        for i in idx:
            grams = ngrams(qas[i]["question"], cfg.dedup_ngram_n)
            for k in kept:
                jac, cos = jaccard(grams, ngrams(qas[k]["question"], cfg.dedup_ngram_n)), float(emb[i] @ emb[k])
                if jac >= cfg.dedup_ngram_jaccard or cos >= cfg.dedup_cosine_within_clip:
                    drop[i] = f"near-duplicate of {qas[k]['qa_id']} (n-gram {jac:.2f}, cosine {cos:.2f})"
                    break
            else:
                kept.append(i)
    return drop


def _across_set(qas: list[dict], emb: np.ndarray, cfg: FilterConfig, block: int = 512) -> dict[int, str]:
    """Index -> reason for QA (question and answer together) repeating a kept QA of another clip, same kind.
    Blockwise against the kept set, so 10^4..10^5 items stay a few matrix products."""
    drop: dict[int, str] = {}
    for kind in sorted({q["kind"] for q in qas}):
        idx = [i for i, q in enumerate(qas) if q["kind"] == kind]
        codes = {c: n for n, c in enumerate(sorted({qas[i]["clip_id"] for i in idx}))}
        kept_rows: list[int] = []
        for b in range(0, len(idx), block):
            rows = idx[b:b + block]
            E, K = emb[rows], emb[kept_rows] if kept_rows else np.zeros((0, emb.shape[1]), emb.dtype)
            prev = E @ K.T
            prev[np.array([codes[qas[i]["clip_id"]] for i in rows])[:, None] ==
                 np.array([codes[qas[k]["clip_id"]] for k in kept_rows], dtype=int)[None, :]] = -1.0
            inner = E @ E.T
            new: list[int] = []  # positions within this block kept so far
            for j, i in enumerate(rows):
                cands = [(float(prev[j].max()), kept_rows[int(prev[j].argmax())])] if kept_rows else []
                cands += [(float(inner[j, m]), rows[m]) for m in new if qas[rows[m]]["clip_id"] != qas[i]["clip_id"]]
                best = max(cands, default=(-1.0, -1))
                if best[0] >= cfg.dedup_cosine_across_set:
                    drop[i] = f"near-duplicate of {qas[best[1]]['qa_id']} from another clip (cosine {best[0]:.2f})"
                else:
                    new.append(j)
            kept_rows += [rows[m] for m in new]
    return drop


def run_filters(qas: list[dict[str, Any]], annotations: dict[str, dict[str, Any]], cfg: FilterConfig,
                embed: Embed) -> tuple[list[dict], list[dict], list[dict]]:
    """Apply the filters in order. Returns (kept QA, rejects with filter and reason, funnel rows per kind)."""
    patterns, lex = forbidden_patterns(cfg.forbidden_references), label_lexicon(cfg.label_words)
    rejects: list[dict] = []
    funnel: list[dict] = []
    alive = list(qas)

    def apply(step: str, reasons: dict[int, str]) -> None:
        nonlocal alive
        for kind in sorted({q["kind"] for q in qas}):
            n_in = sum(q["kind"] == kind for q in alive)
            n_out = sum(q["kind"] == kind for i, q in enumerate(alive) if i not in reasons)
            funnel.append({"kind": kind, "step": step, "n_in": n_in, "n_removed": n_in - n_out, "n_out": n_out})
        for i, why in sorted(reasons.items()):
            q = alive[i]
            rejects.append({"qa_id": q["qa_id"], "clip_id": q["clip_id"], "kind": q["kind"], "filter": step,
                            "reason": why, "question_type": q["question_type"], "question": q["question"],
                            "answer": q["answer"], "cache_key": q.get("cache_key")})
        alive = [q for i, q in enumerate(alive) if i not in reasons]

    def referencing(q: dict) -> str | None:
        for field in ("question", "answer"):
            for p in patterns:
                if m := p.search(q[field]):
                    return f"{field} refers to the inputs: '{m.group(0)}' (pattern {p.pattern})"
        return None

    def bad_form(q: dict) -> str | None:
        words_q, words_a = re.findall(r"[^\W\d_]{2,}", q["question"]), re.findall(r"[^\W\d_]{2,}", q["answer"])
        if len(q["answer"]) < cfg.min_answer_chars or not words_a:
            return "empty answer (no words)"
        if len(q["answer"].split()) > cfg.max_answer_words:
            return f"answer longer than {cfg.max_answer_words} words"
        if len(q["question"].split()) > cfg.max_question_words:
            return f"question longer than {cfg.max_question_words} words"
        if len(words_q) < cfg.min_question_words or (cfg.require_question_mark and "?" not in q["question"]):
            return f"not a question: {q['question'][:60]!r}"
        if tokens(q["question"]) == tokens(q["answer"]):
            return "the answer repeats the question"
        return None

    apply("references", {i: r for i, q in enumerate(alive) if (r := referencing(q))})
    apply("form_length", {i: r for i, q in enumerate(alive) if (r := bad_form(q))})
    apply("label_consistency", {i: r for i, q in enumerate(alive)
                                if (r := label_problem(q, annotations.get(q["clip_id"], {}), lex))})
    q_emb = embed([q["question"] for q in alive]) if alive else np.zeros((0, 1))
    apply("dedup_within_clip", _within_clip(alive, q_emb, cfg))
    qa_emb = embed([f"{q['question']} {q['answer']}" for q in alive]) if alive else np.zeros((0, 1))
    apply("dedup_across_set", _across_set(alive, qa_emb, cfg))
    return alive, rejects, funnel


def examples(kept: Sequence[dict], n_per_type: int) -> list[dict[str, Any]]:
    """The first `n_per_type` surviving QA of each kind and question type."""
    seen: Counter = Counter()
    out = []
    for q in kept:
        if seen[(q["kind"], q["question_type"])] < n_per_type:
            seen[(q["kind"], q["question_type"])] += 1
            out.append({k: q[k] for k in ("kind", "question_type", "reasoning", "clip_id", "question", "answer")})
    return sorted(out, key=lambda r: (r["kind"], r["question_type"]))


def type_mix(before: Sequence[dict], after: Sequence[dict]) -> list[dict[str, Any]]:
    """Question-type counts and shares per kind, before and after the filters."""
    b, a = Counter((q["kind"], q["question_type"]) for q in before), Counter((q["kind"], q["question_type"]) for q in after)
    tot_b, tot_a = Counter(q["kind"] for q in before), Counter(q["kind"] for q in after)
    return [{"kind": k, "question_type": t, "n_before": b[(k, t)], "n_after": a[(k, t)],
             "share_before": round(b[(k, t)] / tot_b[k], 3) if tot_b[k] else 0.0,
             "share_after": round(a[(k, t)] / tot_a[k], 3) if tot_a[k] else 0.0}
            for k, t in sorted(set(b) | set(a))]
