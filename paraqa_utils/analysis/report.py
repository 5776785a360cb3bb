"""Stage 06's tables read from stage 05 and upstream metrics, the REPORT.md sections and the stage's metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from paraqa_utils import runs
from paraqa_utils.analysis.direction import direction_section
from paraqa_utils.analysis.explicit import explicit_method, explicit_table
from paraqa_utils.analysis.learning import learning_block, learning_table
from paraqa_utils.analysis.tables import TYPES, Inputs, data_tables, fmt
from paraqa_utils.analysis.validity import COLUMNS as VALIDITY_COLUMNS
from paraqa_utils.analysis.validity import validity_table
from paraqa_utils.analysis.verdict import verdict_text

MAIN_COLUMNS = ("judge", "condition", "n_items", "micro", "macro", *TYPES, "rel_improvement_pct", "ci_low", "ci_high",
                "p_value", "note")


def write_classification(stage: runs.Stage, inp: Inputs) -> pd.DataFrame:
    """Stage 05's classification metrics (WA/UA/macro-F1) -> tab_classification.csv (empty when 05 has none)."""
    classification = pd.DataFrame(inp.metrics("05_judge").get("classification", []))
    classification.to_csv(stage.dir / "tab_classification.csv", index=False)
    return classification


def judge_validation(inp: Inputs) -> dict[str, Any]:
    """Stage 05's validation.json ({} when 05 left none: the Verdict then says the judge scores are no evidence)."""
    val_path = inp.path("05_judge/validation.json")
    return runs.read_json(val_path) if val_path else {}


def write_validity(stage: runs.Stage, inp: Inputs) -> pd.DataFrame:
    """Stage 05's validation.json as a readable table (judge, measure, value, scale, n) -> tab_judge_validity.csv."""
    validation = judge_validation(inp)
    validity = validity_table(validation) if validation else pd.DataFrame(columns=VALIDITY_COLUMNS)
    validity.to_csv(stage.dir / "tab_judge_validity.csv", index=False)
    return validity


def write_learning(stage: runs.Stage, inp: Inputs, baseline: str = "baseline", n_resamples: int = 2000,
                   seed: int = 0) -> dict[str, Any]:
    """The learning block (learning.learning_block) with its `explicit_method` (explicit.explicit_method) ->
    tab_learning.csv (one row per condition and measure) and tab_explicit.csv (one row per explicit condition)."""
    block = learning_block(inp)
    block["explicit_method"] = explicit_method(inp, baseline, n_resamples, seed)
    learning_table(block).to_csv(stage.dir / "tab_learning.csv", index=False)
    explicit_table(block["explicit_method"]).to_csv(stage.dir / "tab_explicit.csv", index=False)
    return block


def write_data_tables(stage: runs.Stage, inp: Inputs) -> dict[str, pd.DataFrame]:
    """The data tables (annotation, QA funnel, mixtures, LLM ledger) -> tab_<name>.csv each."""
    tables = data_tables(inp)
    for name, table in tables.items():
        table.to_csv(stage.dir / f"tab_{name}.csv")
    return tables


def table_shapes(tables: dict[str, pd.DataFrame]) -> dict[str, tuple[int, int]]:
    return {name: table.shape for name, table in tables.items()}


def report_sections(summary: pd.DataFrame, missing: dict[str, str], main: pd.DataFrame,
                    classification: pd.DataFrame, validity: pd.DataFrame, tables: dict[str, pd.DataFrame],
                    main_test_set: str, baseline: str, verdict: dict[str, Any],
                    learning: dict[str, Any], direction: dict[str, Any] | None = None,
                    judge_validity: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """REPORT.md's sections in order: the verdict (verdict.build_verdict), stages, missing inputs (only if any),
    the paper's direction (with a direction block), learning, the main table, classification, judge validity, then
    one section per data table."""
    sections = [("Verdict", verdict_text(verdict)), ("Stages", fmt(summary))]
    if missing:
        sections.append(("Missing or unfinished inputs",
                         fmt(pd.Series(missing, name="why").to_frame().reset_index())))
    if direction is not None:
        sections.append(("The paper's direction (judge score 0-100 on the same items; relative gain in %, with its "
                         "95 % paired-bootstrap CI; holds when the CI's lower bound is above 0)",
                         direction_section(direction, judge_validity or {})))
    main_cols = [c for c in MAIN_COLUMNS if c in main]
    chance = learning.get("emotion_ua_chance", {})
    sections += [("Learning (did each condition learn? n = training steps or test items)",
                  fmt(learning_table(learning), 3) + f"\n\nChance emotion UA: {chance.get('value')} "
                  f"(1 / {chance.get('n_classes')} emotion classes in the emotion test set)."),
                 ("Explicit method (emotion UA 0-1 on the same items: the condition, the annotator whose labels "
                  "its prompts carry, and the UA gain over the baseline with its 95 % paired-bootstrap CI)",
                  fmt(explicit_table(learning.get("explicit_method", {})), 3)),
                 (f"Main table ({main_test_set}; judge score 0-100; relative improvement over {baseline} in %, "
                  "with its 95 % bootstrap CI)", fmt(main[main_cols]) if len(main) else "(no judgments)"),
                 ("Classification (answers mapped to labels; WA, UA, macro-F1 on 0-1)", fmt(classification)),
                 ("Judge validity", fmt(validity, 3) if len(validity) else "(none)")]
    sections += [(f"Data: {name}", fmt(t.reset_index())) for name, t in tables.items()]
    return sections


def analysis_metrics(stage: runs.Stage, inp: Inputs, figures: list[Path], main: pd.DataFrame,
                     regenerate_s: float, learning: dict[str, Any], verdict: dict[str, Any],
                     direction: dict[str, Any] | None = None,
                     judge_validity: dict[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json of stage 06: tables and figures written, missing inputs, time taken, the main table, the
    learning block, the verdict and, when given, the paper's direction (direction.direction_block) and each judge's
    held-out graded-set agreement (`judge_validity`, direction.graded_validity)."""
    extra = {k: v for k, v in (("direction", direction), ("judge_validity", judge_validity)) if v is not None}
    return {"n_tables": len(list(stage.dir.glob("tab_*.csv"))), "n_figures": len(figures) // 2,
            "missing_inputs": sorted(inp.missing), "regenerate_s": round(regenerate_s, 2),
            "main": main.round(4).to_dict("records"), "learning": learning, "verdict": verdict, **extra}
