"""The offline reference-based scorer: an answer's grade 0-5 from facet checks, no LLM.

Facets (our design): the *content* the question asks for (the reference's content words that the question does
not already give, matched on crude stems, or MiniLM similarity for a paraphrase) and, for CE / CG questions, the
*emotion* or *gender* the reference names (the label mapper's keywords). A contradicted facet caps the grade;
a missing one halves what content can earn.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from paraqa_utils.judge.validation import LEXICON_FILE
from paraqa_utils import text
from paraqa_utils.text import Embed, content_words, label_lexicon, mentions, stem

NAME = "offline/facets_v2"
RUBRIC = "facets_v2"  # no prompt: the rules below are the rubric
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


NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {w: str(10 * i) for i, w in enumerate(
    "_ _ _ thirty forty fifty sixty seventy eighty ninety".split()) if i >= 3} | {"hundred": "100", "half": "30",
                                                                                  "quarter": "15"}
# opposite verbs and adverbs: an answer using one where the reference uses the other states the opposite fact
OPPOSITES = [("open", "close"), ("arrive", "leave"), ("win", "lose"), ("won", "lost"), ("hire", "fire"),
             ("early", "late"), ("before", "after"), ("start", "finish"), ("buy", "sell"), ("more", "less"),
             ("accept", "reject"), ("pass", "fail"), ("find", "lose"), ("found", "lost"), ("increase", "decrease"),
             ("cheap", "expensive"), ("raise", "cut"), ("up", "down"), ("on", "off"), ("come", "go")]
SLOTS = {  # kinds of fact where an answer naming another value of the same kind contradicts the reference
    "number": None,  # digits and number words (normalised to digits)
    "weekday": {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "weekend"},
    "month": {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
              "november", "december"},
    "daypart": {"morning", "afternoon", "evening", "night", "tonight", "noon", "midnight", "lunchtime"},
    "relation": {"past", "to", "before", "after", "early", "late", "earlier", "later"},
}
# a CE/CG question that also asks what happened or why; else it asks only for the emotion / the gender
ASKS_CONTENT = re.compile(r"\b(why|and (what|when|where|which|who|how)|what (has )?happened|what (is|was) (it|that)"
                          r"|what (do|does|did) (she|he|they|the speaker) (say|mention))\b")
SENTENCE = re.compile(r"(?<=[.!?;])\s+")


def norm(word: str) -> str:
    return NUMBER_WORDS.get(word, word)


def words(text_: str, drop: set[str] = frozenset()) -> set[str]:
    """Content words with numbers normalised ("four" and "4" match)."""
    return {norm(w) for w in content_words(text_)} - set(drop)


SPOKEN_TIME = re.compile(r"\b(quarter|half) (past|to) ([a-z]+|\d+)\b")


def written_times(text_: str) -> str:
    """"a quarter past seven" -> "7:15", "half past six" -> "6:30", "quarter to seven" -> "6:45"."""
    def one(m: re.Match) -> str:
        hour = norm(m.group(3))
        if not hour.isdigit():
            return m.group(0)
        minutes = 15 if m.group(1) == "quarter" else 30
        h, mm = (int(hour), minutes) if m.group(2) == "past" else ((int(hour) - 1) % 12 or 12, 60 - minutes)
        return f"{h}:{mm:02d}"
    return SPOKEN_TIME.sub(one, (text_ or "").lower())


def slot_values(text_: str) -> dict[str, set[str]]:
    toks = [norm(t) for t in text.tokens(written_times(text_))]
    out = {"number": {t for t in toks if t.isdigit()}}
    out.update({k: {t for t in toks if t in v} for k, v in SLOTS.items() if v})
    return out


def slot_conflict(reference: str, answer: str) -> bool:
    """The answer gives a number, day, month or time of day where the reference gives another one, and not
    the reference's ("eight" for "six", "Monday" for "Friday"); or swaps the reference's values' order."""
    ref, ans = slot_values(reference), slot_values(answer)
    if any(ans[k] - ref[k] and ref[k] for k in ref if k != "relation"):
        return True
    key = lambda w: stem(w).rstrip("e")  # noqa: E731  close, closes, closed -> clos
    rw, aw = {key(t) for t in text.tokens(reference)}, {key(t) for t in text.tokens(answer)}
    if any((key(a) in rw and key(b) in aw and key(b) not in rw) or (key(b) in rw and key(a) in aw and
                                                                 key(a) not in rw) for a, b in OPPOSITES):
        return True
    order = lambda t: [v for v in (norm(x) for x in text.tokens(written_times(t)))  # noqa: E731
                       if v.isdigit() or v in SLOTS["weekday"]]
    r, a = order(reference), order(answer)
    return len(r) >= 2 and sorted(r) == sorted(a) and r != a


