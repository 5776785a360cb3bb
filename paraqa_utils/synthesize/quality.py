"""Stage 02's check on the pairs it kept: does each answer say what its evidence supports?

Per question type, on the kept pairs (our measure, PAPER.md step 2 asks for label-consistent QA):
- CE and E answers name the annotated emotion of their evidence segments (a label word of that emotion);
- CG and G answers name the evidence's gender (woman/man and the like);
- C answers share at least one content word with the words spoken in their evidence segments.
A pair without evidence segments is checked against the whole clip and counted as such. D (delivery) has no
label to check and is left out.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from paraqa_utils.text import (UNUSABLE_EMOTIONS, content_words, dominant_label, label_lexicon, mentions,
                                segment_words)

CHECK = {"CE": "emotion", "E": "emotion", "CG": "gender", "G": "gender", "C": "words"}


def evidence(qa: dict[str, Any], ann: dict[str, Any]) -> tuple[list[dict], bool]:
    """The evidence segments of a pair (all segments when it names none) and whether it named any."""
    segs = ann.get("segments") or []
    picked = [segs[i] for i in qa.get("evidence_segments") or [] if 0 <= i < len(segs)]
    return (picked, True) if picked else (segs, False)


def spoken_words(segs: Sequence[dict], ann: dict[str, Any]) -> str:
    return " ".join(w for ws in segment_words(ann, segs) for w in ws)


def check_pair(qa: dict[str, Any], ann: dict[str, Any], lex: dict[str, dict[str, set[str]]]) -> bool | None:
    """True/False for a checkable pair, None when its type or its evidence has nothing to check against."""
    what = CHECK.get(qa["question_type"])
    segs, _ = evidence(qa, ann)
    if what == "words":
        said = content_words(spoken_words(segs, ann))
        return bool(said & content_words(qa["answer"])) if said else None
    if what is None:
        return None
    want = dominant_label(segs, what)
    if want in UNUSABLE_EMOTIONS:
        return None
    named = {lab for _, labs in mentions(qa["answer"], lex[what], set()) for lab in labs}
    return want in named


def kept_quality(kept: Sequence[dict], clips: Sequence[dict], label_words: str) -> dict[str, Any]:
    """{question_type: {n, checked, passed, share, with_evidence}} over the kept pairs, and the overall share."""
    anns = {a["clip_id"]: a for a in clips}
    lex = label_lexicon(label_words)
    n, checked, passed, with_ev = Counter(), Counter(), Counter(), Counter()
    for qa in kept:
        t = qa["question_type"]
        ann = anns.get(qa["clip_id"], {})
        n[t] += 1
        with_ev[t] += evidence(qa, ann)[1]
        ok = check_pair(qa, ann, lex)
        if ok is not None:
            checked[t] += 1
            passed[t] += ok
    per = {t: {"n": n[t], "checked": checked[t], "passed": passed[t], "with_evidence": with_ev[t],
               "share": round(passed[t] / checked[t], 4) if checked[t] else None, "check": CHECK.get(t, "none")}
           for t in sorted(n)}
    tot_c, tot_p = sum(checked.values()), sum(passed.values())
    return {"per_type": per, "checked": tot_c, "passed": tot_p,
            "share": round(tot_p / tot_c, 4) if tot_c else None}
