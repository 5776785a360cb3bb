"""The evaluation run behind `python -m paraqa_utils.evaluate`: load, answer, judge, tabulate, report."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from paraqa_utils import runs, stats
from paraqa_utils.evaluate import endpoint, in_run, testsets
from paraqa_utils.judge.score import score_file


def load_sets(specs: Sequence[str], out: Path, mapping: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items, rejects) of every --test-set; the rejects are written to out/rejects.jsonl. A set whose every item
    was refused is a TestSetError naming it and its first reasons, raised after that file is written (a silently
    empty set hid a wrong column mapping)."""
    items, rejects, refused, override = [], [], [], testsets.parse_mapping(mapping)
    for spec in specs:
        for name, (its, rej) in testsets.load(spec, out / "cache" / "audio", override).items():
            items += its
            rejects += [{**r, "test_set": name, "source": spec} for r in rej]
            if rej and not its:
                refused.append(f"test set {name} ({spec}): all {len(rej)} items refused, e.g.\n" +
                               "\n".join(f"  {r['id']}: {r['reason']}" for r in rej[:5]))
    runs.write_jsonl(out / "rejects.jsonl", rejects)
    if refused:
        raise testsets.TestSetError("\n".join(refused) + f"\n(every reason: {out / 'rejects.jsonl'}; check the "
                                    "mapping printed above, override with --map FIELD=COLUMN)")
    return items, rejects


def judge_answers(preds: list[dict[str, Any]], items: dict[str, dict[str, Any]], out: Path, name: str,
                **judge: Any) -> list[dict[str, Any]]:
    """The model's answered items scored by the judge; rows keyed by item id."""
    path = out / "judge_items" / f"{name}.jsonl"
    runs.write_jsonl(path, [{"id": p["id"], "question": items[p["id"]]["question"],
                             "reference": items[p["id"]]["reference"], "answer": p["answer"],
                             "question_type": items[p["id"]].get("question_type") or "C"}
                            for p in preds if p["error"] is None])
    res = out / "judgments" / f"{name}.jsonl"
    score_file(path, res, **judge)
    return list(runs.read_jsonl(res))


def table(preds: pd.DataFrame, judged: pd.DataFrame) -> pd.DataFrame:
    """model x test set x question type: mean judge score (0-100) with a bootstrap 95 % CI over items, parse
    rate, answered, failed (no answer: audio or endpoint error) and unjudged (e.g. no reference)."""
    rows: list[dict[str, Any]] = []
    if preds.empty:  # nothing loaded (empty test sets; a wholly refused one is load_sets' error)
        return pd.DataFrame(columns=["model", "test_set", "question_type", "n_items", "n_failed", "n_judged", "score",
                                     "ci_low", "ci_high", "parse_rate"])
    for (model, tset, qtype), g in preds.groupby(["model", "test_set", preds["question_type"].fillna("-")]):
        j = judged[judged["id"].isin(g["id"]) & (judged["model"] == model)] if len(judged) else judged
        scored = j[j["parse_ok"] | (j.get("unparsed_policy", "") == "zero")] if len(j) else j
        per_item = scored.groupby("id")["score_100"].mean() if len(scored) else pd.Series(dtype=float)
        lo, hi = stats.bootstrap_mean_ci(per_item.tolist())
        rows.append({"model": model, "test_set": tset, "question_type": qtype, "n_items": len(g),
                     "n_failed": int(g["error"].notna().sum()), "n_judged": int(per_item.size),
                     "score": round(float(per_item.mean()), 2) if per_item.size else None,
                     "ci_low": None if lo is None else round(lo, 2), "ci_high": None if hi is None else round(hi, 2),
                     "parse_rate": round(float(j["parse_ok"].mean()), 3) if len(j) else None})
    return pd.DataFrame(rows)


def figure(res: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 3.5))
    data = res.dropna(subset=["score"])
    if len(data):
        sns.barplot(data=data, x="test_set", y="score", hue="model", ax=ax, errorbar=None)
    ax.set(ylabel="judge score (0-100)", title="paraqa_utils.evaluate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(df: pd.DataFrame) -> str:
    cells = [[("" if pd.isna(v) else str(v)) for v in row] for row in df.itertuples(index=False)]
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns)
    return "\n".join([head, *("| " + " | ".join(r) + " |" for r in cells)])


def report(res: pd.DataFrame, models: dict[str, Any], judge: dict[str, Any], n_rejects: int, out: Path) -> str:
    lines = ["# Evaluation", "", f"Judge: `{judge.get('judge')}`" + (f", rubric `{judge['rubric']}`"
                                                                     if judge.get("rubric") else "") +
             " (every number below is this judge's; 0-100).", "",
             "Models: " + "; ".join(f"`{n}` ({m.describe()['kind']} `{m.model}`, audio over "
                                    f"{m.max_audio_s:g} s: {m.long_audio}, explicit labels: {m.explicit})"
                                    for n, m in models.items()), "",
             f"Items refused by the loader: {n_rejects} (`rejects.jsonl`).", "", markdown(res), ""]
    text_ = "\n".join(lines)
    (out / "EVAL.md").write_text(text_)
    return text_


def evaluate(sets: Sequence[str], model_specs: Sequence[str], out: Path, judge: str = "offline", mapping: str = "",
             judge_base_url: str = "", judge_model: str = "", judge_api_key_env: str | None = None,
             rubric: str | None = None, concurrency: int = 8) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for spec in model_specs:
        name, sep, body = spec.partition("=")
        if not sep:
            raise endpoint.ModelSpecError(f"--model {spec!r}: expected NAME=SPEC")
        models[name] = in_run.parse(name, body)
    items, rejects = load_sets(sets, out, mapping)
    by_id = {it["id"]: it for it in items}
    jargs: dict[str, Any] = {"judge": judge, "rubric": rubric}
    if judge == "openai":
        jargs.update(base_url=judge_base_url, model=judge_model, api_key_env=judge_api_key_env)
    preds, judged = [], []
    for name, m in models.items():
        answered = in_run.answer_any(m, items, out / "cache" / "models" / name, concurrency)
        preds += answered
        judged += [{**r, "model": name} for r in judge_answers(answered, by_id, out, name, **jargs)]
    runs.write_jsonl(out / "predictions.jsonl", preds)
    res = table(pd.DataFrame(preds), pd.DataFrame(judged))
    res.to_csv(out / "results.csv", index=False)
    figure(res, out / "fig_results.png")
    report(res, models, jargs, len(rejects), out)
    return {"out": str(out), "table": res.to_string(index=False), "n_failed": int(res["n_failed"].sum()),
            "n_rejected": len(rejects)}
