"""Programmatic training answers for the learned judge, made from the dev sets' (question, reference) bases only:
each is the reference changed in one known way, graded by the rubric (judge/graded/README.md). Our rules.

A changed emotion, gender, yes/no, negation or quantity makes a wrong answer (1); the same fact in other units,
a near-synonym of the emotion, a hedge or clean padding keeps it right (5, 5, 4, 4); a clause dropped makes it
half right (3); another base's reference, a refusal and no answer score 0.
"""
from __future__ import annotations

import random
import re
from typing import Any, Iterator, Sequence

from paraqa_utils import text
from paraqa_utils.judge.features import Reader, find
from paraqa_utils.judge.offline import ASKS_CONTENT as ASKS
from paraqa_utils.judge.quantities import ONES

SWAP_GENDER = {"woman": "man", "man": "woman", "women": "men", "men": "women", "female": "male", "male": "female",
               "lady": "gentleman", "gentleman": "lady", "girl": "boy", "boy": "girl", "she": "he", "he": "she",
               "her": "his", "his": "her", "him": "her", "mother": "father", "father": "mother", "wife": "husband",
               "husband": "wife", "sister": "brother", "brother": "sister", "mum": "dad", "dad": "mum",
               "mom": "dad", "guy": "woman", "daughter": "son", "son": "daughter", "herself": "himself",
               "himself": "herself"}
OPPOSITE_EMOTION = {"angry": ["calm", "happy"], "happy": ["sad", "angry"], "sad": ["happy", "calm"],
                    "fearful": ["calm", "happy"], "surprised": ["calm"], "disgusted": ["happy", "calm"],
                    "calm": ["angry", "fearful"]}
SAMPLE_WORD = {"angry": ["furious", "annoyed", "irritated"], "happy": ["delighted", "cheerful", "thrilled"],
               "sad": ["miserable", "heartbroken", "dejected"], "fearful": ["anxious", "scared", "worried"],
               "surprised": ["astonished", "stunned", "amazed"], "disgusted": ["revolted", "repulsed"],
               "calm": ["relaxed", "composed", "unbothered"]}
HEDGES = ["I think ", "It sounds like ", "Probably ", "If I heard it right, ", "It seems that "]
PADDING = [" That is about all the clip says.", " The recording is fairly short.", " There is a little background noise.",
           " Nothing else stands out in the clip."]
REFUSALS = ["I can't tell from the audio.", "Sorry, I don't know.", "It is impossible to say from this recording."]
NEGATE = [(r"\b(is|was|are|were|has|have|had|will|can|could|should|does|did|do)\b(?! not)", r"\1 not"),
          (r"\b(isn't|wasn't|aren't|weren't|hasn't|haven't|doesn't|didn't|don't|can't|won't)\b",
           lambda m: {"isn't": "is", "wasn't": "was", "aren't": "are", "weren't": "were", "hasn't": "has",
                      "haven't": "have", "doesn't": "does", "didn't": "did", "don't": "do", "can't": "can",
                      "won't": "will"}[m.group(1)])]
NUM_WORD = {v: k for k, v in ONES.items()}


