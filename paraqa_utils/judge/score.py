"""`python -m paraqa_utils.judge score`: one judge on any JSONL of answers, outside a pipeline run, resumable.

Input: one JSON object a line, {id, question, reference, answer[, question_type]}. Output `O.jsonl`: 05's judgment
rows (one per item and repeat) keyed by `id`, with the item's hash. Refused items never get a score: they go to
`O.rejects.jsonl` ({where: "file:line", id, reason}), rewritten on every run. The LLM judges append each finished
row (the client's cache sits in `O.jsonl.cache/`), so a rerun of the same command asks only for what is missing;
the offline judge is fast and rescored in full, written atomically.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from paraqa_utils import params, runs, text
from paraqa_utils.judge import scorers
from paraqa_utils.judge.llm_judge import RUBRICS, JudgeConfig, judge_items, rubric_sha
from paraqa_utils.judge.settings import JudgeSettings
from paraqa_utils.llm import LLMClient, api_key_for, llm_endpoint, public_url
from paraqa_utils.progress import tqdm
from paraqa_utils.text import Embed

JUDGES = ("offline", "embedded", "openai")
# the client caches these final replies (asking again gives the same), so a row with one of them is finished;
# any other failure without reply text (timeout, connection, http_*) is not written and is retried by a rerun
REPLY_KINDS = ("empty", "refusal", "truncated", "invalid_json", "schema")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ITEMS_PER_CALL = 4  # x concurrency: items judged between two appends to the out file


class ScoreError(ValueError):
    """The command cannot run as asked (bad option, an out file of another judge); nothing was scored."""


def rejects_path(out: Path) -> Path:
    return out.with_suffix(".rejects.jsonl") if out.suffix == ".jsonl" else out.with_name(out.name + ".rejects.jsonl")


def item_sha(it: dict[str, Any]) -> str:
    """What a score depends on: a row whose item changed since it was scored is stale and scored again."""
    blob = json.dumps([it["question"], it["reference"], it["answer"], it["question_type"]], ensure_ascii=False)
    return runs.sha256_text(blob)[:16]


def check_item(rec: Any) -> str:
    """Why an input record cannot be scored ('' when it can)."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    rid = rec.get("id")
    if isinstance(rid, bool) or not (isinstance(rid, int) or (isinstance(rid, str) and rid.strip())):
        return "missing id (a non-empty string or an integer)"
    if not isinstance(rec.get("question"), str) or not rec["question"].strip():
        return "missing question"
    if not isinstance(rec.get("answer"), str):
        return "missing answer (a string; an empty one is judged as no answer)"
    if not isinstance(rec.get("question_type", "C"), str):
        return "question_type must be a string (C, CE or CG)"
    if not isinstance(rec.get("reference"), str) or not rec["reference"].strip():
        return "no reference: a reference-based judge cannot score it"
    return ""


