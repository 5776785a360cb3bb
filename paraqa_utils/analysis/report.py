"""Stage 06's tables read from stage 05 and upstream metrics, the REPORT.md sections and the stage's metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from paraqa_utils import runs
from paraqa_utils.analysis.tables import TYPES, Inputs, data_tables, fmt

MAIN_COLUMNS = ("judge", "condition", "n_items", "micro", "macro", *TYPES, "rel_improvement_pct", "ci_low", "ci_high",
                "p_value", "note")


def write_classification(stage: runs.Stage, inp: Inputs) -> pd.DataFrame:
    """Stage 05's classification metrics (WA/UA/macro-F1) -> tab_classification.csv (empty when 05 has none)."""
    classification = pd.DataFrame(inp.metrics("05_judge").get("classification", []))
    classification.to_csv(stage.dir / "tab_classification.csv", index=False)
    return classification


def write_validity(stage: runs.Stage, inp: Inputs) -> pd.DataFrame:
    """Stage 05's validation.json flattened to one value per dotted key -> tab_judge_validity.csv."""
    val_path = inp.path("05_judge/validation.json")
    validation = runs.read_json(val_path) if val_path else {}
    validity = pd.json_normalize(validation, sep=".").T.rename(columns={0: "value"}) if validation else pd.DataFrame()
    validity.to_csv(stage.dir / "tab_judge_validity.csv")
    return validity


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
                    main_test_set: str, baseline: str) -> list[tuple[str, str]]:
    """REPORT.md's sections in order: stages, missing inputs (only if any), the main table, classification,
    judge validity, then one section per data table."""
    sections = [("Stages", fmt(summary))]
    if missing:
        sections.append(("Missing or unfinished inputs",
                         fmt(pd.Series(missing, name="why").to_frame().reset_index())))
    main_cols = [c for c in MAIN_COLUMNS if c in main]
    sections += [(f"Main table ({main_test_set}; judge score 0-100; relative improvement over {baseline})",
                  fmt(main[main_cols]) if len(main) else "(no judgments)"),
                 ("Classification (answers mapped to labels)", fmt(classification)),
                 ("Judge validity", fmt(validity.reset_index()) if len(validity) else "(none)")]
    sections += [(f"Data: {name}", fmt(t.reset_index())) for name, t in tables.items()]
    return sections


def analysis_metrics(stage: runs.Stage, inp: Inputs, figures: list[Path], main: pd.DataFrame,
                     regenerate_s: float) -> dict[str, Any]:
    """metrics.json of stage 06: tables and figures written, missing inputs, time taken, the main table."""
    return {"n_tables": len(list(stage.dir.glob("tab_*.csv"))), "n_figures": len(figures) // 2,
            "missing_inputs": sorted(inp.missing), "regenerate_s": round(regenerate_s, 2),
            "main": main.round(4).to_dict("records")}
