"""REPORT.md's Verdict: plain sentences generated from the figures (the learning block, the main table's relative
gains with their bootstrap CIs, the paper's direction, and 05's verdict on the judge), plus the same facts as
metrics."""
from __future__ import annotations

from typing import Any

import pandas as pd

from paraqa_utils.analysis.direction import verdict_sentence as direction_verdict
from paraqa_utils.analysis.explicit import explicit_sentences
from paraqa_utils.analysis.learning import EMOTION_UA_MARGIN, MIN_GENDER_ACCURACY, MIN_LOSS_DROP, ZERO_SHOT

NOT_EVIDENCE = "the judge scores below are not evidence"
VALIDITY_SOURCE = "paraqa_utils/judge/validity.py"
TASK_OF = {"asr_wer": "asr", "emotion_ua": "emotion", "gender_accuracy": "gender"}


def _num(x: Any) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def _check_text(metric: str, ch: dict[str, Any], chance: float | None) -> str:
    v, need = ch["value"], ch["needs"]
    if metric == "loss_drop":
        what = ("no training loss logged" if v is None else
                f"training loss {'fell' if v >= 0 else 'rose'} by {abs(v):.0%}")
        bar = f"needs a fall of at least {need:.0%}"
    elif metric == "asr_wer":
        what = "no ASR WER" if v is None else f"ASR WER {v:.2f}"
        bar = f"needs below {ZERO_SHOT}'s {need:.2f}" if need is not None else f"{ZERO_SHOT} has no WER to compare with"
    elif metric == "gender_accuracy":
        what, bar = ("no gender accuracy" if v is None else f"gender accuracy {v:.2f}"), f"needs at least {need:.2f}"
    else:
        what = "no emotion UA" if v is None else f"emotion UA {v:.2f}"
        bar = (f"needs at least {need:.2f}: chance {chance:.2f} + {EMOTION_UA_MARGIN:.2f}" if need is not None
               else "no chance level (no emotion test set)")
    return f"{what} ({'met' if ch['ok'] else 'not met'}: {bar})"


def _names(conds: list[str]) -> str:
    return ", ".join(f"`{c}`" for c in conds) or "none"


def learning_sentences(block: dict[str, Any]) -> list[str]:
    """Which conditions learned, and for each why (or why not); tasks a condition was not trained for are named,
    not counted against it."""
    conds = block.get("conditions", {})
    trained = [c for c in conds if c != ZERO_SHOT]
    if not trained:
        return ["No trained condition to judge: 04_finetune recorded none (only zero_shot, or nothing)."]
    learned = [c for c in trained if conds[c]["learned"]]
    rest = [c for c in trained if not conds[c]["learned"]]
    out = [f"Conditions that learned: {_names(learned)}. Conditions that did not: {_names(rest)}. A condition learned "
           f"when its training loss fell by at least {MIN_LOSS_DROP:.0%} (mean of the last tenth of its steps "
           f"against the first tenth), its ASR WER is below {ZERO_SHOT}'s, its gender accuracy is at least "
           f"{MIN_GENDER_ACCURACY:.2f} and its emotion UA at least chance + {EMOTION_UA_MARGIN:.2f}, each only for "
           "a task its training mixture holds."]
    if block.get("untrained_conditions"):
        out.append(f"03_explicit_merge also built {_names(block['untrained_conditions'])}; this run's 04_finetune did "
                   "not train them (its `conditions` parameter), so nothing here is said of them.")
    chance = block.get("emotion_ua_chance", {}).get("value")
    for c in trained:
        row = conds[c]
        parts = [_check_text(m, ch, chance) for m, ch in row["checks"].items() if ch["ok"] is not None]
        skipped = [TASK_OF[m] for m, ch in row["checks"].items() if ch["ok"] is None]
        tail = (f"; not trained for {', '.join(skipped)}, so not judged on it" if skipped else "")
        cost = [f"{row['train_minutes']:.1f} min of training"] if row.get("train_minutes") else []
        if row.get("loss_bar_first_met_step"):
            cost.append(f"loss target first met at step {row['loss_bar_first_met_step']} of {row['loss_drop']['n']}")
        cost_text = f" ({', '.join(cost)})" if cost else ""
        out.append(f"`{c}` {'learned' if row['learned'] else 'did not learn'}{cost_text}: {'; '.join(parts)}{tail}.")
    return out


