"""`python -m paraqa_utils.evaluate`: answer, judge and tabulate any Speech-LLM on any CPQA test set.

    python -m paraqa_utils.evaluate --test-set run:RUN | FILE.jsonl | FILE.csv | hf:DATASET[@split] [...]
        --model NAME=openai:<model>@<base_url>[#options] | NAME=hf:<audio-LLM>[#batch_size=8,...]
                | NAME=paraqa:<04_finetune/condition folder> [...]
        --judge offline|embedded|openai
        [--judge-base-url URL --judge-model M --rubric R] [--map FIELD=COLUMN,...] --out DIR

Writes DIR/predictions.jsonl (one row per model and item, its audio policy, errors recorded), DIR/judgments/,
DIR/rejects.jsonl (items refused by the loader, with the reason; a test set whose every item is refused exits 2,
printing its first reasons, before any model is called), DIR/results.csv (model x test set x question
type: judge score 0-100 with a bootstrap 95 % CI, parse rate, counts), DIR/fig_results.png and DIR/EVAL.md.
A rerun with the same DIR repeats no finished call (answers and judgments are cached).
Models: OpenAI-compatible audio chat endpoints (paraqa_utils/evaluate/endpoint.py), transformers audio-LLMs
(hf_model.py, answered in batches) and ParaQA-trained condition folders (condition_model.py). An external model never
gets 03's explicit labels unless `explicit=true` is asked.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from paraqa_utils.evaluate.results import evaluate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paraqa_utils.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--test-set", action="append", required=True, dest="test_sets")
    ap.add_argument("--model", action="append", required=True, dest="models", metavar="NAME=SPEC")
    ap.add_argument("--judge", default="offline", choices=("offline", "embedded", "openai"))
    ap.add_argument("--judge-base-url", default="")
    ap.add_argument("--judge-model", default="")
    ap.add_argument("--judge-api-key-env", default=None)
    ap.add_argument("--rubric", default=None, help="an LLM judge's rubric (e.g. audiobench_v1 for AudioBench parity)")
    ap.add_argument("--map", default="", help="column mapping override, e.g. question=instruction,reference=answer")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from paraqa_utils.evaluate.condition_model import ConditionModelError
    from paraqa_utils.evaluate.endpoint import ModelSpecError
    from paraqa_utils.evaluate.testsets import TestSetError
    from paraqa_utils.judge.score import ScoreError

    try:
        summary = evaluate(args.test_sets, args.models, Path(args.out), judge=args.judge, mapping=args.map,
                           judge_base_url=args.judge_base_url, judge_model=args.judge_model,
                           judge_api_key_env=args.judge_api_key_env, rubric=args.rubric, concurrency=args.concurrency)
    except (TestSetError, ModelSpecError, ConditionModelError, ScoreError) as exc:
        print(f"paraqa_utils.evaluate: {exc}", file=sys.stderr)
        return 2
    print(summary["table"])
    print(f"\nwrote {summary['out']}/EVAL.md")
    return 1 if summary["n_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
