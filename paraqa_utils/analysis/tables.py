"""Analysis: the paper's tables from a run's artifacts, REPORT.md, and `compare` across runs.

    python -m paraqa_utils.analysis compare RUN_A RUN_B [...]   # main tables side by side + differing params
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from paraqa_utils import runs, stats
from paraqa_utils.stages import STAGES

MAIN_SET = "cpqa_ref"
TYPES = ("C", "CE", "CG")


class Inputs:
    """Tolerant, hash-checked access to upstream artifacts: a missing or failed stage is noted, not fatal."""

    def __init__(self, stage: runs.Stage):
        self.stage, self.missing = stage, {}

    def path(self, rel: str) -> Path | None:
        try:
            return self.stage.input(rel)
        except runs.UpstreamError as exc:
            self.missing[rel] = str(exc).split(";")[0]
            return None

    def metrics(self, name: str) -> dict[str, Any]:
        p = self.path(f"{name}/{runs.METRICS_FILE}")
        return runs.read_json(p) if p else {}

    def jsonl(self, rel: str) -> pd.DataFrame:
        p = self.path(rel)
        return pd.DataFrame(list(runs.read_jsonl(p))) if p else pd.DataFrame()


def stage_summary(stage: runs.Stage) -> pd.DataFrame:
    """One row per upstream stage: status, implemented or placeholder, duration."""
    rows = []
    for name in STAGES[: STAGES.index(stage.name)]:
        p = stage.run_dir / name / runs.STAGE_FILE
        rec = runs.read_json(p) if p.exists() else {"status": "not run"}
        rows.append({"stage": name, "status": rec.get("status"), "implemented": rec.get("implemented", True),
                     "duration_s": rec.get("duration_s"), "n_artifacts": len(rec.get("outputs", {}))})
    return pd.DataFrame(rows)


def item_scores(judgments: pd.DataFrame) -> pd.DataFrame:
    """One 0-100 score per (judge, condition, item): runs averaged, probes and parse failures left out (but for a
    parity profile that scores an unparsed reply 0)."""
    if judgments.empty:
        return pd.DataFrame(columns=["judge", "condition", "test_set", "question_type", "item_id", "score"])
    # a reply a parity profile scores 0 (unparsed_policy "zero") stays in, as that profile's own rule says
    scored = judgments["parse_ok"] | ((judgments["unparsed_policy"] == "zero") & judgments["score_100"].notna()) \
        if "unparsed_policy" in judgments else judgments["parse_ok"]
    j = judgments[judgments["probe"].isna() & scored] if "probe" in judgments else judgments
    return j.groupby(["judge", "condition", "test_set", "question_type", "item_id"], dropna=False)["score_100"] \
        .mean().rename("score").reset_index()


def main_table(scores: pd.DataFrame, baseline: str = "baseline", n_resamples: int = 2000, seed: int = 0,
               test_set: str = MAIN_SET) -> pd.DataFrame:
    """Per judge and condition: micro (over QA pairs, as the paper) and macro (over types) means, per-type means,
    and the relative improvement over `baseline` with a paired bootstrap 95 % CI and a permutation p-value."""
    s = scores[scores["test_set"] == test_set]
    rows = []
    for (judge, cond), g in s.groupby(["judge", "condition"]):
        row: dict[str, Any] = {"judge": judge, "condition": cond, "n_items": len(g),
                               "micro": stats.micro_mean(g["score"].tolist()),
                               "macro": stats.macro_mean({t: h["score"].tolist() for t, h in g.groupby("question_type")})}
        row.update({t: g.loc[g["question_type"] == t, "score"].mean() for t in TYPES})
        base = s[(s["judge"] == judge) & (s["condition"] == baseline)].set_index("item_id")["score"]
        paired = g.set_index("item_id")["score"].to_frame("x").join(base.rename("b"), how="inner")
        if cond != baseline and len(paired):
            boot = stats.paired_bootstrap(paired["b"], paired["x"], n_resamples, seed)
            row.update(rel_improvement_pct=boot["rel_improvement_pct"], ci_low=boot["ci_low"], ci_high=boot["ci_high"],
                       p_value=stats.paired_permutation_p(paired["b"], paired["x"], n_resamples, seed),
                       n_paired=len(paired), note=boot.get("note", ""))
        elif cond != baseline:
            row["note"] = f"no items shared with '{baseline}'"
        rows.append(row)
    return pd.DataFrame(rows)


def data_tables(inp: Inputs) -> dict[str, pd.DataFrame]:
    """Annotation quality, condensation, QA funnel/type mix, mixture sizes and the LLM ledger, from metrics."""
    out: dict[str, pd.DataFrame] = {}
    m1, m2, m3 = inp.metrics("01_annotate"), inp.metrics("02_synthesize"), inp.metrics("03_explicit_merge")
    m5 = inp.metrics("05_judge")
    flat1 = pd.json_normalize(m1, sep=".") if m1 else pd.DataFrame()
    if len(flat1):
        qual = {k: v for k, v in flat1.iloc[0].items() if any(x in k for x in ("accuracy", "uar", "ua", "f1", "ccc",
                                                                               "wer", "kept", "dropped"))
                and isinstance(v, (int, float, np.number))}
        out["annotation"] = pd.Series(qual, name="value").to_frame()
    if m2.get("type_mix"):
        out["qa_types"] = pd.DataFrame(m2["type_mix"])
    if m2.get("survival"):
        out["qa_survival"] = pd.DataFrame(m2["survival"]).T
    if m3.get("conditions"):
        out["mixtures"] = pd.DataFrame(m3["conditions"]).T.fillna(0)
    ledgers = {"02_synthesize": m2.get("llm_ledger")} | {f"05_judge:{k}": v for k, v in (m5.get("ledger") or {}).items()}
    ledgers = {k: {c: v.get(c) for c in ("requests", "calls", "cache_hits", "retries", "failures", "prompt_tokens",
                                          "completion_tokens", "cost_usd", "wall_s")} for k, v in ledgers.items() if v}
    if ledgers:
        out["llm_ledger"] = pd.DataFrame(ledgers).T
    return out


def fmt(df: pd.DataFrame, digits: int = 2) -> str:
    return df.round(digits).to_markdown(index=False) if len(df) else "(empty)"


def write_report(stage: runs.Stage, sections: list[tuple[str, str]], figures: list[Path]) -> tuple[Path, Path]:
    """REPORT.md and REPORT.html: tables, figures, params and the manifest summary (readable without Jupyter)."""
    run_dir = stage.run_dir
    manifest = runs.read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").exists() else {}
    params = (run_dir / "params.resolved.yaml").read_text() if (run_dir / "params.resolved.yaml").exists() else ""
    git = manifest.get("git", {})
    byline = (f"profile `{manifest.get('profile', '?')}` · git `{git.get('sha7')}` (dirty: {git.get('dirty')}) · "
              f"created {manifest.get('created_utc', '?')}")
    lead = sections[:1] if sections and sections[0][0] == "Verdict" else []  # the verdict comes right after the title
    md = [f"# ParaQA run `{run_dir.name}`", ""]
    for n, (title, text) in enumerate(sections):
        md += ([byline, ""] if n == len(lead) else []) + [f"## {title}", "", text, ""]
    md += ([byline, ""] if len(sections) == len(lead) else [])
    md += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures if f.suffix == ".png"] + [""]
    md += ["## Resolved parameters", "", "```yaml", params.rstrip(), "```", ""]
    (stage.dir / "REPORT.md").write_text("\n".join(md))
    html = ["<html><head><meta charset='utf-8'><title>ParaQA " + run_dir.name + "</title>",
            "<style>body{font-family:sans-serif;max-width:70em;margin:auto} table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px} img{max-width:100%}</style></head><body>"]
    html += [f"<h1>ParaQA run <code>{run_dir.name}</code></h1>"]
    for n, (title, text) in enumerate(sections):
        html += ([f"<p>{byline}</p>"] if n == len(lead) else []) + [f"<h2>{title}</h2>", _md_to_html(text)]
    html += ([f"<p>{byline}</p>"] if len(sections) == len(lead) else [])
    html += ["<h2>Figures</h2>"] + [f"<p><img src='{f.name}' alt='{f.stem}'></p>" for f in figures if f.suffix == ".png"]
    html += ["<h2>Resolved parameters</h2><pre>", params.replace("<", "&lt;"), "</pre></body></html>"]
    (stage.dir / "REPORT.html").write_text("\n".join(html))
    return stage.dir / "REPORT.md", stage.dir / "REPORT.html"


def _md_to_html(text: str) -> str:
    """Our sections are markdown pipe tables or plain lines; render both without a markdown dependency."""
    lines, out, table = text.splitlines(), [], []
    for ln in [*lines, ""]:
        if ln.startswith("|"):
            if not set(ln.replace("|", "").strip()) <= set("-: "):
                table.append([c.strip() for c in ln.strip("|").split("|")])
            continue
        if table:
            out.append("<table>" + "".join("<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{c}</{'th' if i == 0 else 'td'}>"
                                                         for c in r) + "</tr>" for i, r in enumerate(table)) + "</table>")
            table = []
        if ln.strip():
            out.append(f"<p>{ln}</p>")
    return "\n".join(out)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in (d or {}).items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def compare(run_ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Main tables of several runs side by side, and the parameters in which the runs differ."""
    tables, params = [], {}
    for rid in run_ids:
        run = runs.find_run(rid)
        tab = run / "06_analysis" / "tab_main.csv"
        if not tab.exists():
            raise FileNotFoundError(f"{run.name} has no 06_analysis/tab_main.csv (did its analysis stage run?)")
        t = pd.read_csv(tab)
        t.insert(0, "run", run.name)
        tables.append(t)
        params[run.name] = _flat(yaml.safe_load((run / "params.resolved.yaml").read_text()))
    keys = sorted(set().union(*params.values()))
    diff = pd.DataFrame({r: [p.get(k) for k in keys] for r, p in params.items()}, index=keys)
    diff = diff[diff.astype(str).nunique(axis=1) > 1]
    side = pd.concat(tables).pivot_table(index=["judge", "condition"], columns="run", values="micro")
    return side, diff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paraqa_utils.analysis")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="main tables of several runs side by side, with the params that differ")
    c.add_argument("runs", nargs="+")
    args = ap.parse_args(argv)
    try:
        side, diff = compare(args.runs)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("Overall (micro) judge score on the reference CPQA set:\n")
    print(side.round(2).to_markdown())
    print("\nParameters that differ:\n")
    print(diff.to_markdown() if len(diff) else "(none)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
