"""The LLM judge (rubric 0-5 and binary 0/1) on the shared LLM client, with robust reply parsing."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from paraqa_utils import prompts, runs
from paraqa_utils.llm import LLMClient, LLMRequest

RUBRICS = {"rubric_v1": 5, "rubric_para_v1": 5, "binary_v1": 1, "audiobench_v1": 5}  # name -> top rating
# AudioBench-parity profile: a free-text reply ending in "Rating: N" (no JSON schema), and a reply without one is
# scored 0 and counted, as AudioBench scores it; our own rubrics ask for JSON and leave an unparsed reply unscored
FREE_TEXT_ZERO = {"audiobench_v1"}
NO_RATING = "no 'Rating: N' in the reply"
SCALE_TO_100 = {5: 20.0, 1: 100.0}  # the paper reports mean x 20 (0-5) and x 100 (0/1)
LAST_RATING = re.compile(r"(?:rating|score)\W{0,3}(\d+)", re.IGNORECASE)
LAST_INT = re.compile(r"(?<![\d.])(\d+)(?![\d.])")


@dataclass(frozen=True)
class JudgeConfig:
    """One judge = a model behind an endpoint + a rubric + sampling; all recorded with every score."""
    name: str
    rubric: str
    client: LLMClient
    temperature: float = 0.0
    max_tokens: int = 160
    n_runs: int = 1

    @property
    def top(self) -> int:
        return RUBRICS[self.rubric]


def rubric_path(rubric: str) -> Path:
    if rubric not in RUBRICS:
        raise ValueError(f"unknown rubric '{rubric}'; known: {', '.join(RUBRICS)}")
    return prompts.path(f"{rubric}.txt")


def rubric_text(rubric: str) -> str:
    return rubric_path(rubric).read_text()


def rubric_sha(rubric: str) -> str:
    return runs.sha256_file(rubric_path(rubric))


def schema(top: int) -> dict[str, Any]:
    return {"type": "object", "properties": {"explanation": {"type": "string"},
                                             "rating": {"type": "integer", "minimum": 0, "maximum": top}},
            "required": ["explanation", "rating"]}


def fill(template: str, question: str, reference: str, answer: str) -> str:
    # str.replace, not format: the templates show a JSON example with braces
    return (template.replace("{question}", question).replace("{reference}", reference)
            .replace("{answer}", answer if answer.strip() else "(no answer)"))


def parse_rating(text: str, data: Any, top: int) -> tuple[int | None, str]:
    """The rating from a structured reply, else the last 'rating: N' in the text, else the last integer in range.

    Returns (None, reason) when nothing usable is found: a parse failure is counted, never scored as 0.
    """
    if isinstance(data, dict) and isinstance(data.get("rating"), (int, float)) and not isinstance(data["rating"], bool):
        r = data["rating"]
        if float(r).is_integer() and 0 <= r <= top:
            return int(r), ""
        return None, f"rating {r} outside 0-{top}"
    hits = LAST_RATING.findall(text or "") or LAST_INT.findall(text or "")
    for h in reversed(hits):
        if 0 <= int(h) <= top:
            return int(h), "parsed from text"
    return None, ("no rating in reply" if not hits else f"rating {hits[-1]} outside 0-{top}")


def requests_for(cfg: JudgeConfig, items: Iterable[dict[str, Any]]) -> list[LLMRequest]:
    """One request per item per run; runs after the first use their own seed so they can differ."""
    template = rubric_text(cfg.rubric)
    out = []
    for it in items:
        content = fill(template, it["question"], it["reference"], it.get("answer") or "")
        for run in range(cfg.n_runs):
            out.append(LLMRequest(messages=[{"role": "user", "content": content}], temperature=cfg.temperature,
                                  max_tokens=cfg.max_tokens, seed=run if cfg.n_runs > 1 else None,
                                  json_schema=None if cfg.rubric in FREE_TEXT_ZERO else schema(cfg.top),
                                  schema_name="judgment",
                                  tag={"item": it, "run": run}))
    return out


def judge_items(cfg: JudgeConfig, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Judge items (each: item_id, condition, test_set, question_type, question, reference, answer).

    Items without a reference are not sent: they come back with parse_ok False and reason 'missing reference'.
    """
    sendable = [it for it in items if (it.get("reference") or "").strip()]
    results = cfg.client.complete(requests_for(cfg, sendable))
    sha = rubric_sha(cfg.rubric)
    rows = []
    for res in results:
        it, run = res.tag["item"], res.tag["run"]
        if cfg.rubric in FREE_TEXT_ZERO and (res.ok or res.text):
            found = LAST_RATING.findall(res.text or "")
            score, why = (int(found[-1]), "") if found and int(found[-1]) <= cfg.top else (None, NO_RATING)
        elif cfg.rubric in FREE_TEXT_ZERO:
            score, why = None, res.error_kind  # no reply at all (endpoint error): not a judgment, never a 0
        else:
            score, why = parse_rating(res.text, res.data, cfg.top) if (res.ok or res.text) else (None, res.error_kind)
        rows.append(_row(cfg, it, run, sha, score, why, res.text, (res.data or {}).get("explanation", "")
                         if isinstance(res.data, dict) else "", res.model or cfg.client.model))
    for it in items:
        if not (it.get("reference") or "").strip():
            rows.extend(_row(cfg, it, r, sha, None, "missing reference", "", "", cfg.client.model)
                        for r in range(cfg.n_runs))
    return rows


