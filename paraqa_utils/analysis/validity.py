"""05's validation.json as a readable table: one row per judge and measure, with its value, scale and n."""
from __future__ import annotations

from typing import Any

import pandas as pd

COLUMNS = ["judge", "measure", "value", "scale", "n"]
CORR = "correlation -1 to 1"


def _v(x: Any) -> Any:
    return round(float(x), 3) if isinstance(x, (int, float)) and not isinstance(x, bool) else x


def validity_table(validation: dict[str, Any]) -> pd.DataFrame:
    """Verdict, parse failures, reference swap, ranking vs UA, score vs correctness, length bias and agreement."""
    rows: list[dict[str, Any]] = []

    def add(judge: str, measure: str, value: Any, scale: str, n: Any = None) -> None:
        rows.append({"judge": judge, "measure": measure, "value": _v(value), "scale": scale, "n": n})

    n_j = validation.get("n_judgments", {})
    for j, v in (validation.get("verdict") or {}).get("judges", {}).items():
        add(j, "passed its validity checks", "yes" if v["passed"] else "no: " + "; ".join(v["failed"]),
            "yes / no (see the Verdict)")
    for j, rate in (validation.get("parse_fail_rate") or {}).items():
        add(j, "replies without a usable rating", rate, "share 0-1", n_j.get(j))
    for j, s in (validation.get("reference_swap") or {}).items():
        add(j, "known-good answer, scored with its own reference", s.get("mean_original"), "judge score 0-100",
            s.get("n"))
        add(j, "known-good answer, scored with another item's reference", s.get("mean_swapped"),
            "judge score 0-100", s.get("n"))
        add(j, "known-good answer: swapped reference scored lower", s.get("share_swapped_lower"),
            "share of pairs 0-1", s.get("n"))
    for j, s in (validation.get("reference_swap_model_answers") or {}).items():
        add(j, "models' answers with their own reference (information)", s.get("mean_original"),
            "judge score 0-100", s.get("n"))
        add(j, "models' answers with a swapped reference (information)", s.get("mean_swapped"),
            "judge score 0-100", s.get("n"))
    for j, r in (validation.get("ranking_vs_ua") or {}).items():
        add(j, "ranking of conditions vs UA (Kendall tau)", r.get("kendall_tau"), CORR, len(r.get("judge_order", [])))
        add(j, "conditions, best first: judge / UA", " > ".join(r.get("judge_order", [])) + " / "
            + " > ".join(r.get("ua_order", [])), "order", len(r.get("judge_order", [])))
    for j, c in (validation.get("judge_vs_correctness") or {}).items():
        for level in ("per_item", "per_condition"):
            got = c.get(level) or {}
            add(j, f"score vs label correctness, {level.replace('_', ' ')} (Spearman)", got.get("spearman"), CORR,
                got.get("n"))
    for j, b in (validation.get("length_bias") or {}).items():
        for which, got in b.items():
            add(j, f"score vs answer length, {which} answers (Spearman)", got.get("spearman"), CORR, got.get("n"))
    for j, parts in (validation.get("graded_set") or {}).items():
        for part, g in parts.items():
            sets = g.get("sets") or {}
            for name, one in sets.items():
                add(j, f"scores vs our hand grades, {name} ({part}) (Spearman)", one.get("spearman"), CORR,
                    one.get("n"))
            if not sets or len(sets) > 1:
                add(j, f"scores vs our hand grades, {part} graded sets together (Spearman)", g.get("spearman"), CORR,
                    g.get("n"))
    for pair, a in (validation.get("judge_agreement") or {}).items():
        add(pair, "agreement between judges (Spearman)", a.get("spearman"), CORR, a.get("n"))
        add(pair, "mean absolute score gap", a.get("mean_abs_gap"), "points on 0-100", a.get("n"))
    table = pd.DataFrame(rows, columns=COLUMNS).astype(object)
    return table.where(table.notna(), "")  # an absent n or value reads as blank, not 'nan'

