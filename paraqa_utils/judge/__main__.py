"""python -m paraqa_utils.judge score --items F.jsonl --judge offline|embedded|openai --out O.jsonl [...]"""
from __future__ import annotations

import argparse
import sys

from paraqa_utils.judge.llm_judge import RUBRICS
from paraqa_utils.judge import score
from paraqa_utils.judge.scorers import SCORERS
from paraqa_utils.judge.score import JUDGES, ScoreError, score_file, summary_lines
from paraqa_utils.judge.learned import LearnedJudgeError
from paraqa_utils.llm import LLMConfigError

N_REJECTS_SHOWN = 5


def main(argv: list[str] | None = None) -> int:
    """Exit status 0: every item scored or refused; 1: some got no reply (rerun the same command); 2: an error,
    nothing scored."""
    ap = argparse.ArgumentParser(prog="python -m paraqa_utils.judge")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("score", help="score a JSONL of {id, question, reference, answer[, question_type]} with one "
                                     "judge; rejects go to O.rejects.jsonl, a rerun resumes",
                       description=score.__doc__, epilog=main.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--items", required=True, help="input JSONL")
    c.add_argument("--out", required=True, help="output JSONL (05's judgment rows, keyed by id)")
    c.add_argument("--judge", required=True, choices=JUDGES,
                   help="offline: the learned offline judge (--scorer); embedded: the LLM judge on the embedded SmolLM2 server; "
                        "openai: the LLM judge on an OpenAI-compatible endpoint")
    c.add_argument("--scorer", default=None, choices=list(SCORERS),
                   help="offline: learned_v2 (default) or facets_v2 (the earlier rules, to recompute earlier runs)")
    c.add_argument("--base-url", default="", help="openai: the endpoint, e.g. https://api.openai.com/v1")
    c.add_argument("--model", default="", help="openai: the served model id")
    c.add_argument("--api-key-env", default=None,
                   help="openai: the NAME of the environment variable holding the key (05's default: OPENAI_API_KEY)")
    c.add_argument("--name", default=None, help="LLM judges: its name in the rows (default: embedded / the model)")
    c.add_argument("--rubric", default=None, choices=list(RUBRICS), help="LLM judges (default: 05's first rubric)")
    c.add_argument("--runs", type=int, default=None, help="LLM judges: repeats per item (default: 05's n_judge_runs)")
    c.add_argument("--concurrency", type=int, default=None, help="LLM judges: requests in flight (default: 05's)")
    c.add_argument("--cache-dir", default=None, help="LLM judges: reply cache (default: O.jsonl.cache/ beside --out)")
    args = ap.parse_args(argv)
    knobs = {k: v for k, v in (("n_judge_runs", args.runs), ("concurrency", args.concurrency)) if v is not None}
    try:
        s = score_file(args.items, args.out, args.judge, args.rubric, args.base_url, args.model, args.api_key_env,
                       args.name, args.cache_dir, knobs or None, scorer=args.scorer)
    except (ScoreError, LLMConfigError, LearnedJudgeError, ValueError) as exc:  # ValueError: 05's settings checks (e.g. --runs 0)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in s["rejects"][:N_REJECTS_SHOWN]:
        print(f"rejected {r['where']} (id {r['id']!r}): {r['reason']}", file=sys.stderr)
    if len(s["rejects"]) > N_REJECTS_SHOWN:
        print(f"... and {len(s['rejects']) - N_REJECTS_SHOWN} more in {s['rejects_path']}", file=sys.stderr)
    print("\n".join(summary_lines(s)))
    return 1 if s["n_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