def _row(cfg: JudgeConfig, it: dict, run: int, sha: str, score: int | None, why: str, raw: str, expl: str,
         model: str) -> dict[str, Any]:
    zero = cfg.rubric in FREE_TEXT_ZERO and why == NO_RATING  # a reply without a rating: 0, as AudioBench
    return {"item_id": it["item_id"], "condition": it["condition"], "test_set": it["test_set"],
            "question_type": it.get("question_type"), "judge": cfg.name, "rubric": cfg.rubric,
            "judge_model": model, "prompt_sha256": sha, "sampling": {"temperature": cfg.temperature,
                                                                     "max_tokens": cfg.max_tokens},
            "run": run, "score": 0 if zero else score,
            "score_100": 0.0 if zero else (None if score is None else score * SCALE_TO_100[cfg.top]),
            "parse_ok": score is not None, "parse_note": why + ("; scored 0 (AudioBench parity)" if zero else ""),
            "unparsed_policy": "zero" if cfg.rubric in FREE_TEXT_ZERO else "unscored", "explanation": expl, "raw": raw,
            "answer_chars": len(it.get("answer") or ""), "probe": it.get("probe")}


OPEN_SETS = ("cpqa_ref", "cpqa_llm", "cpqa_human")
LABEL_SETS = ("emotion", "gender")
ASR_SETS = ("asr",)  # scored by word error rate only: never sent to an LLM judge


def load_items(stage: runs.Stage, max_items_per_set: int = -1, seed: int = 0) -> list[dict[str, Any]]:
    """Predictions joined with their test items (question, reference, label), hash-checked reads.

    A prediction whose item is unknown is an error (it would be scored against nothing); an empty answer is kept
    and judged as no answer. `max_items_per_set` keeps the same item ids across all conditions (judged_subset).
    """
    conds = runs.read_json(stage.input("03_explicit_merge/conditions.json"))
    tests: dict[str, dict[str, Any]] = {}
    for name in (*OPEN_SETS, *LABEL_SETS, *ASR_SETS):
        rel = f"03_explicit_merge/test_{name}.jsonl"
        if rel.split("/", 1)[1] in runs.read_json(stage.run_dir / "03_explicit_merge" / runs.STAGE_FILE)["outputs"]:
            for it in runs.read_jsonl(stage.input(rel)):
                tests[it["item_id"]] = it
    preds = list(runs.read_jsonl(stage.input("04_finetune/predictions.jsonl")))
    unknown = sorted({p["item_id"] for p in preds} - set(tests))
    if unknown:
        raise ValueError(f"{len(unknown)} prediction(s) refer to unknown test items, e.g. {unknown[:3]}")
    items = []
    for p in preds:
        t = tests[p["item_id"]]
        items.append({"item_id": p["item_id"], "condition": p["condition"], "test_set": t["test_set"],
                      "question_type": t.get("question_type"), "question": t["question"],
                      "reference": t.get("reference") or "", "label": t.get("label"), "answer": p.get("answer") or ""})
    # 04's external_models (models not trained by the run) are declared in its metrics, and judged like the rest
    m04 = stage.run_dir / "04_finetune" / "metrics.json"
    known = set(conds) | {"zero_shot"} | set((runs.read_json(m04) if m04.exists() else {}).get("external_models", {}))
    stray = sorted({it["condition"] for it in items} - known)
    if stray:
        raise ValueError(f"predictions for conditions not built by 03_explicit_merge nor declared as 04's "
                         f"external_models: {stray}")
    return judged_subset(items, max_items_per_set, seed)


def judged_subset(items: list[dict[str, Any]], max_items_per_set: int = -1, seed: int = 0) -> list[dict[str, Any]]:
    """At most `max_items_per_set` item ids per test set (-1: all), drawn from the seed, the same ids for every
    condition: what the LLM judge scores when its calls must be few. Scorers without an LLM (labels, WER,
    similarity) take every item."""
    import random

    if max_items_per_set < 0:
        return list(items)
    set_of = {it["item_id"]: it["test_set"] for it in items}
    by_set: dict[str, list[str]] = {}
    for iid in sorted(set_of):
        by_set.setdefault(set_of[iid], []).append(iid)
    rng = random.Random(seed)
    keep = {i for ids in by_set.values() for i in rng.sample(ids, min(max_items_per_set, len(ids)))}
    return [it for it in items if it["item_id"] in keep]


def scores_table(judgments: list[dict[str, Any]]) -> "pd.DataFrame":
    """condition x test set x question type x judge: mean 0-100 score over items (runs averaged first)."""
    import pandas as pd

    j = pd.DataFrame([r for r in judgments if not r.get("probe")])
    if j.empty:
        return pd.DataFrame(columns=["judge", "condition", "test_set", "question_type", "score", "n_items",
                                     "parse_fail_rate"])
    per_item = j.groupby(["judge", "condition", "test_set", "question_type", "item_id"], dropna=False).agg(
        score=("score_100", "mean"), ok=("parse_ok", "mean"), spread=("score_100", "std")).reset_index()
    return per_item.groupby(["judge", "condition", "test_set", "question_type"], dropna=False).agg(
        score=("score", "mean"), n_items=("item_id", "count"), parse_fail_rate=("ok", lambda s: 1 - s.mean()),
        run_spread=("spread", "mean")).reset_index()
