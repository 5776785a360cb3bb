"""Stage 02's outputs: the funnel, rejects per filter, the QA files and metrics.json."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from paraqa_utils import runs
from paraqa_utils.synthesize.generation import QUESTION_TYPES


def funnel_rows(counts: dict[str, Any], qas: Sequence[dict], filter_funnel: Sequence[dict]) -> list[dict[str, Any]]:
    """The whole funnel per kind: requested pairs -> schema-valid pairs returned -> each post-filter."""
    rows = []
    for kind, n_req in counts["requested"].items():
        n_ret = sum(q["kind"] == kind for q in qas)
        rows += [{"kind": kind, "step": "requested", "n_in": n_req, "n_removed": 0, "n_out": n_req},
                 {"kind": kind, "step": "returned_schema_valid", "n_in": n_req, "n_removed": n_req - n_ret,
                  "n_out": n_ret}]
        rows += [r for r in filter_funnel if r["kind"] == kind]
    return rows


def reject_counts(rejects: Sequence[dict]) -> list[dict[str, Any]]:
    """Rejects per kind and filter, with one example reason each (for the notebook)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rejects:
        groups.setdefault((r["kind"], r["filter"]), []).append(r)
    return [{"kind": k, "filter": f, "n": len(rs), "example_reason": rs[0]["reason"]}
            for (k, f), rs in sorted(groups.items())]


def write_outputs(stage_dir: Path, kept: Sequence[dict], rejects: Sequence[dict]) -> dict[str, int]:
    """qa_<kind>.jsonl for every kind (empty when not asked for) and rejects.jsonl, each written atomically.

    Written once at the end: a killed stage leaves none of them, and a rerun rebuilds them from the LLM cache."""
    n = {kind: runs.write_jsonl(Path(stage_dir) / f"qa_{kind}.jsonl", (q for q in kept if q["kind"] == kind))
         for kind in QUESTION_TYPES}
    n["rejects"] = runs.write_jsonl(Path(stage_dir) / "rejects.jsonl", rejects)
    return n


def stage_metrics(counts: dict[str, Any], funnel: Sequence[dict], kept: Sequence[dict], rejects: Sequence[dict],
                  mix: Sequence[dict], ledger: dict[str, Any]) -> dict[str, Any]:
    """What metrics.json records: survival per kind, removals per filter, type mix, throughput and the ledger."""
    survival = {}
    for kind, n_req in counts["requested"].items():
        ret = next(r["n_out"] for r in funnel if r["kind"] == kind and r["step"] == "returned_schema_valid")
        n_kept = sum(q["kind"] == kind for q in kept)
        survival[kind] = {"requested": n_req, "returned": ret, "kept": n_kept,
                          "kept_of_requested": round(n_kept / n_req, 4) if n_req else None,
                          "kept_of_returned": round(n_kept / ret, 4) if ret else None}
    returned = sum(v["returned"] for v in survival.values())
    spent_s = ledger["wall_s"] if ledger["calls"] else 0.0
    return {"n_qa": {k: v["kept"] for k, v in survival.items()}, "survival": survival,
            "removed_by_filter": dict(Counter(r["filter"] for r in rejects)),
            "funnel": list(funnel), "type_mix": list(mix), "planned_types": counts["planned_types"],
            "n_calls_ok": counts["n_calls_ok"], "n_calls_failed": counts["n_calls_failed"],
            "prompt_profile": counts.get("prompt_profile"),
            "qa_per_minute": round(returned / spent_s * 60, 2) if spent_s else None,  # schema-valid pairs returned
            "kept_per_minute": round(len(kept) / spent_s * 60, 2) if spent_s else None,
            "completion_tokens_per_s": round(ledger["completion_tokens"] / spent_s, 2) if spent_s else None,
            "llm_ledger": ledger}
