"""python -m paraqa_utils.evaluate against a loopback OpenAI-compatible audio endpoint (its own process is not
needed: the fake server runs in a thread) that sleeps 100 ms per request, at concurrency 8 and 32:

    .venv/bin/python bench/bench_evaluate.py [--items 160] [--latency-s 0.1] [--clip-s 5]

Items/s of answering (base64 WAV encoding of each clip included), as a share of the ideal concurrency / latency.
No cache: every call is made. Then a tiny random Qwen2-Audio (1-layer encoder and LLM) through its processor and
generate on CPU, 8 new tokens an item: that measures the code path's overhead, not a real model's speed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils.evaluate import endpoint  # noqa: E402
from tests.unit.test_llm_fakes import FakeLLMServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=160)
    ap.add_argument("--latency-s", type=float, default=0.1)
    ap.add_argument("--clip-s", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        sf.write(wav, (0.1 * np.random.default_rng(0).standard_normal(int(args.clip_s * 16000))).astype(np.float32), 16000)
        items = [{"id": f"i{i}", "test_set": "bench", "audio_path": str(wav), "question": f"Question {i}?",
                  "reference": "r", "question_type": "C"} for i in range(args.items)]
        print(f"answering {args.items} items ({args.clip_s:g} s clips) against a {args.latency_s * 1000:.0f} ms "
              "loopback audio endpoint")
        print("   concurrency  items/s    ideal   ratio")
        for conc in (8, 32):
            with FakeLLMServer(lambda body: "An answer.", latency_s=args.latency_s, max_lifetime_s=600) as srv:
                m = endpoint.EndpointModel.parse("bench", f"openai:m@{srv.base_url}")
                t0 = time.perf_counter()
                rows = endpoint.answer(m, items, None, concurrency=conc)
                dt = time.perf_counter() - t0
            assert all(r["error"] is None for r in rows), [r["error"] for r in rows if r["error"]][:2]
            ideal = conc / args.latency_s
            print(f"   {conc:11d} {len(rows) / dt:8.1f} {ideal:8.0f} {len(rows) / dt / ideal:7.2f}")
        from paraqa_utils.evaluate import hf_model
        from paraqa_utils.testing.tiny_models import save_tiny_qwen2_audio

        m = hf_model.HfAudioLLM.parse("tiny", f"hf:{save_tiny_qwen2_audio(Path(tmp))}#max_new_tokens=8")
        few = items[:16]
        hf_model.answer(m, few[:1])  # warm: load and first forward
        t0 = time.perf_counter()
        rows = hf_model.answer(m, few)
        dt = time.perf_counter() - t0
        print(f"tiny Qwen2-Audio on CPU ({args.clip_s:g} s clips, load included): {len(rows) / dt:.2f} items/s")


if __name__ == "__main__":
    main()
