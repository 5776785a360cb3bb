"""python -m paraqa_utils.evaluate against a loopback OpenAI-compatible audio endpoint (its own process is not
needed: the fake server runs in a thread) that sleeps 100 ms per request, at concurrency 8 and 32:

    .venv/bin/python bench/bench_evaluate.py [--items 160] [--latency-s 0.1] [--clip-s 5] [--hf-items 32]

Items/s of answering (base64 WAV encoding of each clip included), as a share of the ideal concurrency / latency.
No cache: every call is made. Then a tiny random Qwen2-Audio (1-layer encoder and LLM) through its processor and
generate, 8 new tokens an item, checkpoint load included: batches of 8 (the default) against batch_size=1 (one
generate call per item, the path before batching), on the same items, interleaved in one run (best of --hf-repeats,
each listed), and whether their answers are the same. That measures the code path's overhead, not a real model's
speed: each row's 30 s log-mel features and encoder pass cost the same batched or not.
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
    ap.add_argument("--hf-items", type=int, default=32)
    ap.add_argument("--hf-device", default="cpu")
    ap.add_argument("--hf-repeats", type=int, default=3)
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

        folder, rates, answers = save_tiny_qwen2_audio(Path(tmp)), {1: [], 8: []}, {}
        few = [{**items[0], "id": f"h{i}", "question": f"Question {i}?"} for i in range(args.hf_items)]
        hf_model.answer(hf_model.HfAudioLLM.parse("tiny", f"hf:{folder}#device={args.hf_device}"), few[:8])  # warm
        for _ in range(args.hf_repeats):  # interleaved; the best of each: a shared CPU's bursts only slow a run
            for bs in (1, 8):
                m = hf_model.HfAudioLLM.parse("tiny", f"hf:{folder}#max_new_tokens=8,batch_size={bs},"
                                                      f"device={args.hf_device}")
                t0 = time.perf_counter()
                rows = hf_model.answer(m, few)
                rates[bs].append(len(rows) / (time.perf_counter() - t0))
                answers[bs] = [r["answer"] for r in rows]
        one, eight = max(rates[1]), max(rates[8])
        print(f"tiny Qwen2-Audio on {args.hf_device} ({len(few)} items, {args.clip_s:g} s clips, load included, best "
              f"of {args.hf_repeats}): one at a time {one:.2f} items/s, batches of 8 {eight:.2f} items/s, ratio "
              f"{eight / one:.2f}; same answers: {answers[1] == answers[8]}")
        print("   every repeat, items/s: " + "; ".join(f"batch {bs}: {' '.join(f'{r:.1f}' for r in v)}"
                                                     for bs, v in rates.items()))

if __name__ == "__main__":
    main()
