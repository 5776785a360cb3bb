"""Offline judges' throughput on a 2-core CPU: graded items scored per second by the learned judge (the default)
and by the older facet rules, against the issue's floor of 20 items/s and against their own limit, MiniLM's
forward pass over the texts each must encode (the rest is word lists and a small head).

    .venv/bin/python bench/bench_offline_judge.py [--repeat 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils import text  # noqa: E402
from paraqa_utils.judge import features, graded, scorers  # noqa: E402

FLOOR = 20.0  # items/s the issue asks of an offline judge on a CPU


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2, help="copies of every graded set to score")
    args = ap.parse_args()
    paths = sorted(Path(graded.GRADED_DIR).glob("*.jsonl"))
    items = [it for p in paths for it in graded.load_graded(p)] * args.repeat
    embed = text.minilm_embedder("")
    encoder = features.minilm_encoder("")
    encoder(["warm up"])
    embed(["warm up"])
    # the learned judge's floor: MiniLM over answers, references, questions and answer sentences, nothing else
    texts = [x for it in items for x in (it["answer"], it["reference"], it["question"],
                                         *features.sentences(it["answer"]))]
    t0 = time.perf_counter()
    encoder(texts)
    limit = time.perf_counter() - t0
    for name in scorers.SCORERS:
        judge = scorers.Offline(name, embed=embed, encoder=encoder)
        judge.grades(items[:8])  # loads
        t0 = time.perf_counter()
        judge.grades(items)
        spent = time.perf_counter() - t0
        rate = len(items) / spent
        extra = f"; MiniLM alone {len(items) / limit:.1f} items/s, share of that limit {limit / spent:.2f}" \
            if name.startswith("learned") else ""
        print(f"{judge.name} ({judge.version}): {len(items)} items in {spent:.2f} s = {rate:.1f} items/s, "
              f"{rate / FLOOR:.1f}x the floor of {FLOOR:.0f} items/s{extra}")


if __name__ == "__main__":
    main()
