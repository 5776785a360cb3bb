"""The paper's direction on the reference CPQA set: `implicit` > `baseline` and `implicit_explicit` > `implicit`
(PAPER.md: S30 over S10, S32 over S30), each as a relative gain with a paired-bootstrap 95 % CI, judged by one
named judge; and each judge's held-out graded-set agreement from 05's validation.json."""
from __future__ import annotations

from typing import Any

import pandas as pd

from paraqa_utils import runs, stats
from paraqa_utils.analysis.tables import MAIN_SET, Inputs, fmt

# (key, a, b): the direction holds when a scores higher than b, with the CI's lower bound above 0
COMPARISONS = (("implicit_vs_baseline", "implicit", "baseline"),
               ("implicit_explicit_vs_implicit", "implicit_explicit", "implicit"))
DEFAULT_JUDGE = "offline/learned_v2"  # 05's default offline judge (judge/scorers.py); a 06 parameter
COLUMNS = ("comparison", "a", "b", "judge", "judge_valid", "test_set", "n", "mean_a", "mean_b", "rel_pct", "ci_low",
           "ci_high", "holds", "missing")


def _num(x: Any, digits: int = 4) -> float | None:
    return None if x is None or pd.isna(x) else round(float(x), digits)


def judge_status(validation: dict[str, Any] | None, judge: str) -> tuple[bool, list[str]]:
    """(passed, failed checks) of `judge` in 05's verdict; a judge the verdict does not name was not validated."""
    judges = ((validation or {}).get("verdict") or {}).get("judges") or {}
    if judge not in judges:
        return False, [f"05_judge's validation.json has no verdict on `{judge}`"]
    return bool(judges[judge]["passed"]), list(judges[judge].get("failed") or [])


