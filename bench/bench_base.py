"""04's base phase (the aligned base) on CPU with the embedded default: rates from one run.

    .venv/bin/python bench/bench_base.py [--threads 2] [--steps 10]

Builds a base, as the demo profile would (readouts, LoRA, batch 8), on a fake 00/03 run of espeak-ng clips (16 train
clips) into a temporary cache, and prints: seconds per clip of the transcript read-out (the Speech-LLM's own Whisper
decoder, greedy, KV-cached) and of the encoder, the alignment steps' seconds/step, examples/s and tokens/s, and
the matmul ratio against this machine's GEMM rate at the LLM's own shapes, in the dtype the base trains in (bf16 on a
CPU with native bf16 dot products), timed in the same process (4 x N FLOPs per token, N the LLM's matrices without
its input embedding table: forward plus the backward pass to the inputs through the frozen LLM; bench_finetune.py
uses the same limit).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    import shutil

    import torch

    from bench_finetune import gemm_flops_per_s
    from paraqa_utils import audio, runs
    from paraqa_utils.finetune import conditions as stage04
    from paraqa_utils.finetune import model as speech_model
    from paraqa_utils.finetune import readout
    from paraqa_utils.finetune.config import make_config
    from paraqa_utils.params import load_profile
    from paraqa_utils.testing.fake_stages import make_fake_merge

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        make_fake_merge(run, n_train_clips=16, n_test_clips=2)
        block = {k: v for k, v in load_profile("demo")["04_finetune"].items() if k not in ("conditions", "zero_shot")}
        # a seed of its own: the bench's base never meets a real one in the machine's cache (deleted at the end)
        cfg = make_config(**{**block, "base_steps": args.steps, "progress": False, "torch_threads": args.threads,
                             "seed": 7919, "run_dir": str(run), "out_dir": str(run / "04_finetune")})
        net, cache, reads, _ = speech_model.setup(cfg, label_classes={"gender": ["female", "male"]})
        clips = [(audio.content_hash(p), p) for p in sorted((run / "00_corpus" / "audio").glob("*.wav"))]
        states = cache.states_for(clips)
        t0 = time.perf_counter()
        readout.WhisperTranscriber(net.audio_encoder.whisper, net.audio_encoder.model_id).transcribe(states)
        per_clip = (time.perf_counter() - t0) / len(clips)
        table = net.llm.get_input_embeddings().weight
        n_llm = sum(p.numel() for p in net.llm.parameters() if not p.requires_grad and p.data_ptr() != table.data_ptr())
        dtype = table.dtype
        lc = net.llm.config
        t0 = time.perf_counter()
        aligned = stage04.prepare_base(runs.Stage(run, "04_finetune"), cfg)
        total = time.perf_counter() - t0
        shutil.rmtree(aligned.path, ignore_errors=True)
    m = aligned.manifest
    tr = m["train"]
    tokens = int(tr["tokens_per_s"] * tr["seconds_per_step"])
    gemm = gemm_flops_per_s(tokens, lc.hidden_size, lc.intermediate_size, dtype)
    work = 4 * n_llm * tr["tokens_per_s"]
    print(f"torch threads: {args.threads}; demo's base settings ({cfg.readouts}, {cfg.train_mode}, batch "
          f"{cfg.batch_size}); {m['n_examples']} examples from 16 train clips (espeak-ng, 1-3 s); {tr['steps']} steps")
    print(f"transcript read-out: {per_clip:.2f} s per clip (greedy Whisper decoder on the cached encoder states)")
    print(f"build: {total:.1f} s in all ({m['transcripts_decoded']} transcripts decoded in it)")
    print(f"alignment: {tr['seconds_per_step']:.2f} s/step, {tr['examples_per_s']:.2f} examples/s, "
          f"{tr['tokens_per_s']:.0f} tokens/s")
    print(f"  = {work / 1e9:.2f} GFLOP/s of model work (4 x {n_llm / 1e6:.0f} M LLM matrix params x tokens/s); "
          f"{str(dtype).replace('torch.', '')} GEMM "
          f"at the LLM's shapes ({tokens} x {lc.hidden_size} @ {lc.hidden_size} x {lc.intermediate_size}) here: "
          f"{gemm / 1e9:.2f} GFLOP/s; matmul ratio {work / gemm:.2f}")


if __name__ == "__main__":
    main()