# issue 26's bar for "the Speech-LLM hears" (on the demo's speaker-disjoint test split)
HEARS = {"asr_wer": 0.5, "gender_accuracy": 0.85, "emotion_share_of_annotator": 0.6}


def hearing(learning: dict[str, Any], baseline: str = "baseline") -> dict[str, Any]:
    """Does `baseline` hear? Its ASR WER, gender accuracy and emotion UA (against the annotator's UA on the same
    items, from the explicit block) beside the base as built (zero_shot); `hears` None when a figure is missing."""
    conds = learning.get("conditions", {})
    ann = [r.get("annotator_ua") for r in learning.get("explicit_method", {}).get("conditions", {}).values()]
    ann_ua = next((a for a in ann if a is not None), None)
    out: dict[str, Any] = {"baseline": baseline, "annotator_ua": ann_ua, "bar": HEARS, "figures": {}}
    for c in (ZERO_SHOT, baseline):
        row = conds.get(c) or {}
        out["figures"][c] = {m: (row.get(m) or {}).get("value") for m in ("asr_wer", "gender_accuracy", "emotion_ua")}
    f = out["figures"][baseline]
    if baseline not in conds or None in f.values() or ann_ua is None:
        out["hears"] = None
    else:
        out["hears"] = bool(f["asr_wer"] <= HEARS["asr_wer"] and f["gender_accuracy"] >= HEARS["gender_accuracy"]
                            and f["emotion_ua"] >= HEARS["emotion_share_of_annotator"] * ann_ua)
    return out


def hearing_sentence(h: dict[str, Any]) -> str:
    def fig(c: str) -> str:
        v = h["figures"][c]
        txt = lambda k, fmt: "n/a" if v[k] is None else format(v[k], fmt)  # noqa: E731
        return f"ASR WER {txt('asr_wer', '.2f')}, gender accuracy {txt('gender_accuracy', '.2f')}, emotion UA {txt('emotion_ua', '.2f')}"
    ann = "no annotator UA to compare with" if h["annotator_ua"] is None else f"the annotator's UA {h['annotator_ua']:.2f}"
    verdict = {True: "hears", False: "does not fully hear", None: "cannot be judged to hear or not"}[h["hears"]]
    b = HEARS
    return (f"The Speech-LLM {verdict}: `{h['baseline']}` reaches {fig(h['baseline'])} ({ann}; the bar: WER <= "
            f"{b['asr_wer']}, gender >= {b['gender_accuracy']}, UA >= {b['emotion_share_of_annotator']} x the "
            f"annotator's); the aligned base as built (`{ZERO_SHOT}`): {fig(ZERO_SHOT)}.")


def judge_sentences(validation: dict[str, Any] | None) -> tuple[bool, list[str]]:
    """(passed, sentences) from 05's validation.json verdict; missing or failed: the scores are not evidence."""
    if not validation:
        return False, [f"05_judge left no validation.json, so the judge was not validated: {NOT_EVIDENCE}."]
    v = validation.get("verdict")
    if not v:
        return False, [f"05_judge's validation.json holds no verdict on the judge: {NOT_EVIDENCE}."]
    if v["passed"]:
        first = f"The judge passed its validity checks ({', '.join(f'`{j}`' for j in v['judges'])})."
    else:
        failed = "; ".join(f"`{name}`: {', '.join(j['failed'])}" for name, j in v["judges"].items() if not j["passed"])
        first = f"The judge did not pass its validity checks ({failed or 'no judge was checked'}), so {NOT_EVIDENCE}."
    return bool(v["passed"]), [first, f"Passed means (defined once, in `{VALIDITY_SOURCE}`): {v['definition']}"]


