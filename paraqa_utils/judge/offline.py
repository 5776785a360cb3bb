"""The offline reference-based scorer: an answer's grade 0-5 from facet checks, no LLM.

Facets (our design): the *content* the question asks for (the reference's content words that the question does
not already give, matched on crude stems, or MiniLM similarity for a paraphrase) and, for CE / CG questions, the
*emotion* or *gender* the reference names (the label mapper's keywords). A contradicted facet caps the grade;
a missing one halves what content can earn.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from paraqa_utils.judge.validation import LEXICON_FILE
from paraqa_utils import text
from paraqa_utils.text import Embed, content_words, label_lexicon, mentions, stem

NAME = "offline/facets_v1"
RUBRIC = "facets_v1"  # no prompt: the rules below are the rubric
SIM_FLOOR, SIM_FULL = 0.35, 0.8  # MiniLM cosine: below the floor no content credit, from SIM_FULL full credit
FACET_OF = {"CE": "emotion", "CG": "gender", "emotion": "emotion", "gender": "gender"}  # label sets count too
SIM_WEIGHT = 0.5  # content = (1 - w) x token F1 + w x scaled similarity


@dataclass
class Facets:
    """What the scorer found in one answer; `grade` is derived from these."""
    content: float  # 0-1
    facet: str  # "agree", "contradict", "missing" or "n/a" (a C question)
    similarity: float
    grade: int


class FacetScorer:
    """grade(question, reference, answer, question_type) -> Facets; one MiniLM call per batch of answers."""

    def __init__(self, embed: Embed | None = None):
        self.embed = embed
        self.lexicon = label_lexicon(LEXICON_FILE)

    def _label(self, text: str, facet: str) -> set[str]:
        return {lab for _, labs in mentions(text or "", self.lexicon[facet], set()) for lab in labs}

    def _facet(self, question_type: str, reference: str, answer: str) -> tuple[str, set[str]]:
        facet = FACET_OF.get(question_type)
        if facet is None:
            return "n/a", set()
        want, got = self._label(reference, facet), self._label(answer, facet)
        words = set(self.lexicon[facet])
        if not want:
            return "n/a", words
        if want & got and not (got - want):
            return "agree", words
        return ("contradict" if got else "missing"), words

    def score(self, items: Sequence[dict[str, Any]]) -> list[Facets]:
        """Each item needs question, reference, answer and question_type (C, CE or CG; anything else: as C)."""
        answers = [it.get("answer") or "" for it in items]
        sims = np.zeros(len(items))
        live = [i for i, a in enumerate(answers) if a.strip()]
        if self.embed is not None and live:
            a = self.embed([answers[i] for i in live])
            r = self.embed([items[i]["reference"] for i in live])
            sims[live] = np.sum(a * r, axis=1)
        return [self._one(it, float(s)) for it, s in zip(items, sims)]

    def _one(self, it: dict[str, Any], sim: float) -> Facets:
        answer = it.get("answer") or ""
        if not answer.strip():
            return Facets(0.0, "missing", 0.0, 0)
        facet, label_words = self._facet(it.get("question_type") or "C", it["reference"], answer)
        given = content_words(it.get("question") or "") | {stem(w) for w in label_words}
        need, said = content_words(it["reference"], given), content_words(answer, given)
        # token F1 between what the reference adds to the question and what the answer adds: a wrong fact in
        # the reference's own words costs precision, padding too; MiniLM similarity credits paraphrases
        hit = len(need & said)
        f1 = 2 * hit / (len(need) + len(said)) if need and said else float(not need and not said)
        by_sim = float(np.clip((sim - SIM_FLOOR) / (SIM_FULL - SIM_FLOOR), 0, 1)) if self.embed is not None else 0.0
        content = (1 - SIM_WEIGHT) * f1 + SIM_WEIGHT * by_sim if self.embed is not None else f1
        if facet == "contradict":
            grade = 1 if hit or sim >= SIM_FLOOR else 0
        elif facet == "agree":  # the facet is what a CE/CG question asks: nothing unsupported -> full marks
            precision = hit / len(said) if said else 1.0
            grade = 5 if precision == 1.0 else 3 + round(2 * max(precision, content))
        elif facet == "missing":
            grade = min(3, round(3 * content))
        else:
            grade = round(5 * content)
        return Facets(round(content, 4), facet, round(sim, 4), int(grade))


def judgment_rows(items: Sequence[dict[str, Any]], embed: Embed | None, name: str = NAME) -> list[dict[str, Any]]:
    """05's judgment rows (the LLM judges' format) for the offline scorer: score 0-5, score_100 = 20 x score,
    always parsed; `explanation` says which facets decided it. Probes (reference swaps) are scored like the rest."""
    found = FacetScorer(embed).score(items)
    # the rules are the rubric: the hash of their source (this file and the shared word helpers)
    rules = hashlib.sha256(Path(__file__).read_bytes() + Path(text.__file__).read_bytes()).hexdigest()
    return [{"item_id": it["item_id"], "condition": it["condition"], "test_set": it["test_set"],
             "question_type": it.get("question_type"), "judge": name, "rubric": RUBRIC, "judge_model": "offline",
             "prompt_sha256": rules, "sampling": None, "run": 0, "score": f.grade, "score_100": f.grade * 20,
             "parse_ok": True, "parse_note": "", "raw": "", "answer_chars": len(it.get("answer") or ""),
             "explanation": f"content {f.content:.2f}, facet {f.facet}, similarity {f.similarity:.2f}",
             "probe": it.get("probe")} for it, f in zip(items, found)]
