"""Runner overhead: papermill + kernel start-up per notebook, measured on seven trivial stage notebooks.

    .venv/bin/python bench/bench_runner.py

Prints, from one run, the per-notebook wall time as seen by the runner, the time the stage itself recorded,
and the overhead (the difference) with its share of the wall time.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils import pipeline  # noqa: E402
from paraqa_utils.stages import STAGES  # noqa: E402
from tests.conftest import make_notebook  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["PARAQA_RUNS"] = str(tmp / "runs")
        nb_dir = tmp / "nbs"
        nb_dir.mkdir()
        for s in STAGES:
            make_notebook(nb_dir / f"{s}.ipynb", s, 'run_dir = ""\nseed = 0', "stage.write_metrics(seed=seed)\nstage.finish()")
        (tmp / "p.yaml").write_text("common:\n  seed: 0\n")
        t0 = time.time()
        rc = pipeline.main(["--profile", str(tmp / "p.yaml"), "--run-id", "bench", "--notebooks-dir", str(nb_dir)])
        total = time.time() - t0
        assert rc == 0
        man = json.loads((tmp / "runs" / "bench" / "manifest.json").read_text())
    walls = [man["stages"][s]["duration_s"] for s in STAGES]
    overheads = [man["stages"][s]["overhead_s"] for s in STAGES]
    print(f"notebooks: {len(STAGES)}   whole run: {total:.2f} s")
    print(f"per notebook wall (runner): median {statistics.median(walls):.2f} s  min {min(walls):.2f}  max {max(walls):.2f}")
    print(f"per notebook overhead (papermill + kernel start + glue): median {statistics.median(overheads):.2f} s")
    print(f"overhead share of notebook wall time: {sum(overheads) / sum(walls):.1%}")


if __name__ == "__main__":
    main()
