"""Does the explicit method work? Each explicit condition's emotion UA against the annotator's own UA on the same
test items (the labels its prompts carry come from that annotator), and its UA gain over the non-explicit
baseline with a paired-bootstrap 95 % CI."""
from __future__ import annotations

from typing import Any

import pandas as pd

from paraqa_utils import runs, stats
from paraqa_utils.analysis.tables import Inputs
from paraqa_utils.text import dominant_label

MIN_SHARE_OF_ANNOTATOR = 0.9  # an explicit condition's UA must reach this share of the annotator's UA


def annotator_answers(inp: Inputs, facet: str = "emotion") -> dict[str, str | None]:
    """item_id -> the label 01's annotation gives the item's clip (the label covering most of its duration): what
    the explicit block of that item says, read as one answer."""
    tests = inp.jsonl(f"03_explicit_merge/test_{facet}.jsonl")
    anns = inp.jsonl("01_annotate/annotations.jsonl")
    if tests.empty or anns.empty:
        return {}
    segs = dict(zip(anns["clip_id"], anns["segments"]))
    return {it: dominant_label(segs.get(c) or [], facet) for it, c in zip(tests["item_id"], tests["clip_id"])}


def explicit_conditions(inp: Inputs) -> list[str]:
    """Conditions whose prompts carry the annotator's labels (03's conditions.json)."""
    p = inp.path("03_explicit_merge/conditions.json")
    return [c for c, spec in (runs.read_json(p) if p else {}).items() if spec.get("explicit")]


def _ua(labels: list[str], answers: list[str | None]) -> float:
    return stats.classification_scores(labels, answers)["ua"]


def explicit_method(inp: Inputs, baseline: str = "baseline", n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """{conditions: {c: {n, emotion_ua, annotator_ua, share_of_annotator, meets_annotator_bar, vs_baseline: {diff,
    ci_low, ci_high, n_items, excludes_zero}}}, min_share_of_annotator, baseline, note}.

    Every figure of a condition is on the same items: the emotion items that it and `baseline` both answered and
    whose clip 01 labelled. A condition that 04 did not train or 05 did not map is absent.
    """
    out: dict[str, Any] = {"conditions": {}, "min_share_of_annotator": MIN_SHARE_OF_ANNOTATOR, "baseline": baseline}
    p = inp.path("05_judge/label_mapping.csv")
    lab = pd.read_csv(p) if p else pd.DataFrame()
    annotator = annotator_answers(inp)
    if lab.empty or not annotator:
        out["note"] = "no emotion answers mapped to labels (05) or no annotation (01): nothing to compare"
        return out
    lab = lab[lab["test_set"] == "emotion"]
    mapped = {c: dict(zip(g["item_id"], g["mapped"].where(g["mapped"].notna(), None))) for c, g in lab.groupby("condition")}
    gold = dict(zip(lab["item_id"], lab["label"]))
    for c in explicit_conditions(inp):
        if c not in mapped:
            continue
        base = mapped.get(baseline, {})
        items = [i for i in mapped[c] if i in base and annotator.get(i) is not None]
        y = [gold[i] for i in items]
        mine, ann, theirs = [mapped[c][i] for i in items], [annotator[i] for i in items], [base[i] for i in items]
        ua, ann_ua = (_ua(y, mine), _ua(y, ann)) if items else (None, None)
        share = ua / ann_ua if ann_ua else None
        boot = stats.paired_bootstrap_ua(y, theirs, mine, n_resamples, seed)
        out["conditions"][c] = {
            "n": len(items), "emotion_ua": ua, "annotator_ua": ann_ua, "share_of_annotator": share,
            "meets_annotator_bar": share is not None and share >= MIN_SHARE_OF_ANNOTATOR,
            "vs_baseline": {**boot, "excludes_zero": boot["ci_low"] is not None and (boot["ci_low"] > 0 or boot["ci_high"] < 0)}}
    if not out["conditions"]:
        out["note"] = f"no explicit condition was answered and mapped beside `{baseline}`"
    return out


def explicit_table(block: dict[str, Any]) -> pd.DataFrame:
    """One row per explicit condition: items, its UA, the annotator's, the share, and the gain over baseline."""
    rows = [{"condition": c, "n_items": r["n"], "emotion_ua": r["emotion_ua"], "annotator_ua": r["annotator_ua"],
             "share_of_annotator": r["share_of_annotator"], "meets_bar": r["meets_annotator_bar"],
             f"ua_gain_over_{block['baseline']}": r["vs_baseline"]["diff"], "ci_low": r["vs_baseline"]["ci_low"],
             "ci_high": r["vs_baseline"]["ci_high"]} for c, r in block.get("conditions", {}).items()]
    return pd.DataFrame(rows)


def explicit_sentences(block: dict[str, Any]) -> list[str]:
    """The verdict on the explicit method, one sentence per explicit condition."""
    if not block.get("conditions"):
        return [f"The explicit method was not tested: {block.get('note', 'no explicit condition')}."]
    out = []
    for c, r in block["conditions"].items():
        if not r["n"]:
            out.append(f"`{c}`: no emotion item answered by both it and `{block['baseline']}`.")
            continue
        b = r["vs_baseline"]
        ci = ("no CI" if b["ci_low"] is None else f"95 % paired-bootstrap CI {b['ci_low']:+.2f} to {b['ci_high']:+.2f}"
              f"{', excludes 0' if b['excludes_zero'] else ', includes 0'}")
        share = "no ratio" if r["share_of_annotator"] is None else f"{r['share_of_annotator']:.2f}x"
        used = "the labels in the prompt are used" if r["meets_annotator_bar"] else "the labels are not fully used"
        verb = "meets" if r["meets_annotator_bar"] else "below"
        out.append(f"The explicit method in `{c}`: emotion UA {r['emotion_ua']:.2f} against the annotator's own "
                   f"{r['annotator_ua']:.2f} on the same {r['n']} items, {share} ({verb} the bar of "
                   f"{block['min_share_of_annotator']}x: {used}); over `{block['baseline']}` {b['diff']:+.2f} UA ({ci}).")
    return out