def _swap_words(sentence: str, table: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        w = m.group(0)
        new = table.get(w.lower(), w)
        return new.capitalize() if w[0].isupper() else new
    return re.sub(r"[A-Za-z]+", one, sentence)


def _replace_phrase(sentence: str, phrase: tuple[str, ...], new: str) -> str:
    pat = r"\b" + r"\W+".join(map(re.escape, phrase)) + r"\b"
    return re.sub(pat, new, sentence, count=1, flags=re.I)


def _numbers(sentence: str) -> Iterator[re.Match]:
    words = "|".join(sorted(ONES, key=len, reverse=True))
    return re.finditer(rf"\b(\d+|{words})\b", sentence, flags=re.I)


def variants(base: dict[str, Any], others: Sequence[str], reader: Reader, rng: random.Random) -> list[tuple[str, int, str]]:
    """(answer, grade, kind) made from one base {question, reference, question_type}."""
    q, ref, qtype = base["question"], base["reference"], base["question_type"]
    toks = text.tokens(ref)
    out = [(ref, 5, "reference"), ("", 0, "empty"), (rng.choice(REFUSALS), 0, "refusal"),
           (rng.choice(others), 0, "other_reference"), (rng.choice(HEDGES) + ref[0].lower() + ref[1:], 4, "hedge"),
           (ref + rng.choice(PADDING), 4, "padding")]
    clauses = re.split(r",\s+|\s+(?:because|and|but|so|since)\s+", ref, maxsplit=1)
    if len(clauses) == 2 and min(len(text.tokens(c)) for c in clauses) >= 3 and qtype == "C":
        out.append((clauses[0].rstrip(".") + ".", 3, "partial"))
    if qtype == "CG":
        swapped = _swap_words(ref, SWAP_GENDER)
        if swapped != ref:
            out.append((swapped, 1, "gender_swap"))
    if qtype == "CE":
        found = [(i, k) for i, k in find(toks, reader.emotion) if not reader.negated(toks, i)]
        if found:
            i, cat = found[0]
            phrase = next(p for p in reader.emotion[cat] if tuple(toks[i:i + len(p)]) == p)
            if cat in OPPOSITE_EMOTION:
                for other in OPPOSITE_EMOTION[cat]:
                    out.append((_replace_phrase(ref, phrase, rng.choice(SAMPLE_WORD[other])), 1, "emotion_opposite"))
                near = [w for w in SAMPLE_WORD.get(cat, []) if (w,) != phrase]
                if near:
                    out.append((_replace_phrase(ref, phrase, rng.choice(near)), 5, "emotion_near"))
    if qtype in ("CE", "CG"):
        parts = [p for p in re.split(r";\s*|,\s*(?=and\b)|\.\s+", ref) if p.strip()]
        facet_words = reader.emotion if qtype == "CE" else reader.gender
        with_facet = [p for p in parts if find(text.tokens(p), facet_words)]
        without = [p for p in parts if p not in with_facet]
        if with_facet and without and ASKS.search(q.lower()):
            out.append((" ".join(without).rstrip(".") + ".", 3, "facet_dropped"))
            only = re.sub(r"^(and|but)\s+", "", with_facet[-1].strip())
            out.append((only[0].upper() + only[1:].rstrip(".") + ".", 3, "facet_only"))
    lead = reader.polarity_lead(toks)
    if lead:
        flipped = re.sub(r"^\s*(yes|yeah|no|nope)\b", "No" if lead > 0 else "Yes", ref, count=1, flags=re.I)
        for pat, rep in NEGATE:
            new = re.sub(pat, rep, flipped, count=1, flags=re.I)
            if new != flipped:
                flipped = new
                break
        if flipped != ref:
            out.append((flipped, 1, "polarity_flip"))
        other_words = (rng.choice(["Not at all, ", "Not really, ", "By no means, "]) if lead < 0 else
                       rng.choice(["Absolutely, ", "You bet, ", "Certainly, "]))
        rest = re.sub(r"^\s*(yes|yeah|no|nope)\b[,.!]?\s*", "", ref, count=1, flags=re.I)
        if rest != ref and rest:
            out.append((other_words + rest[0].lower() + rest[1:], 5, "polarity_other_words"))
    elif qtype == "C":
        for pat, rep in NEGATE:
            new = re.sub(pat, rep, ref, count=1, flags=re.I)
            if new != ref:
                out.append((new, 1, "negated"))
                break
    nums = list(_numbers(ref))
    if nums:
        m = nums[0]
        val = int(m.group(1)) if m.group(1).isdigit() else ONES[m.group(1).lower()]
        wrong = val + rng.choice([1, 2, 3, 5, 10]) if val < 50 else val * 2
        out.append((ref[:m.start()] + str(wrong) + ref[m.end():], 1, "quantity_changed"))
        out.append((rng.choice(HEDGES) + ref[0].lower() + ref[1:m.start()] + str(wrong + 1) + ref[m.end():], 1,
                    "hedged_wrong"))
        other_form = NUM_WORD.get(val) if m.group(1).isdigit() else str(val)
        if other_form:
            out.append((ref[:m.start()] + other_form + ref[m.end():], 5, "quantity_other_form"))
    return out


def perturbations(bases: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Training items (question, reference, answer, question_type, grade, kind, base) for every base."""
    rng, reader = random.Random(seed), Reader()
    refs = [b["reference"] for b in bases]
    out = []
    for b in bases:
        others = [r for r in refs if r != b["reference"]]
        for answer, grade, kind in variants(b, others, reader, rng):
            out.append({"question": b["question"], "reference": b["reference"], "question_type": b["question_type"],
                        "answer": answer, "grade": grade, "kind": f"perturbed:{kind}", "base": b["reference"]})
    return out