def read_items(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items to score, rejects): malformed lines, items missing a field or a reference, and every copy of a
    duplicated id (which one to score would be a guess) are refused with their file:line."""
    items: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                rejects.append({"where": where, "id": None, "reason": f"not valid JSON ({exc.msg})"})
                continue
            why = check_item(rec)
            if why:
                rejects.append({"where": where, "id": rec.get("id") if isinstance(rec, dict) else None, "reason": why})
                continue
            items.append({"id": rec["id"], "question": rec["question"], "reference": rec["reference"],
                          "answer": rec["answer"], "question_type": rec.get("question_type") or "C", "where": where})
    lines: dict[Any, list[str]] = {}  # every line an id is on, refused lines included
    for rec in sorted([*items, *rejects], key=line_of):
        if isinstance(rec["id"], (str, int)) and not isinstance(rec["id"], bool):
            lines.setdefault(rec["id"], []).append(rec["where"])
    rejects += [{"where": it["where"], "id": it["id"], "reason": f"duplicate id (at {', '.join(lines[it['id']])})"}
                for it in items if len(lines[it["id"]]) > 1]
    return [it for it in items if len(lines[it["id"]]) == 1], sorted(rejects, key=line_of)


def line_of(rec: dict[str, Any]) -> int:
    return int(rec["where"].rsplit(":", 1)[1])


def judge_settings(judge: str, base_url: str = "", model: str = "", api_key_env: str | None = None,
                   name: str | None = None, knobs: dict[str, Any] | None = None) -> JudgeSettings:
    """05's JudgeSettings for one judge: every knob not given is 05's default (its notebook's parameters cell)."""
    if judge not in JUDGES:
        raise ScoreError(f"--judge {judge!r}: one of {', '.join(JUDGES)}")
    if judge == "openai" and not (base_url and model):
        raise ScoreError("--judge openai needs --base-url and --model (an OpenAI-compatible endpoint)")
    if judge != "openai" and (base_url or model):
        raise ScoreError(f"--base-url/--model are for --judge openai, not {judge}")
    if api_key_env is not None and not ENV_NAME.fullmatch(api_key_env):
        # the value is not echoed: a key pasted here by mistake must not reach a log
        raise ScoreError("--api-key-env takes the NAME of an environment variable (e.g. OPENAI_API_KEY), never the key")
    values = {**(knobs or {}), "judge_base_url": base_url, "judge_model": model}
    if api_key_env is not None:
        values["judge_api_key_env"] = api_key_env
    values["judge_name"] = name or (model if judge == "openai" else judge)
    settings = params.stage_config(JudgeSettings, "05_judge", values)
    if base_url:  # a remote endpoint without its key fails before any work
        api_key_for(base_url, settings.judge_api_key_env)
    return settings


def read_rows(out: Path, judge: str, rubric: str, expect: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows already in `out` (a line torn by a kill is dropped); refused if another judge wrote them."""
    if not out.exists():
        return []
    try:
        rows = list(runs.read_jsonl(out))
    except json.JSONDecodeError as exc:  # a torn last line is skipped; any other bad line is not ours
        raise ScoreError(f"{out} holds a line that is not JSON and not one torn by a kill: delete the file or "
                         f"choose another --out") from exc
    for r in rows:
        got = {"judge": r.get("judge"), "rubric": r.get("rubric"), **{k: r.get(k) for k in expect}}
        if got != {"judge": judge, "rubric": rubric, **expect}:
            raise ScoreError(f"{out} holds scores of another judge or setting ({got}, not "
                             f"{ {'judge': judge, 'rubric': rubric, **expect} }): delete it or choose another --out")
    return rows


def to_judge(it: dict[str, Any]) -> dict[str, Any]:
    """An input item in the form 05's judges take (no condition or test set outside a run)."""
    keep = ("question_type", "question", "reference", "answer")
    return {"item_id": it["id"], "condition": None, "test_set": None, **{k: it[k] for k in keep}}


def out_row(row: dict[str, Any], it: dict[str, Any]) -> dict[str, Any]:
    drop = ("item_id", "condition", "test_set", "probe")
    return {"id": it["id"], "item_sha256": item_sha(it), **{k: v for k, v in row.items() if k not in drop}}


def unfinished(row: dict[str, Any]) -> bool:
    """No reply came back (endpoint down, timeout): not a judgment, so not written; a rerun asks again."""
    return not row["parse_ok"] and not row["raw"] and row["parse_note"] not in REPLY_KINDS


def score_offline(items: list[dict[str, Any]], out: Path, embed: Embed | None, scorer: str) -> dict[str, Any]:
    embed = embed if embed is not None else text.minilm_embedder("")
    judge = scorers.Offline(scorer, embed=embed)
    rows = judge.rows([to_judge(it) for it in items]) if items else []
    runs.write_jsonl(out, (out_row(r, it) for r, it in zip(rows, items)))
    return {"judge": judge.name, "version": judge.version, "top": 5, "n_reused": None, "n_failed": 0, "ledger": None}


def llm_identity(s: JudgeSettings, rubric: str) -> dict[str, Any]:
    """What every row of one LLM judge shares; rows that differ were made by another judge or setting."""
    return {"prompt_sha256": rubric_sha(rubric),
            "sampling": {"temperature": s.judge_temperature, "max_tokens": s.judge_max_tokens}}


def score_llm(items: list[dict[str, Any]], rows: list[dict[str, Any]], out: Path, settings: JudgeSettings,
              rubric: str, cache_dir: Path) -> dict[str, Any]:
    s, name = settings, f"{settings.judge_name}/{rubric}"
    by_id = {it["id"]: it for it in items}
    kept = [r for r in rows if r.get("id") in by_id and r.get("item_sha256") == item_sha(by_id[r["id"]])
            and isinstance(r.get("run"), int) and 0 <= r["run"] < s.n_judge_runs]
    runs.write_jsonl(out, kept)  # drops a torn last line and stale rows before anything is appended
    done = {(r["id"], r["run"]) for r in kept}
    todo = [it for it in items if any((it["id"], k) not in done for k in range(s.n_judge_runs))]
    failed = judge_missing(todo, out, s, rubric, cache_dir, done) if todo else {}
    return {"judge": name, "top": RUBRICS[rubric], "n_reused": len(items) - len(todo),
            "n_failed": len(failed.get("ids", ())), "ledger": failed.get("ledger"),
            "endpoint": failed.get("endpoint", ""), "model": failed.get("model", "")}


def judge_missing(todo: list[dict[str, Any]], out: Path, s: JudgeSettings, rubric: str, cache_dir: Path,
                  done: set[tuple[Any, int]]) -> dict[str, Any]:
    """Judge `todo` a few items at a time, appending each finished row to `out` (the endpoint opens only here,
    so a rerun with nothing left starts no server). Returns {ids without a reply, ledger, endpoint, model}."""
    name, by_id, failed = f"{s.judge_name}/{rubric}", {it["id"]: it for it in todo}, set()
    with llm_endpoint(s.judge_base_url, s.judge_model, cache_dir, s.judge_api_key_env,
                      n_threads=s.judge_server_threads or None) as ep:
        client = LLMClient([ep], cache_dir=cache_dir / "llm", ledger_name=f"judge:{s.judge_name}",
                           concurrency=s.concurrency, timeout_s=s.timeout_s, max_retries=s.max_retries,
                           price_table=s.price_table, response_format="auto", progress=False)
        cfg = JudgeConfig(name, rubric, client, s.judge_temperature, s.judge_max_tokens, s.n_judge_runs)
        step = ITEMS_PER_CALL * s.concurrency
        with tqdm(total=len(todo), desc=name, mininterval=1.0) as bar:
            for i in range(0, len(todo), step):
                chunk = todo[i:i + step]
                for row in judge_items(cfg, [to_judge(it) for it in chunk]):
                    if unfinished(row):
                        failed.add(row["item_id"])
                    elif (row["item_id"], row["run"]) not in done:
                        runs.append_jsonl(out, out_row(row, by_id[row["item_id"]]))
                bar.update(len(chunk))
    return {"ids": failed, "ledger": client.ledger.as_dict(), "model": ep.model,
            "endpoint": "embedded llama.cpp server" if ep.embedded else public_url(ep.base_url)}


def score_file(items_path: Path, out: Path, judge: str = "offline", rubric: str | None = None, base_url: str = "",
               model: str = "", api_key_env: str | None = None, name: str | None = None,
               cache_dir: Path | None = None, knobs: dict[str, Any] | None = None,
               embed: Embed | None = None, scorer: str | None = None) -> dict[str, Any]:
    """Score `items_path` with one judge into `out` (rejects beside it); returns the summary (`summary_lines`).

    knobs: JudgeSettings fields (n_judge_runs, concurrency, timeout_s, ...); a knob not given is 05's default.
    scorer: the offline judge's scorer (scorers.SCORERS; default learned_v2)."""
    t0 = time.monotonic()
    items_path, out = Path(items_path), Path(out)
    if not items_path.is_file():
        raise ScoreError(f"--items {items_path}: no such file")
    settings = None
    if judge == "offline":
        scorer = scorer or scorers.DEFAULT
        if scorer not in scorers.SCORERS:
            raise ScoreError(f"--scorer {scorer!r}: one of {', '.join(scorers.SCORERS)}")
        if rubric or base_url or model or api_key_env or name or cache_dir or knobs:
            raise ScoreError("the offline judge takes no rubric, endpoint, name or sampling options (choose its "
                             f"scorer with --scorer: {', '.join(scorers.SCORERS)})")
    elif scorer:
        raise ScoreError(f"--scorer is for --judge offline, not {judge}")
    else:
        settings = judge_settings(judge, base_url, model, api_key_env, name, knobs)
        rubric = rubric or settings.rubrics[0]  # 05's first 0-5 rubric
        if rubric not in RUBRICS:
            raise ScoreError(f"--rubric {rubric!r}: one of {', '.join(RUBRICS)}")
    # an out file of another judge is refused before anything is written
    rows = (read_rows(out, scorers.judge_name(scorer), scorer, {}) if settings is None else
            read_rows(out, f"{settings.judge_name}/{rubric}", rubric, llm_identity(settings, rubric)))
    items, rejects = read_items(items_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs.write_jsonl(rejects_path(out), rejects)
    if settings is None:
        summary = score_offline(items, out, embed, scorer)
    else:
        cache = Path(cache_dir) if cache_dir else out.with_name(out.name + ".cache")
        summary = score_llm(items, rows, out, settings, rubric, cache)
    summary.update(summarise(list(runs.read_jsonl(out)), summary["top"]))
    summary.update(n_rejected=len(rejects), rejects=rejects, out=str(out), rejects_path=str(rejects_path(out)),
                   wall_s=round(time.monotonic() - t0, 2))
    return summary


def summarise(rows: list[dict[str, Any]], top: int) -> dict[str, Any]:
    """n items scored, the mean score (repeats averaged per item first) and the parse rate over rows."""
    per_item: dict[Any, list[float]] = {}
    for r in rows:
        per_item.setdefault(r["id"], [])
        if r["parse_ok"] or (r.get("unparsed_policy") == "zero" and r.get("score") is not None):  # a parity profile's unparsed reply counts as 0
            per_item[r["id"]].append(r["score"])
    means = [sum(v) / len(v) for v in per_item.values() if v]
    mean = sum(means) / len(means) if means else None
    return {"n_scored": len(per_item), "n_rows": len(rows), "mean_score": mean,
            "mean_score_100": None if mean is None else mean * 100 / top,
            "parse_rate": sum(r["parse_ok"] for r in rows) / len(rows) if rows else None}


def summary_lines(s: dict[str, Any]) -> list[str]:
    """What the command prints at the end (no keys: endpoints are shown without user info or query)."""
    def fmt(x: float | None, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    where = f" ({s['n_reused']} already in {s['out']})" if s["n_reused"] is not None else f" into {s['out']}"
    lines = [f"judge {s['judge']}" + (f" ({s['model']} at {s['endpoint']})" if s.get("endpoint") else "")
             + (f" ({s['version']})" if s.get("version") else ""),
             f"scored {s['n_scored']} item(s){where}, rejected {s['n_rejected']}"
             + (f" (see {s['rejects_path']})" if s["n_rejected"] else "")
             + (f", {s['n_failed']} without a reply (rerun to retry)" if s["n_failed"] else ""),
             f"mean score {fmt(s['mean_score'], '.2f')} / {s['top']} ({fmt(s['mean_score_100'], '.1f')} / 100), "
             f"parse rate {fmt(None if s['parse_rate'] is None else 100 * s['parse_rate'], '.1f')} %"]
    if s.get("ledger"):
        g = s["ledger"]
        lines.append(f"ledger: {g['requests']} requests, {g['calls']} calls, {g['cache_hits']} cache hits, "
                     f"{g['prompt_tokens']} prompt + {g['completion_tokens']} completion tokens, {g['failures']} "
                     f"failures, {g['wall_s']:.1f} s" + (f", {g['cost_usd']:.4f} USD" if g.get("cost_usd") else ""))
    lines.append(f"{s['wall_s']:.1f} s in all")
    return lines