def effects(main: pd.DataFrame, baseline: str) -> list[dict[str, Any]]:
    """Each judge x condition's relative gain over `baseline` with its 95 % CI; held = the CI excludes 0."""
    out = []
    for r in (main.to_dict("records") if len(main) else []):
        if r["condition"] == baseline:
            continue
        gain, lo, hi = (_num(r.get(k)) for k in ("rel_improvement_pct", "ci_low", "ci_high"))
        held = lo is not None and hi is not None and (lo > 0 or hi < 0)
        out.append({"judge": r["judge"], "condition": r["condition"], "rel_improvement_pct": gain, "ci_low": lo,
                    "ci_high": hi, "held": held, "note": r.get("note") if isinstance(r.get("note"), str) else ""})
    return out


def _effect_text(e: dict[str, Any]) -> str:
    if e["rel_improvement_pct"] is None:
        return f"`{e['condition']}` (no gain: {e['note'] or 'no paired items'})"
    gain = f"`{e['condition']}` {e['rel_improvement_pct']:+.1f} %"
    if e["ci_low"] is None or e["ci_high"] is None:
        return f"{gain} ({e['note'] or 'no confidence interval'})"
    ci = f"CI {e['ci_low']:+.1f} to {e['ci_high']:+.1f} %"
    return f"{gain} ({ci}{', a drop' if e['held'] and e['ci_high'] < 0 else ''}{'' if e['held'] else ', includes 0'})"


def effect_sentences(effs: list[dict[str, Any]], baseline: str, test_set: str) -> list[str]:
    """Per judge: the effects over `baseline` that held and those that did not."""
    if not effs:
        return [f"No judge scores of another condition beside `{baseline}` on {test_set}: no effect to report."]
    out = []
    for judge in dict.fromkeys(e["judge"] for e in effs):
        mine = [e for e in effs if e["judge"] == judge]
        held = ", ".join(_effect_text(e) for e in mine if e["held"]) or "none"
        not_held = ", ".join(_effect_text(e) for e in mine if not e["held"]) or "none"
        out.append(f"Judge `{judge}` on {test_set}, relative gain over `{baseline}` with its 95 % paired-bootstrap "
                   f"CI (held only when the CI excludes 0): held: {held}. Did not hold: {not_held}.")
    return out


def build_verdict(learning: dict[str, Any], main: pd.DataFrame, validation: dict[str, Any] | None, baseline: str,
            test_set: str, direction: dict[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json's `verdict` and REPORT.md's Verdict: {judge_passed, learned: {condition: bool}, effects,
    explicit_method_works, direction_holds: {comparison: bool, None when not tested} (only with a direction block),
    sentences} (learning, the explicit method, the judge's validity, the paper's direction, then the effects)."""
    passed, judge_text = judge_sentences(validation)
    effs = effects(main, baseline)
    hears = hearing(learning, baseline)
    extra = ({"direction_holds": {k: e.get("holds") for k, e in direction.items()}} if direction is not None else {})
    return {"judge_passed": passed, **extra, "hears": hears,
            "learned": {c: r["learned"] for c, r in learning.get("conditions", {}).items() if c != ZERO_SHOT},
            "effects": effs,
            "explicit_method_works": {c: r["meets_annotator_bar"] and r["vs_baseline"]["excludes_zero"]
                                      for c, r in learning.get("explicit_method", {}).get("conditions", {}).items()},
            "sentences": [*learning_sentences(learning), *explicit_sentences(learning.get("explicit_method", {})),
                          *judge_text, hearing_sentence(hears), *([direction_verdict(direction)] if direction is not None else []),
                          *effect_sentences(effs, baseline, test_set)]}


def verdict_text(v: dict[str, Any]) -> str:
    return "\n\n".join(v["sentences"])