class FacetScorer:
    """grade(question, reference, answer, question_type) -> Facets; one MiniLM call per batch of answers."""

    def __init__(self, embed: Embed | None = None):
        self.embed = embed
        self.lexicon = label_lexicon(LEXICON_FILE)

    def _labels(self, text_: str, facet: str) -> list[str]:
        return [lab for _, labs in mentions(text_ or "", self.lexicon[facet], set()) for lab in sorted(labs)]

    def _facet(self, question_type: str, reference: str, answer: str) -> tuple[str, set[str]]:
        facet = FACET_OF.get(question_type)
        if facet is None:
            return "n/a", set()
        want, got = set(self._labels(reference, facet)), self._labels(answer, facet)
        lexicon_words = set(self.lexicon[facet])
        if not want:
            return "n/a", lexicon_words
        if want & set(got):  # the first label the answer names decides; a wanted one later makes it mixed
            return ("agree" if got[0] in want else "mixed"), lexicon_words
        return ("contradict" if got else "missing"), lexicon_words

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

    def _content(self, need: set[str], answer: str, given: set[str]) -> tuple[float, int, bool]:
        """(token F1 of the best leading run of sentences, its hits, whether sentences follow it: padding)."""
        parts = [p for p in SENTENCE.split(answer.strip()) if p.strip()] or [answer]
        best = (-1.0, 0, False)
        for k in range(1, len(parts) + 1):
            said = words(" ".join(parts[:k]), given)
            hit = len(need & said)
            f1 = 2 * hit / (len(need) + len(said)) if need and said else float(not need and not said)
            if f1 > best[0]:
                best = (f1, hit, k < len(parts))
        return best

    def _one(self, it: dict[str, Any], sim: float) -> Facets:
        answer = it.get("answer") or ""
        if not answer.strip():
            return Facets(0.0, "missing", 0.0, 0)
        qtype = it.get("question_type") or "C"
        facet, label_words = self._facet(qtype, it["reference"], answer)
        given = words(it.get("question") or "") | {stem(w) for w in label_words}
        need = words(it["reference"], given)
        f1, hit, padded = self._content(need, answer, given)
        by_sim = float(np.clip((sim - SIM_FLOOR) / (SIM_FULL - SIM_FLOOR), 0, 1)) if self.embed is not None else 0.0
        content = (1 - SIM_WEIGHT) * f1 + SIM_WEIGHT * by_sim if self.embed is not None else f1
        conflict = slot_conflict(it["reference"], answer)
        asks = facet == "n/a" or bool(ASKS_CONTENT.search((it.get("question") or "").lower()))
        if facet == "contradict":
            grade = 1 if hit or sim >= SIM_FLOOR else 0
        elif facet in ("agree", "mixed"):
            # only the facet was asked (or the reference adds nothing): the facet decides; else the content does
            grade = 5 if not asks or not need else (3 if conflict else 3 + round(2 * content))
            grade = min(grade, 3) if facet == "mixed" else grade
        elif facet == "missing":  # at best half right (3): the content without the facet the question asks for
            grade = min(3, round(3 * content)) if asks else min(2, round(3 * content))
        else:
            grade = (1 if content >= 0.2 else 0) if conflict else round(5 * content)
        grade = min(grade, 4) if padded else grade  # sentences beyond the matching ones: padding
        return Facets(round(content, 4), facet, round(sim, 4), int(grade))
