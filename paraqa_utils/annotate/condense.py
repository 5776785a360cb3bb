"""Condensation filters (paper §1): category/valence consistency, dominant-emotion occurrence, class balancing."""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any, Sequence

# [decided] Which valence polarities each category may have. The paper names thresholds 0.5 and 0.4 but not
# their exact use; ours: positive if valence > 0.5, negative if < 0.4, in between neutral/ambiguous.
# Surprise is positive or ambiguous in dimensional corpora (MSP-Podcast-style ratings), rarely clearly negative;
# 'other' and 'unknown' carry no sentiment, so the filter cannot test them.
ALLOWED_POLARITY: dict[str, set[str]] = {
    "happy": {"positive"},
    "angry": {"negative"}, "sad": {"negative"}, "fearful": {"negative"}, "disgusted": {"negative"},
    "neutral": {"neutral"},
    "surprised": {"positive", "neutral"},
    "other": {"positive", "neutral", "negative"}, "unknown": {"positive", "neutral", "negative"},
}


def valence_polarity(valence: float, positive_above: float = 0.5, negative_below: float = 0.4) -> str:
    """'positive' | 'negative' | 'neutral' for a valence on 0..1."""
    if valence > positive_above:
        return "positive"
    if valence < negative_below:
        return "negative"
    return "neutral"


def is_consistent(emotion: str | None, valence: float | None, positive_above: float = 0.5,
                  negative_below: float = 0.4) -> bool | None:
    """Does the category's sentiment agree with the valence? None when either is unknown (nothing to test)."""
    if emotion is None or valence is None or emotion not in ALLOWED_POLARITY:
        return None
    return valence_polarity(valence, positive_above, negative_below) in ALLOWED_POLARITY[emotion]


def apply_consistency(segments: list[dict[str, Any]], positive_above: float = 0.5,
                      negative_below: float = 0.4) -> int:
    """Mark windows whose category and valence disagree (kept=False, drop_reason); returns how many."""
    n = 0
    for s in segments:
        if not s.get("kept", True):
            continue
        ok = is_consistent(s.get("emotion"), s.get("valence"), positive_above, negative_below)
        if ok is False:
            pol = valence_polarity(s["valence"], positive_above, negative_below)
            s["kept"], s["drop_reason"] = False, f"inconsistent: {s['emotion']} with {pol} valence {s['valence']:.2f}"
            n += 1
    return n


def dominant(segments: Sequence[dict[str, Any]]) -> tuple[str | None, float]:
    """The emotion of most windows (ties: the longer total duration) and the share of windows it covers."""
    labelled = [s for s in segments if s.get("emotion") is not None]
    if not labelled:
        return None, 0.0
    counts = Counter(s["emotion"] for s in labelled)
    dur: Counter = Counter()
    for s in labelled:
        dur[s["emotion"]] += float(s["end_s"]) - float(s["start_s"])
    best = max(counts, key=lambda e: (counts[e], dur[e]))
    return best, counts[best] / len(labelled)


def occurrence_check(segments: Sequence[dict[str, Any]], min_share: float) -> tuple[str | None, float, str | None]:
    """(dominant emotion of the kept windows, its share, drop reason or None).

    The paper keeps an utterance only if one emotion covers enough of its windows; a clip whose windows all
    failed the consistency filter has no reliable emotion left and is dropped too.
    """
    kept = [s for s in segments if s.get("kept", True)]
    if not kept:
        return None, 0.0, "no window passed the consistency filter"
    emo, share = dominant(kept)
    if emo is None:
        return None, 0.0, "no emotion label on any kept window"
    if share < min_share:
        return emo, share, f"no dominant emotion: {emo} covers {share:.0%} of kept windows (< {min_share:.0%})"
    return emo, share, None


def balance(records: Sequence[dict[str, Any]], max_ratio: float, seed: int = 0) -> list[int]:
    """Indices of kept records to drop so no dominant emotion has more than max_ratio x the rarest, per split.

    Balancing is per split so the test split's composition stays comparable across runs; `max_ratio <= 0` is off.
    """
    if max_ratio <= 0:
        return []
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.get("kept") and r.get("dominant_emotion"):
            groups[(r.get("split") or "", r["dominant_emotion"])].append(i)
    drop: list[int] = []
    rng = random.Random(seed)
    for split in {k[0] for k in groups}:
        sizes = {k: v for k, v in groups.items() if k[0] == split}
        cap = max(1, int(min(len(v) for v in sizes.values()) * max_ratio))
        for idx in sizes.values():
            if len(idx) > cap:
                drop += rng.sample(idx, len(idx) - cap)
    return sorted(drop)
