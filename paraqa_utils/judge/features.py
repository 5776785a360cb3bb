"""What the learned offline judge sees of one (question, reference, answer): a fixed vector of named features.

Three kinds (our design): MiniLM's view of meaning (sentence cosines, and a soft match of the reference's
content tokens against the answer's token states, so a paraphrase without shared words still matches); the facets
a grade turns on, read with our word lists (prompts/judge_words_v1.txt): the emotion and its valence, the
speaker's gender, a yes/no lead, negations, quantities in any unit (judge/quantities.py), hedges, refusals; and
the old facet scorer's own reading (offline.py). A small head (judge/learned.py) learns how they make a grade.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from paraqa_utils import text
from paraqa_utils.judge import quantities
from paraqa_utils.judge.offline import ASKS_CONTENT, SENTENCE, FacetScorer, slot_conflict

WORDS_FILE = "judge_words_v1.txt"
YES_NO_QUESTION = re.compile(r"^\s*(is|are|was|were|do|does|did|has|have|had|will|would|can|could|should|shall|may|"
                             r"might|must|isn't|aren't|wasn't|doesn't|didn't|won't|can't)\b", re.I)
NAMES = [
    "empty", "refusal", "type_c", "type_ce", "type_cg", "asks_content", "cos_ref", "cos_best_sentence",
    "cos_question", "cos_ref_question", "soft_recall", "soft_precision", "soft_f1", "lex_recall", "lex_f1",
    "facet_agree", "facet_near", "facet_opposite", "facet_other", "facet_missing", "facet_mixed", "facet_negated",
    "ref_has_facet", "yes_no_question", "polarity_agree", "polarity_flip", "polarity_missing", "negation_mismatch",
    "qty_in_ref", "qty_matched", "qty_conflict", "slot_conflict", "hedge", "n_sentences", "extra_sentences",
    "length_ratio", "log_answer_words", "facets_v2_grade", "facets_v2_content",
]


CLAUSE = re.compile(r"[,;:.!?()\u2014\u2013]+|\s-\s|\b(?=(?:but|and|so|though|although|while|because)\b)")
WAIT = {"can't", "cannot", "couldn't"}  # "can't wait" is eagerness, not a negation
BREAK = "|"  # a clause boundary among the tokens: negation does not reach across it


def clause_tokens(text_: str) -> list[str]:
    """Lower-case tokens with BREAK between clauses ("he can't wait, he's buzzing" -> ... wait | he's ...)."""
    out: list[str] = []
    for part in CLAUSE.split(text_ or ""):
        if part and part.strip():
            out += [*text.tokens(part), BREAK]
    return out[:-1]


def word_groups(name: str = WORDS_FILE) -> dict[str, dict[str, list[tuple[str, ...]]]]:
    """{group: {name: [phrase as a token tuple]}} from `<group>.<name>: w, w` lines."""
    out: dict[str, dict[str, list[tuple[str, ...]]]] = {}
    for ln in text.word_lines(name):
        head, _, words = ln.partition(":")
        group, _, key = head.strip().partition(".")
        out.setdefault(group, {})[key] = [tuple(text.tokens(w)) for w in words.split(",") if text.tokens(w)]
    return out


def find(toks: Sequence[str], phrases: dict[str, list[tuple[str, ...]]]) -> list[tuple[int, str]]:
    """(position, name) of every phrase in `toks`, longest match first at each position."""
    found, i = [], 0
    flat = sorted(((p, k) for k, ps in phrases.items() for p in ps), key=lambda x: -len(x[0]))
    while i < len(toks):
        for p, k in flat:
            if tuple(toks[i:i + len(p)]) == p:
                found.append((i, k))
                i += len(p) - 1
                break
        i += 1
    return found


class Reader:
    """The word-list side of the features (no model)."""

    def __init__(self, words_file: str = WORDS_FILE):
        g = word_groups(words_file)
        self.emotion, self.gender, self.polarity = g["emotion"], g["gender"], g["polarity"]
        self.valence = {c[0]: v for v, cats in g["valence"].items() for c in cats}
        self.negators = {p for ps in g["negation"].values() for p in ps}
        self.hedges, self.refusals = g["hedge"], g["refusal"]

    def negated(self, toks: Sequence[str], i: int) -> bool:
        before = toks[max(0, i - 3):i]
        before = before[len(before) - before[::-1].index(BREAK):] if BREAK in before else before
        return any((b,) in self.negators or b.endswith("n't") for b in before)

    def emotions(self, toks: Sequence[str]) -> list[tuple[str, bool]]:
        return [(k, self.negated(toks, i)) for i, k in find(toks, self.emotion)]

    def polarity_lead(self, toks: Sequence[str]) -> int:
        lead = [k for i, k in find(toks[:6], self.polarity) if i <= 1]
        return 0 if not lead else (1 if lead[0] == "yes" else -1)

    def negations(self, toks: Sequence[str], skip_lead: bool) -> int:
        start = 1 if skip_lead and toks and toks[0] in ("no", "nope", "nah") else 0
        return sum(((t,) in self.negators or t.endswith("n't")) and not (t in WAIT and toks[i + 1:i + 2] == ["wait"])
                   for i, t in enumerate(toks) if i >= start)

    def facet(self, qtype: str, ref_toks: Sequence[str], ans_toks: Sequence[str]) -> dict[str, float]:
        """agree / near (same valence) / opposite valence / other category / missing / mixed / negated."""
        out = dict.fromkeys(("facet_agree", "facet_near", "facet_opposite", "facet_other", "facet_missing",
                             "facet_mixed", "facet_negated", "ref_has_facet"), 0.0)
        if qtype not in ("CE", "CG"):
            return out
        if qtype == "CE":
            want = {k for k, neg in self.emotions(ref_toks) if not neg}
            got = self.emotions(ans_toks)
        else:
            want = {k for _, k in find(ref_toks, self.gender)[:1]}
            got = [(k, False) for _, k in find(ans_toks, self.gender)]
        if not want:
            return out
        out["ref_has_facet"] = 1.0
        plain = [k for k, neg in got if not neg]
        out["facet_negated"] = float(any(neg and k in want for k, neg in got))
        if not plain:
            out["facet_missing"] = 1.0
            return out
        got_set, vals = set(plain), {self.valence.get(w) for w in want}
        inter, extra = got_set & want, got_set - want
        extra_vals = {self.valence.get(w) for w in extra}
        opposite = qtype == "CE" and bool(extra_vals & {"positive", "negative"}) and any(
            {a, b} == {"positive", "negative"} for a in extra_vals for b in vals)
        out["facet_agree"] = float(bool(inter) and not extra)
        out["facet_mixed"] = float(bool(inter) and bool(extra))
        out["facet_opposite"] = float(opposite)
        near = (qtype == "CE" and not inter and not opposite and bool(extra_vals) and extra_vals <= vals
                and "even" not in extra_vals)
        out["facet_near"] = float(near)
        out["facet_other"] = float(not inter and not near and not opposite)
        return out


def sentences(answer: str) -> list[str]:
    return [p for p in SENTENCE.split((answer or "").strip()) if p.strip()] or [answer or ""]


class Featurizer:
    """features(items) -> (n, len(NAMES)) array; MiniLM runs once per batch over answers, references, questions
    and answer sentences."""

    def __init__(self, encoder: Any, reader: Reader | None = None):
        self.encoder, self.reader, self.facets = encoder, reader or Reader(), FacetScorer(None)

    def features(self, items: Sequence[dict[str, Any]]) -> np.ndarray:
        answers = [it.get("answer") or "" for it in items]
        refs, qs = [it["reference"] for it in items], [it.get("question") or "" for it in items]
        sents = [sentences(a) for a in answers]
        flat = [s for ss in sents for s in ss]
        pooled, states = self.encoder(answers + refs + qs + flat)
        n = len(items)
        a_vec, r_vec, q_vec, s_vec = pooled[:n], pooled[n:2 * n], pooled[2 * n:3 * n], pooled[3 * n:]
        rows, k = [], 0
        for i, it in enumerate(items):
            best = float(np.max(s_vec[k:k + len(sents[i])] @ r_vec[i])) if sents[i] else 0.0
            per_sent = s_vec[k:k + len(sents[i])] @ r_vec[i]
            k += len(sents[i])
            rows.append(self._one(it, a_vec[i], r_vec[i], q_vec[i], best, per_sent, states[i], states[n + i],
                                  states[2 * n + i]))
        return np.asarray(rows, dtype=np.float32).reshape(len(items), len(NAMES))

    def _one(self, it, a, r, q, best, per_sent, a_st, r_st, q_st) -> list[float]:
        answer, ref, question = it.get("answer") or "", it["reference"], it.get("question") or ""
        qtype = it.get("question_type") or "C"
        if qtype not in ("C", "CE", "CG"):
            qtype = {"emotion": "CE", "gender": "CG"}.get(qtype, "C")
        at, rt = clause_tokens(answer), clause_tokens(ref)
        n_at, n_rt = sum(t != BREAK for t in at), sum(t != BREAK for t in rt)
        f: dict[str, float] = dict.fromkeys(NAMES, 0.0)
        f.update(self.reader.facet(qtype, rt, at))
        f["empty"] = float(not answer.strip())
        f["refusal"] = float(bool(find(at, self.reader.refusals)))
        f[f"type_{qtype.lower()}"] = 1.0
        f["asks_content"] = float(qtype == "C" or bool(ASKS_CONTENT.search(question.lower())))
        f["cos_ref"], f["cos_best_sentence"] = float(a @ r), best
        f["cos_question"], f["cos_ref_question"] = float(a @ q), float(r @ q)
        f["soft_recall"], f["soft_precision"], f["soft_f1"] = soft_match(a_st, r_st, q_st)
        yn = bool(YES_NO_QUESTION.search(question))
        f["yes_no_question"] = float(yn)
        rp, ap = self.reader.polarity_lead(rt), self.reader.polarity_lead(at)
        if rp:
            f["polarity_agree"], f["polarity_flip"], f["polarity_missing"] = float(ap == rp), float(ap == -rp), float(
                ap == 0)
        f["negation_mismatch"] = float((self.reader.negations(rt, True) > 0) != (self.reader.negations(at, True) > 0))
        has, matched, conflict = quantities.compare(ref, answer)
        f["qty_in_ref"], f["qty_matched"], f["qty_conflict"] = float(has), matched, float(conflict)
        f["slot_conflict"] = float(slot_conflict(ref, answer)) if answer.strip() else 0.0
        f["hedge"] = float(bool(find(at, self.reader.hedges)))
        f["n_sentences"] = float(len(per_sent))
        f["extra_sentences"] = float(np.sum(per_sent < 0.3)) if len(per_sent) > 1 else 0.0
        f["length_ratio"] = min(n_at / max(n_rt, 1), 4.0)
        f["log_answer_words"] = float(np.log1p(n_at))
        old = self.facets.score([{**it, "question_type": qtype}])[0]
        f["facets_v2_grade"], f["facets_v2_content"] = old.grade / 5, old.content
        given = text.content_words(question)
        need = text.content_words(ref, given)
        said = text.content_words(answer, given)
        hit = len(need & said)
        f["lex_recall"] = hit / len(need) if need else 0.0
        f["lex_f1"] = 2 * hit / (len(need) + len(said)) if need and said else 0.0
        return [f[k] for k in NAMES]


def soft_match(a_st: np.ndarray, r_st: np.ndarray, q_st: np.ndarray) -> tuple[float, float, float]:
    """Token-state match: each reference token's best cosine among the answer's (recall), and the reverse
    (precision); reference tokens that the question already has (cosine >= 0.9 to a question token) are left out."""
    if len(a_st) == 0 or len(r_st) == 0:
        return 0.0, 0.0, 0.0
    if len(q_st):
        keep = (r_st @ q_st.T).max(1) < 0.9
        r_st = r_st[keep] if keep.any() else r_st
    sim = r_st @ a_st.T
    rec, prec = float(sim.max(1).mean()), float(sim.max(0).mean())
    return rec, prec, 2 * rec * prec / (rec + prec) if rec + prec > 0 else 0.0


def minilm_encoder(spec: str = "", batch_size: int = 64):
    """texts -> (pooled rows L2-normalised, [token states of each text, L2-normalised, content pieces only])."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from paraqa_utils.assets import resolve_model

    loaded: list = []
    drop = set(text.FUNCTION_WORDS)

    def encode(texts: Sequence[str]):
        if not loaded:
            path = resolve_model("embedder", spec)
            loaded.extend([AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()])
        tok, model = loaded
        pooled, states = [], []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                chunk = [t or "" for t in texts[i:i + batch_size]]
                enc = tok(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9),
                                                            dim=-1))
                unit = torch.nn.functional.normalize(hidden, dim=-1)
                for j, ids in enumerate(enc["input_ids"]):
                    pieces = tok.convert_ids_to_tokens(ids)
                    keep = [p for p, piece in enumerate(pieces) if enc["attention_mask"][j, p] and
                            piece not in tok.all_special_tokens and any(c.isalnum() for c in piece) and
                            piece not in drop]
                    states.append(unit[j, keep].numpy())
        out = torch.cat(pooled).numpy() if pooled else np.zeros((0, 384), dtype=np.float32)
        return out, states
    return encode



