"""Analysis: a run summary and REPORT.md from the run's artifacts (the paper's tables and figures come later)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from paraqa_utils import runs
from paraqa_utils.stages import STAGES


def stage_summary(stage: runs.Stage) -> pd.DataFrame:
    """One row per upstream stage: implemented or placeholder, duration, and its headline metrics."""
    rows: list[dict[str, Any]] = []
    for name in STAGES[: STAGES.index(stage.name)]:
        metrics = stage.upstream_metrics(name)  # hash-checked read
        rec = runs.read_json(stage.run_dir / name / runs.STAGE_FILE)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) and k != "implemented"}
        rows.append({"stage": name, "implemented": rec.get("implemented", True),
                     "duration_s": rec.get("duration_s"), "n_artifacts": len(rec.get("outputs", {})),
                     "metrics": ", ".join(f"{k}={v}" for k, v in list(scalars.items())[:8])})
    return pd.DataFrame(rows)


def write_report(stage: runs.Stage, summary: pd.DataFrame) -> Path:
    """REPORT.md: what ran, what is still a placeholder, and the params and manifest summary."""
    run_dir = stage.run_dir
    manifest = runs.read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").exists() else {}
    params = (run_dir / "params.resolved.yaml").read_text() if (run_dir / "params.resolved.yaml").exists() else ""
    placeholders = summary.loc[~summary["implemented"], "stage"].tolist() if len(summary) else []
    lines = [f"# ParaQA run `{run_dir.name}`", ""]
    git = manifest.get("git", {})
    lines += [f"- profile: `{manifest.get('profile', '?')}`",
              f"- git commit: `{git.get('commit')}` (dirty: {git.get('dirty')})",
              f"- created: {manifest.get('created_utc', '?')}", ""]
    if placeholders:
        lines += ["**Not implemented yet** (placeholder stages; their numbers below are not results): "
                  + ", ".join(f"`{p}`" for p in placeholders), ""]
    lines += ["## Stages", "", summary.to_markdown(index=False) if len(summary) else "(none)", ""]
    lines += ["## Resolved parameters", "", "```yaml", params.rstrip(), "```", ""]
    out = stage.dir / "REPORT.md"
    out.write_text("\n".join(lines))
    return out
