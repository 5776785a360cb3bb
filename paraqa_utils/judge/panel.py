"""Stage 05's steps: the panel of LLM judges over every endpoint x rubric, the non-LLM scorers, metrics."""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import pandas as pd

from paraqa_utils import runs
from paraqa_utils.text import Embed
from paraqa_utils.judge import graded, scorers
from paraqa_utils.judge import validation as jv
from paraqa_utils.judge.llm_judge import ASR_SETS, LABEL_SETS, OPEN_SETS, JudgeConfig, judge_items, rubric_path
from paraqa_utils.judge.settings import JudgeSettings
from paraqa_utils.llm import LLMClient
from paraqa_utils.llm.server import llm_endpoint

LEDGER_COLUMNS = ["requests", "calls", "cache_hits", "retries", "failures", "prompt_tokens", "completion_tokens",
                  "wall_s"]


def open_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [it for it in items if it["test_set"] in OPEN_SETS]


def label_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [it for it in items if it["test_set"] in LABEL_SETS]


def asr_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [it for it in items if it["test_set"] in ASR_SETS]


def swap_probes(items: list[dict[str, Any]], seed: int, n: int) -> list[dict[str, Any]]:
    """Reference-swap probes (jv.probe_items) drawn from the open-ended items."""
    return jv.probe_items(open_items(items), seed, n)


def good_probes(stage: runs.Stage, seed: int, n: int) -> list[dict[str, Any]]:
    """Known-good reference-swap probes (jv.good_probe_items) from 03's open-ended test sets, whatever was predicted
    (the probe does not depend on the models): 2 x n judge calls. Their condition is "_probe"."""
    done = runs.read_json(stage.run_dir / "03_explicit_merge" / runs.STAGE_FILE)["outputs"]
    tests = [{**it, "condition": "_probe"} for name in OPEN_SETS if f"test_{name}.jsonl" in done
             for it in runs.read_jsonl(stage.input(f"03_explicit_merge/test_{name}.jsonl"))]
    return jv.good_probe_items(tests, seed, n)


