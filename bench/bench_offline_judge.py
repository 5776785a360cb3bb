"""Offline facet scorer throughput: graded items scored per second, against its own limit, the MiniLM embedding
of the answer and the reference it must do for every item (the rest is keyword and token work).

    .venv/bin/python bench/bench_offline_judge.py [--repeat 6]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils import text  # noqa: E402
from paraqa_utils.judge import graded, offline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=6, help="copies of the dev + held-out graded sets to score")
    args = ap.parse_args()
    embed = text.minilm_embedder("")
    embed(["warm up"])
    items = [it for p in (*graded.DEV_FILES, graded.HELDOUT_FILE) for it in graded.load_graded(p)] * args.repeat
    t0 = time.perf_counter()
    embed([it["answer"] or "" for it in items if (it["answer"] or "").strip()])
    embed([it["reference"] for it in items if (it["answer"] or "").strip()])
    limit = time.perf_counter() - t0
    t0 = time.perf_counter()
    offline.FacetScorer(embed).score(items)
    spent = time.perf_counter() - t0
    print(f"{offline.NAME}: {len(items)} items in {spent:.2f} s = {len(items) / spent:.1f} items/s; "
          f"embedding alone {len(items) / limit:.1f} items/s; share of that limit {limit / spent:.2f}")


if __name__ == "__main__":
    main()
