"""Judge throughput: judgments/s against a 100 ms-latency loopback server at concurrency 32, and against the
embedded llama.cpp server; parse-failure rate of the embedded judge.

    .venv/bin/python bench/bench_judge.py [--n-fake 640] [--n-embedded 24]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils import judge
from paraqa_utils.llm import server as llm_server  # noqa: E402
from paraqa_utils.llm import LLMClient  # noqa: E402
from tests.unit.test_llm_fakes import FakeLLMServer  # noqa: E402

EMOS = ["happy", "sad", "angry", "afraid", "surprised", "calm"]


def items(n: int) -> list[dict]:
    out = []
    for i in range(n):
        ref, other = EMOS[i % 6], EMOS[(i + 1 + i // 6) % 6]
        ans = f"The speaker sounds {ref}." if i % 2 == 0 else f"The speaker sounds {other}."
        out.append({"item_id": f"i{i}", "condition": "bench", "test_set": "cpqa_ref", "question_type": "CE",
                    "question": f"How does the speaker feel when saying line {i}?",
                    "reference": f"The speaker sounds {ref}.", "answer": ans})
    return out


def fake_reply(body: dict) -> str:
    return json.dumps({"explanation": "compared with the reference", "rating": 3})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-fake", type=int, default=640)
    ap.add_argument("--n-embedded", type=int, default=24)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeLLMServer(fake_reply, latency_s=0.1, max_lifetime_s=300) as srv:
        client = LLMClient([srv.base_url], model="fake", cache_dir=None, concurrency=32, progress=False)
        cfg = judge.JudgeConfig("fake/rubric_v1", "rubric_v1", client)
        t0 = time.perf_counter()
        rows = judge.judge_items(cfg, items(args.n_fake))
        dt = time.perf_counter() - t0
        print(f"fake server (100 ms/request), concurrency 32: {len(rows) / dt:.1f} judgments/s "
              f"(ideal 320; ratio {len(rows) / dt / 320:.2f}); parse ok {sum(r['parse_ok'] for r in rows)}/{len(rows)}")
    if args.n_embedded:
        with tempfile.TemporaryDirectory() as tmp, llm_server.embedded_llm_server(Path(tmp) / "s.log", n_threads=1) as ep:
            client = LLMClient([ep], cache_dir=None, concurrency=1, progress=False, response_format="auto")
            its = items(args.n_embedded)
            for rubric in ("rubric_para_v1", "binary_v1"):
                cfg = judge.JudgeConfig(f"embedded/{rubric}", rubric, client, max_tokens=160)
                t0 = time.perf_counter()
                rows = judge.judge_items(cfg, its)
                dt = time.perf_counter() - t0
                fails = sum(not r["parse_ok"] for r in rows)
                right = [r["score"] for r, it in zip(rows, its) if it["answer"] == it["reference"] and r["parse_ok"]]
                wrong = [r["score"] for r, it in zip(rows, its) if it["answer"] != it["reference"] and r["parse_ok"]]
                mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
                print(f"embedded SmolLM2 {rubric}: {len(rows) / dt:.2f} judgments/s; parse failures {fails}/{len(rows)}; "
                      f"mean rating right answers {mean(right):.2f} vs wrong answers {mean(wrong):.2f}")


if __name__ == "__main__":
    main()
