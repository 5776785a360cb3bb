"""What "the judge passed its validity checks" means: the one definition, applied to validation.json's figures.

Stage 05 writes the verdict into validation.json (`verdict`); 06_analysis reads it for REPORT.md and never
re-derives it, so changing a criterion here changes it everywhere."""
from __future__ import annotations

from typing import Any

MAX_PARSE_FAIL_RATE = 0.2  # share of a judge's replies without a usable rating
MIN_SHARE_SWAPPED_LOWER = 0.5  # share of reference-swap pairs the swapped reference must score lower on
MIN_GRADED_SPEARMAN = 0.8  # rank correlation with our hand grades, on every held-out graded set (judge/graded/)
DEFINITION = (
    "A judge passes when (1) known-good answers (an item's own reference) paired with another item's reference "
    "(reference-swap probes) score lower on average than with their own reference, and lower in at least "
    f"{MIN_SHARE_SWAPPED_LOWER:.0%} of the pairs (for judges of the open-ended sets); (2) it ranks the conditions "
    "in the same direction as their unweighted accuracy (UA) on the label sets does (Kendall tau > 0 over at least "
    f"2 conditions); (3) at most {MAX_PARSE_FAIL_RATE:.0%} of its replies lack a usable rating; (4) for a judge "
    f"scored on our held-out graded sets (judge/graded/), Spearman >= {MIN_GRADED_SPEARMAN} with our grades on each. "
    "The swap probe on the models' own answers is reported beside it, as information. A check "
    "without data counts as failed; the judge passes when every judge passes every check that applies to it.")


def _swap_check(rep: dict[str, Any] | None) -> tuple[bool, str]:
    if not rep or not rep.get("n"):
        return False, "no reference-swap probe was scored"
    lower = rep["mean_swapped"] < rep["mean_original"]
    share = rep.get("share_swapped_lower") or 0.0
    ok = lower and share >= MIN_SHARE_SWAPPED_LOWER
    return ok, (f"known-good answers scored {rep['mean_swapped']:.1f} with another item's reference against "
                f"{rep['mean_original']:.1f} with their own, lower in {share:.0%} of {rep['n']} pairs")


def _ranking_check(rank: dict[str, Any] | None) -> tuple[bool, str]:
    tau = (rank or {}).get("kendall_tau")
    if tau is None:
        return False, "no ranking against UA (fewer than 2 conditions, or ties only)"
    return tau > 0, f"Kendall tau {tau:.2f} between its ranking of the conditions and UA's"


def _parse_check(rate: float | None) -> tuple[bool, str]:
    if rate is None:
        return False, "no parse-failure rate"
    return rate <= MAX_PARSE_FAIL_RATE, f"{rate:.0%} of replies without a usable rating"


def _graded_check(g: dict[str, Any]) -> tuple[bool, str]:
    rho = g.get("spearman")
    if rho is None:
        return False, f"no rank correlation with the graded set ({g.get('n', 0)} items)"
    sets = g.get("sets") or {}
    if sets:  # every held-out set must hold on its own
        worst = [v.get("spearman") for v in sets.values()]
        ok = all(w is not None and w >= MIN_GRADED_SPEARMAN for w in worst)
        each = ", ".join(f"{k} {v['spearman']:.2f} (n {v['n']})" if v.get("spearman") is not None else f"{k} n/a"
                         for k, v in sets.items())
        return ok, f"Spearman with our grades on the held-out graded sets: {each}"
    return rho >= MIN_GRADED_SPEARMAN, f"Spearman {rho:.2f} with our grades on {g['n']} held-out graded items"


def judge_verdict(report: dict[str, Any]) -> dict[str, Any]:
    """{passed, definition, judges: {name: {passed, checks: {check: {ok, why}}, failed: [why]}}} from the
    validation figures (validation.validation_report): reference_swap, ranking_vs_ua, parse_fail_rate and
    graded_set (its held-out figure)."""
    swap, rank, parse = (report.get(k) or {} for k in ("reference_swap", "ranking_vs_ua", "parse_fail_rate"))
    graded = {n: g.get("heldout", {}) for n, g in (report.get("graded_set") or {}).items()}
    judges: dict[str, Any] = {}
    for name in sorted({*swap, *rank, *parse}):
        checks = {"ranking_vs_ua": _ranking_check(rank.get(name)), "parse_fail_rate": _parse_check(parse.get(name))}
        if name in graded:  # only judges that were scored on the graded set
            checks["graded_set"] = _graded_check(graded[name])
        if name in swap:  # only judges of the open-ended sets see swap probes
            checks = {"reference_swap": _swap_check(swap[name]), **checks}
        judges[name] = {"passed": all(ok for ok, _ in checks.values()),
                        "checks": {k: {"ok": bool(ok), "why": why} for k, (ok, why) in checks.items()},
                        "failed": [f"{k}: {why}" for k, (ok, why) in checks.items() if not ok]}
    return {"passed": bool(judges) and all(j["passed"] for j in judges.values()), "definition": DEFINITION,
            "judges": judges}
