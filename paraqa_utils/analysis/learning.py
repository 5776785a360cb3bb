"""Did each condition learn? Loss drop from 04's training logs, ASR WER, emotion UA and gender accuracy from 05,
each with its n, and the tasks a condition's 03 training mixture never held (not judged as failures)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from paraqa_utils.analysis.tables import Inputs

ZERO_SHOT = "zero_shot"  # 04's untrained floor: the reference ASR WER is its
MIN_LOSS_DROP = 0.3  # 1 - mean(last tenth of the steps' loss) / mean(first tenth)
MIN_GENDER_ACCURACY = 0.8
EMOTION_UA_MARGIN = 0.15  # over chance (1 / number of emotion classes in the emotion test set)
NOT_TRAINED = "not trained for it"
# metric -> (the 03 task it needs, its scale)
METRICS = {"asr_wer": ("asr", "word errors per reference word (lower is better)"),
           "emotion_ua": ("emotion", "unweighted accuracy 0-1, mean recall over classes"),
           "gender_accuracy": ("gender", "accuracy 0-1")}
LOSS_SCALE = "fraction of the first tenth's mean loss (1 - last / first)"


def loss_drop(losses: Sequence[float]) -> dict[str, Any]:
    """1 - mean(last tenth) / mean(first tenth) of the losses in step order (a tenth is at least one step);
    n = steps. None with fewer than 2 steps or a first tenth of 0."""
    x = np.asarray([v for v in losses if v is not None and np.isfinite(v)], dtype=float)
    k = max(1, len(x) // 10)
    first = float(x[:k].mean()) if len(x) >= 2 else 0.0
    return {"value": round(1 - float(x[-k:].mean()) / first, 4) if first > 0 else None, "n": int(len(x))}


def first_step_meeting_bar(losses: Sequence[float], bar: float = MIN_LOSS_DROP) -> int | None:
    """The first step s whose trailing window (a tenth of all steps, at least one) has a mean loss at most
    (1 - bar) x the first tenth's mean: when the loss-drop target was first met (None: never)."""
    x = np.asarray([v for v in losses if v is not None and np.isfinite(v)], dtype=float)
    k = max(1, len(x) // 10)
    if len(x) < 2 or x[:k].mean() <= 0:
        return None
    limit = (1 - bar) * x[:k].mean()
    return next((s for s in range(2 * k, len(x) + 1) if x[s - k:s].mean() <= limit), None)


def _figure(value: Any, n: Any) -> dict[str, Any]:
    ok = value is not None and not pd.isna(value)
    return {"value": round(float(value), 4) if ok else None,
            "n": int(n) if ok and n is not None and not pd.isna(n) else 0}


def emotion_chance(inp: Inputs) -> dict[str, Any]:
    """Chance UA: 1 / number of emotion classes among the emotion test set's labels (None without that set)."""
    labels = inp.jsonl("03_explicit_merge/test_emotion.jsonl")
    k = int(labels["label"].dropna().nunique()) if "label" in labels else 0
    return {"value": round(1 / k, 4) if k else None, "n_classes": k}


def learning_block(inp: Inputs) -> dict[str, Any]:
    """metrics.json's `learning`: {conditions: {c: {loss_drop, asr_wer, emotion_ua, gender_accuracy (each {value,
    n[, status]}), not_trained_for, learned, checks}}, emotion_ua_chance: {value, n_classes}, thresholds}."""
    m3, m4, m5 = inp.metrics("03_explicit_merge"), inp.metrics("04_finetune"), inp.metrics("05_judge")
    cls = pd.DataFrame(m5.get("classification") or [], columns=["condition", "test_set", "wa", "ua", "n"])
    cls = cls.drop_duplicates(["condition", "test_set"], keep="last").set_index(["condition", "test_set"])
    asr = m5.get("asr_wer") or {}
    external = sorted(m4.get("external_models") or {})  # answered, not trained here: the main table has them
    names = [c for c in dict.fromkeys([*m4.get("conditions", {}), *asr, *cls.index.get_level_values(0)])
             if c not in external]
    names.sort(key=lambda c: c != ZERO_SHOT)
    out: dict[str, Any] = {}
    for c in names:
        logs = inp.jsonl(f"04_finetune/{c}/train_log.jsonl") if c != ZERO_SHOT else pd.DataFrame()
        losses = logs.drop_duplicates("step", keep="last").sort_values("step")["loss"].tolist() if "loss" in logs else []
        row = {"loss_drop": loss_drop(losses) if c != ZERO_SHOT else {"value": None, "n": 0},
               "asr_wer": _figure((asr.get(c) or {}).get("value"), (asr.get(c) or {}).get("n")),
               "emotion_ua": _figure(*(cls.loc[(c, "emotion"), ["ua", "n"]] if (c, "emotion") in cls.index
                                       else (None, 0))),
               "gender_accuracy": _figure(*(cls.loc[(c, "gender"), ["wa", "n"]] if (c, "gender") in cls.index
                                            else (None, 0)))}
        row["loss_bar_first_met_step"] = first_step_meeting_bar(losses) if c != ZERO_SHOT else None
        secs = ((m4.get("conditions") or {}).get(c) or {}).get("train_seconds")
        row["train_minutes"] = round(secs / 60, 2) if secs else None
        mix = (m3.get("conditions") or {}).get(c) or {}
        row["not_trained_for"] = [task for task, _ in METRICS.values() if not mix.get(task)]
        for metric, (task, _) in METRICS.items():
            if task in row["not_trained_for"]:
                row[metric]["status"] = NOT_TRAINED
        out[c] = row
    chance = emotion_chance(inp)
    for c, row in out.items():
        row.update(assess(row, out.get(ZERO_SHOT), chance["value"]) if c != ZERO_SHOT
                   else {"learned": None, "checks": {}})
    built = list(m3.get("conditions") or {})
    return {"conditions": out, "emotion_ua_chance": chance,
            "untrained_conditions": [c for c in built if c not in (m4.get("conditions") or {})],
            "external_models": external,
            "thresholds": {"min_loss_drop": MIN_LOSS_DROP, "asr_wer": f"below {ZERO_SHOT}'s",
                           "min_gender_accuracy": MIN_GENDER_ACCURACY, "emotion_ua_margin_over_chance": EMOTION_UA_MARGIN}}


def assess(row: dict[str, Any], zero: dict[str, Any] | None, chance: float | None) -> dict[str, Any]:
    """{learned, checks: {metric: {ok, value, needs}}}: loss drop >= MIN_LOSS_DROP, ASR WER below zero_shot's,
    gender accuracy >= MIN_GENDER_ACCURACY, emotion UA >= chance + EMOTION_UA_MARGIN; a metric of a task the
    condition was not trained for is not checked (ok None, status 'not trained for it'); a missing figure fails."""
    zero_wer = ((zero or {}).get("asr_wer") or {}).get("value")
    needs = {"loss_drop": MIN_LOSS_DROP, "asr_wer": zero_wer, "gender_accuracy": MIN_GENDER_ACCURACY,
             "emotion_ua": None if chance is None else round(chance + EMOTION_UA_MARGIN, 4)}
    checks: dict[str, Any] = {}
    for metric, need in needs.items():
        value = row[metric]["value"]
        if row[metric].get("status") == NOT_TRAINED:
            checks[metric] = {"ok": None, "value": value, "needs": need, "status": NOT_TRAINED}
            continue
        ok = value is not None and need is not None and (value < need if metric == "asr_wer" else value >= need)
        checks[metric] = {"ok": bool(ok), "value": value, "needs": need}
    return {"learned": all(ch["ok"] is not False for ch in checks.values()), "checks": checks}


def _bar(condition: str, metric: str, figure: dict[str, Any], check: dict[str, Any]) -> str:
    """What the learning table says about one figure: not trained for it, untrained, or met / not met its bar."""
    if figure.get("status"):
        return figure["status"]
    if condition == ZERO_SHOT:
        return "untrained: no training log" if metric == "loss_drop" else ""
    if check.get("needs") is None:
        return ("met" if check.get("ok") else "not met") + " (no bar to compare with)"
    return f"{'met' if check['ok'] else 'not met'} (needs {'<' if metric == 'asr_wer' else '>='} {check['needs']})"


def learning_table(block: dict[str, Any]) -> pd.DataFrame:
    """The learning block as a readable table: condition, measure, value, scale, n, and whether it met its bar."""
    scales = {"loss_drop": LOSS_SCALE, **{m: scale for m, (_, scale) in METRICS.items()}}
    rows = [{"condition": c, "measure": metric, "value": row[metric]["value"], "scale": scale, "n": row[metric]["n"],
             "verdict": _bar(c, metric, row[metric], row.get("checks", {}).get(metric, {}))}
            for c, row in block.get("conditions", {}).items() for metric, scale in scales.items()]
    table = pd.DataFrame(rows, columns=["condition", "measure", "value", "scale", "n", "verdict"]).astype(object)
    return table.where(table.notna(), "")  # a missing figure reads as blank, not 'nan'