def run_llm_judges(stage: runs.Stage, settings: JudgeSettings, items: list[dict[str, Any]],
                   probes: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every judge endpoint (settings.specs) x rubric: the 0-5 rubrics on the open-ended items and the probes (and,
    with rubrics_on_label_sets, the label items), the 0/1 rubric on the label items. Each judge's replies are
    cached under the stage's cache, so a resumed run re-judges nothing; models and rubric files are recorded with
    the stage. Sampling (runs, temperature, max tokens) and the client's limits come from the settings.

    All endpoints stay open until every judge is done (the embedded server serves the whole block).
    Returns (judgment rows, the LLM ledger per judge name)."""
    s = settings
    opened, labelled = open_items(items), label_items(items)
    rubric_items = opened + probes + (labelled if s.rubrics_on_label_sets else [])
    judgments: list[dict[str, Any]] = []
    ledgers: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        for spec in s.specs:
            ep = stack.enter_context(llm_endpoint(spec["base_url"], spec["model"], stage.dir, spec["api_key_env"],
                                                  n_threads=s.judge_server_threads or None))
            client = LLMClient([ep], cache_dir=stage.cache / "llm" / spec["name"], ledger_name=f"judge:{spec['name']}",
                               concurrency=s.concurrency, timeout_s=s.timeout_s, max_retries=s.max_retries,
                               price_table=s.price_table, response_format="auto")
            stage.record_model(f"judge:{spec['name']}", ep.model, endpoint=client.describe()["endpoints"])
            for rubric, on in [*((r, rubric_items) for r in s.rubrics), (s.binary_rubric, labelled)]:
                cfg = JudgeConfig(f"{spec['name']}/{rubric}", rubric, client, s.judge_temperature, s.judge_max_tokens,
                                  s.n_judge_runs)
                judgments += judge_items(cfg, on)
            ledgers[spec["name"]] = client.ledger.as_dict()
    for rubric in dict.fromkeys([*s.rubrics, s.binary_rubric]):
        stage.record_prompt(rubric_path(rubric))
    return judgments, ledgers


def ledger_table(ledgers: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per judge: requests, calls, cache hits, retries, failures, tokens, wall time."""
    return pd.DataFrame(ledgers).T.reindex(columns=LEDGER_COLUMNS)


def write_label_mapping(stage: runs.Stage, settings: JudgeSettings, items: list[dict[str, Any]],
                        embed: Embed | None) -> pd.DataFrame:
    """Label-set answers mapped to labels (keywords, then the nearest description at or above
    settings.min_label_similarity) -> label_mapping.csv."""
    lab = jv.label_table(label_items(items), embed, settings.min_label_similarity)
    lab[["item_id", "condition", "test_set", "label", "mapped", "map_method", "answer"]].to_csv(
        stage.dir / "label_mapping.csv", index=False)
    return lab


def write_classification(stage: runs.Stage, lab: pd.DataFrame) -> pd.DataFrame:
    """WA/UA/macro-F1 per condition and label set -> classification.csv (empty when no label items)."""
    classification = jv.classification_table(lab) if len(lab) else pd.DataFrame()
    classification.to_csv(stage.dir / "classification.csv", index=False)
    return classification


def write_asr(stage: runs.Stage, items: list[dict[str, Any]]) -> pd.DataFrame:
    """The asr set scored without any LLM: word error rate per condition (jv.asr_table) -> asr.csv."""
    asr = jv.asr_table(asr_items(items))
    asr.to_csv(stage.dir / "asr.csv", index=False)
    return asr


def write_similarity(stage: runs.Stage, items: list[dict[str, Any]], embed: Embed) -> pd.DataFrame:
    """Each answer's embedding similarity to its reference -> similarity.csv; returns every item with it (the asr
    set is left out: a transcript is scored by write_asr)."""
    sim = pd.DataFrame([it for it in items if it["test_set"] not in ASR_SETS])
    sim["ref_similarity"] = jv.reference_similarity(sim["answer"].tolist(), sim["reference"].tolist(), embed)
    sim[["item_id", "condition", "test_set", "ref_similarity"]].to_csv(stage.dir / "similarity.csv", index=False)
    return sim


@functools.lru_cache(maxsize=4)
def offline_scorer(name: str, embed: Embed | None) -> scorers.Offline:
    """One offline scorer, loaded once per stage (the learned one reads its model file: `make judge-model`)."""
    return scorers.Offline(name, embed=embed)


def offline_judgments(items: list[dict[str, Any]], probes: list[dict[str, Any]], embed: Embed,
                      names: tuple[str, ...] | list[str] = (scorers.DEFAULT,)) -> list[dict[str, Any]]:
    """Each offline scorer (judge/scorers.py) on every open-ended and label item and on the probes: judgment rows
    beside the LLM judges' (no LLM call, so every answer is scored), each with the scorer's version."""
    todo = [*open_items(items), *label_items(items), *probes]
    return [r for name in names for r in offline_scorer(name, embed).rows(todo)]


def graded_agreement(embed: Embed, names: tuple[str, ...] | list[str] = (scorers.DEFAULT,),
                     llm: dict[str, Any] | None = None) -> dict[str, Any]:
    """{judge: {dev, heldout: {spearman, n, passed, sets}}}: each offline scorer against our hand grades on the sets
    it was built on and on those it never saw (validity's graded_set check reads `heldout`), and the LLM judges'
    figures (run_llm_graded) beside them."""
    out = {scorers.judge_name(n): offline_scorer(n, embed).graded_figures() for n in names}
    return {**out, **(llm or {})}


def graded_items(names: list[str], max_items: int, seed: int) -> list[dict[str, Any]]:
    """The graded sets' items as judge items (test set "graded:<name>"), at most max_items a set (a fixed draw)."""
    import numpy as np

    out = []
    for name in names:
        items = graded.load_graded(Path(graded.GRADED_DIR) / f"{name}.jsonl")
        if 0 <= max_items < len(items):
            keep = sorted(np.random.default_rng(seed).permutation(len(items))[:max_items])
            items = [items[i] for i in keep]
        out += [{**it, "item_id": f"{name}:{it['id']}", "condition": None, "test_set": f"graded:{name}"}
                for it in items]
    return out


def run_llm_graded(stage: runs.Stage, settings: JudgeSettings) -> dict[str, Any]:
    """Every LLM judge x 0-5 rubric on the graded sets named by llm_graded_sets: {judge: {heldout: agreement with
    `sets`}}; rows -> graded_judgments.jsonl. Replies are cached across runs (outputs/cache/judge/graded_llm/<name>:
    the cache is keyed on model, prompt and sampling), so a machine pays for them once."""
    s = settings
    items = graded_items(s.llm_graded_sets, s.llm_graded_max_items, s.seed)
    if not items:
        return {}
    grade = {it["item_id"]: it["grade"] for it in items}
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        for spec in s.specs:
            ep = stack.enter_context(llm_endpoint(spec["base_url"], spec["model"], stage.dir, spec["api_key_env"],
                                                  n_threads=s.judge_server_threads or None))
            client = LLMClient([ep], cache_dir=runs.cache_dir() / "judge" / "graded_llm" / spec["name"],
                               ledger_name=f"judge-graded:{spec['name']}", concurrency=s.concurrency,
                               timeout_s=s.timeout_s, max_retries=s.max_retries, price_table=s.price_table,
                               response_format="auto")
            for rubric in s.rubrics:
                cfg = JudgeConfig(f"{spec['name']}/{rubric}", rubric, client, s.judge_temperature, s.judge_max_tokens,
                                  s.n_judge_runs)
                rows += judge_items(cfg, items)
    runs.write_jsonl(stage.dir / "graded_judgments.jsonl", rows)
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["judge"] for r in rows):
        sets: dict[str, Any] = {}
        union_g: list[float] = []
        union_s: list[float] = []
        for gset in s.llm_graded_sets:
            per: dict[str, list[float]] = {}
            for r in rows:
                if r["judge"] == name and r["test_set"] == f"graded:{gset}" and r["score_100"] is not None:
                    per.setdefault(r["item_id"], []).append(r["score_100"])
            ids = list(per)
            g, sc = [grade[i] for i in ids], [sum(per[i]) / len(per[i]) for i in ids]
            n_asked = sum(it["test_set"] == f"graded:{gset}" for it in items)
            sets[gset] = {**graded.agreement(g, sc), "n_asked": n_asked, "n_unparsed": n_asked - len(ids)}
            union_g, union_s = union_g + g, union_s + sc
        worst = [v["spearman"] for v in sets.values()]
        out[name] = {"heldout": {**graded.agreement(union_g, union_s), "sets": sets,
                                 "passed": all(w is not None and w >= graded.MIN_SPEARMAN for w in worst)}}
    return out


