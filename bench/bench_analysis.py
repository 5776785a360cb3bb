"""Time to regenerate the main table, data tables and figures for a synthetic run with 50,000 judged items.

    .venv/bin/python bench/bench_analysis.py [--items 50000] [--run RUN_ID]

With --run, also re-executes the 06_analysis notebook of an existing run (e.g. a demo run) and reports its
own recorded regeneration time (metrics.json: regenerate_s) next to the notebook's wall time.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils import analysis, plots, runs  # noqa: E402


def synthetic_judgments(n_items: int, conditions: list[str], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per_cond = n_items // len(conditions)
    qtypes = rng.choice(["C", "CE", "CG"], per_cond, p=[0.16, 0.65, 0.19])
    base = rng.integers(0, 6, per_cond) * 20.0
    frames = []
    for k, cond in enumerate(conditions):
        score = np.clip(base + rng.choice([0, 20], per_cond, p=[1 - 0.1 * k, 0.1 * k]), 0, 100)
        frames.append(pd.DataFrame({"judge": "bench", "condition": cond, "test_set": "cpqa_ref",
                                    "question_type": qtypes, "item_id": [f"i{i}" for i in range(per_cond)],
                                    "run": 0, "score_100": score, "parse_ok": True, "probe": None}))
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--run", default="")
    args = ap.parse_args()
    conds = ["zero_shot", "baseline", "pqa_star", "implicit", "explicit", "implicit_explicit"]
    j = synthetic_judgments(args.items, conds)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PARAQA_RUNS"] = tmp
        t0 = time.perf_counter()
        scores = analysis.item_scores(j)
        t_scores = time.perf_counter() - t0
        t0 = time.perf_counter()
        main = analysis.main_table(scores, n_resamples=2000)
        t_main = time.perf_counter() - t0
        out = Path(tmp)
        t0 = time.perf_counter()
        plots.save(plots.scores_by_type(scores, "bench", conds), out, "scores", "bench")
        t_fig = time.perf_counter() - t0
    print(f"judged items: {len(j):,} ({len(conds)} conditions)")
    print(f"per-item scores: {t_scores:.2f} s; main table with 2,000 bootstrap + permutation resamples: {t_main:.2f} s")
    print(f"bar figure with CIs (1,000 bootstrap): {t_fig:.2f} s; total {t_scores + t_main + t_fig:.2f} s")
    print(main[["condition", "micro", "rel_improvement_pct", "ci_low", "ci_high"]].round(2).to_string(index=False))
    if args.run:
        run = runs.find_run(args.run)
        t0 = time.perf_counter()
        executed = Path(tempfile.mkdtemp()) / "06_analysis.ipynb"
        subprocess.run([sys.executable, "-m", "papermill", "notebooks/06_analysis.ipynb", str(executed),
                        "-k", "paraqa", "-p", "run_dir", str(run), "--no-progress-bar"],
                       check=True, cwd=Path(__file__).resolve().parents[1], capture_output=True)
        wall = time.perf_counter() - t0
        rec = runs.read_json(run / "06_analysis" / "metrics.json")
        print(f"run {run.name}: 06_analysis notebook wall {wall:.1f} s, of which tables+figures {rec['regenerate_s']} s")


if __name__ == "__main__":
    main()