def graded_validity(validation: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """metrics.json's `judge_validity`: {judge: {spearman, n, passed}} on the held-out graded set, for every judge
    05 scored on it (validation.json's graded_set; passed as 05 decided it, Spearman >= its bar)."""
    out = {}
    for name, parts in ((validation or {}).get("graded_set") or {}).items():
        held = (parts or {}).get("heldout") or {}
        out[name] = {"spearman": _num(held.get("spearman")), "n": int(held.get("n") or 0),
                     "passed": bool(held.get("passed", False))}
        if held.get("sets"):
            out[name]["sets"] = {k: _num(v.get("spearman")) for k, v in held["sets"].items()}
    return out


def _missing_why(c: str, trained: list[str] | None, judge: str, test_set: str) -> str:
    if trained is not None and c not in trained:
        return "not trained by 04_finetune"
    return f"no `{judge}` score on {test_set}"


def compare(scores: pd.DataFrame, a: str, b: str, judge: str = DEFAULT_JUDGE, test_set: str = MAIN_SET,
            n_resamples: int = 2000, seed: int = 0, trained: list[str] | None = None) -> dict[str, Any]:
    """One comparison: rel_pct = 100 x (mean(a) - mean(b)) / mean(b) over the items of `test_set` both conditions
    answered (paired by item_id; `scores` are item_scores', judge runs already averaged), its paired-bootstrap 95 %
    CI (items resampled), n, both means (0-100) and holds = ci_low > 0. A condition without scores: {missing}."""
    s = scores[(scores["judge"] == judge) & (scores["test_set"] == test_set)] if len(scores) else scores
    out: dict[str, Any] = {"a": a, "b": b, "judge": judge, "test_set": test_set}
    # items in the order of `scores`, as main_table pairs them: the same seed then gives the same CI there and here
    by = {c: s[s["condition"] == c].groupby("item_id", sort=False)["score"].mean() for c in (a, b)} if len(s) else {}
    missing = [c for c in (a, b) if c not in by or by[c].empty]
    if missing:
        return {**out, "missing": missing, "why": {c: _missing_why(c, trained, judge, test_set) for c in missing},
                "holds": None}
    paired = by[a].rename("a").to_frame().join(by[b].rename("b"), how="inner")
    if paired.empty:
        return {**out, "n": 0, "mean_a": None, "mean_b": None, "rel_pct": None, "ci_low": None, "ci_high": None,
                "holds": None, "note": f"no item of {test_set} answered by both"}
    boot = stats.paired_bootstrap(paired["b"], paired["a"], n_resamples, seed)  # relative gain of a over b
    lo, hi = _num(boot["ci_low"]), _num(boot["ci_high"])
    out.update(n=len(paired), mean_a=_num(paired["a"].mean()), mean_b=_num(paired["b"].mean()),
               rel_pct=_num(boot["rel_improvement_pct"]), ci_low=lo, ci_high=hi, holds=lo is not None and lo > 0)
    if boot.get("note") or out["rel_pct"] is None:
        out["note"] = boot.get("note") or f"the mean of `{b}` is 0: no relative gain"
    return out


def direction_block(scores: pd.DataFrame, validation: dict[str, Any] | None, judge: str = DEFAULT_JUDGE,
                    test_set: str = MAIN_SET, n_resamples: int = 2000, seed: int = 0,
                    trained: list[str] | None = None) -> dict[str, Any]:
    """metrics.json's `direction`: {implicit_vs_baseline: {...}, implicit_explicit_vs_implicit: {...}}, each
    compare()'s figures plus judge_valid (the judge passed 05's validity checks) and judge_failed (why not). The
    figures are reported whatever the judge's validity; a judge that failed makes them no evidence."""
    valid, failed = judge_status(validation, judge)
    return {key: {**compare(scores, a, b, judge, test_set, n_resamples, seed, trained), "judge_valid": valid,
                  "judge_failed": failed} for key, a, b in COMPARISONS}


def trained_conditions(inp: Inputs) -> list[str] | None:
    """The conditions 04 recorded (None when 04 left no metrics: a missing condition's reason stays generic)."""
    m4 = inp.metrics("04_finetune")
    return list(m4["conditions"]) if m4.get("conditions") else None


def direction_table(block: dict[str, Any]) -> pd.DataFrame:
    """One row per comparison (tab_direction.csv): judge, items, both means (0-100), rel % with its CI, holds."""
    rows = [{"comparison": key, **{c: e.get(c) for c in COLUMNS[1:-1]}, "missing": ", ".join(e.get("missing", []))}
            for key, e in block.items()]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["n"] = table["n"].astype("Int64")  # blank, not nan, where a condition is missing
    return table


def write_direction(stage: runs.Stage, inp: Inputs, scores: pd.DataFrame, validation: dict[str, Any] | None,
                    judge: str = DEFAULT_JUDGE, test_set: str = MAIN_SET, n_resamples: int = 2000,
                    seed: int = 0) -> dict[str, Any]:
    """The direction block (direction_block, missing conditions explained from 04's metrics) -> tab_direction.csv."""
    block = direction_block(scores, validation, judge, test_set, n_resamples, seed, trained_conditions(inp))
    direction_table(block).to_csv(stage.dir / "tab_direction.csv", index=False)
    return block


def _ci(e: dict[str, Any]) -> str:
    if e["ci_low"] is None:
        return e.get("note") or "no confidence interval"
    where = ("excludes 0" if e["ci_low"] > 0 else "lies below 0: the other way round" if e["ci_high"] < 0
             else "includes 0")
    return f"95 % paired-bootstrap CI {e['ci_low']:+.1f} to {e['ci_high']:+.1f} %, {where}"


def comparison_sentence(key: str, e: dict[str, Any]) -> str:
    """One plain sentence: holds / does not hold / not tested, with rel %, CI, n and the judge's validity."""
    claim = f"`{e['a']}` > `{e['b']}`"
    on = f"on {e['test_set']} (judge `{e['judge']}`)"
    if e.get("missing"):
        why = "; ".join(f"`{c}` {e['why'][c]}" for c in e["missing"])
        return f"{claim} was not tested {on}: {why}."
    if not e["n"]:
        return f"{claim} was not tested {on}: {e.get('note')}."
    verb = "holds" if e["holds"] else "does not hold"
    gain = "no relative gain" if e["rel_pct"] is None else f"{e['rel_pct']:+.1f} %"
    text = (f"{claim} {verb} {on}: {e['mean_a']:.1f} against {e['mean_b']:.1f} (0-100), {gain} ({_ci(e)}; "
            f"n = {e['n']} items).")
    if not e["judge_valid"]:
        text += (f" The judge did not pass its validity checks ({'; '.join(e['judge_failed']) or 'none recorded'}), "
                 "so these figures are not evidence.")
    return text


def direction_sentences(block: dict[str, Any]) -> list[str]:
    return [comparison_sentence(key, e) for key, e in block.items()]


def verdict_sentence(block: dict[str, Any]) -> str:
    """The Verdict's one line on the paper's direction."""
    def state(e: dict[str, Any]) -> str:
        claim = f"`{e['a']}` > `{e['b']}`"
        if e.get("missing") or not e.get("n"):
            why = ", ".join(f"`{c}` missing" for c in e.get("missing", [])) or "no shared items"
            return f"{claim} not tested ({why})"
        gain = "n/a" if e["rel_pct"] is None else f"{e['rel_pct']:+.1f} %"
        ci = "" if e["ci_low"] is None else f", CI {e['ci_low']:+.1f} to {e['ci_high']:+.1f} %"
        return f"{claim} {'holds' if e['holds'] else 'does not hold'} ({gain}{ci}, n = {e['n']})"

    if not block:
        return "The paper's direction was not checked."
    first = next(iter(block.values()))
    valid = "" if first["judge_valid"] else " (this judge did not pass its validity checks: not evidence)"
    return (f"The paper's direction on {first['test_set']}, judge `{first['judge']}`{valid}: "
            + "; ".join(state(e) for e in block.values()) + ".")


def direction_section(block: dict[str, Any], judge_validity: dict[str, dict[str, Any]]) -> str:
    """REPORT.md's "The paper's direction": the table, one sentence per comparison, the judge's graded-set line."""
    table = direction_table(block).round(2).astype(object)
    parts = [fmt(table.where(table.notna(), "")), *direction_sentences(block)]  # a missing figure reads as blank
    judge = next(iter(block.values()))["judge"] if block else None
    g = judge_validity.get(judge) if judge else None
    if g:
        rho = "no Spearman" if g["spearman"] is None else f"Spearman {g['spearman']:.2f}"
        parts.append(f"Judge `{judge}` against our held-out hand grades: {rho} on {g['n']} items "
                     f"({'passed' if g['passed'] else 'did not pass'} the graded-set check).")
    elif judge:
        parts.append(f"Judge `{judge}` was not scored on our held-out graded set.")
    return "\n\n".join(parts)