def write_validation(stage: runs.Stage, judgments: list[dict[str, Any]], lab: pd.DataFrame,
                     classification: pd.DataFrame, graded_figures: dict[str, Any] | None = None) -> dict[str, Any]:
    """The judge's own validation (jv.validation_report, with the graded-set figures) -> validation.json."""
    validation = jv.validation_report(pd.DataFrame(judgments), lab, classification, LABEL_SETS, OPEN_SETS,
                                      graded_figures)
    runs.write_json(stage.dir / "validation.json", validation)
    return validation


def judge_metrics(settings: JudgeSettings, items: list[dict[str, Any]], judgments: list[dict[str, Any]],
                  probes: list[dict[str, Any]], validation: dict[str, Any], ledgers: dict[str, Any],
                  scores: pd.DataFrame, classification: pd.DataFrame, sim: pd.DataFrame,
                  asr: pd.DataFrame) -> dict[str, Any]:
    """metrics.json of stage 05: sizes, parse failures, ledgers, judges and their sampling, cpqa_ref scores,
    classification, the mean reference similarity per condition, the WER per condition on the asr set
    (`asr_wer`: {condition: {value, n}}, n = items) and whether the judge passed its validity checks."""
    j = pd.DataFrame(judgments)
    return {"n_items": len(items), "n_judgments": len(judgments), "n_probes": len(probes),
            "parse_fail_rate": validation["parse_fail_rate"], "ledger": ledgers,
            "judges": sorted(j["judge"].unique()), "n_judge_runs": settings.n_judge_runs,
            "judge_temperature": settings.judge_temperature,
            "cpqa_ref_scores": scores[(scores["test_set"] == "cpqa_ref")].groupby(["judge", "condition"])["score"]
            .mean().unstack(0).round(2).to_dict(),
            "classification": classification.to_dict("records"),
            "mean_ref_similarity": sim.groupby("condition")["ref_similarity"].mean().round(4).to_dict(),
            "asr_wer": {r["condition"]: {"value": None if pd.isna(r["wer"]) else round(float(r["wer"]), 4),
                                         "n": int(r["n_items"])} for r in asr.to_dict("records")},
            "judge_passed": bool(validation.get("verdict", {}).get("passed", False))}
