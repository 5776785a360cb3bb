"""04_finetune on CPU with the embedded default (Whisper base encoder + SmolLM2-135M-Instruct): rates from one run.

    .venv/bin/python bench/bench_finetune.py                # all parts (~12 min on 2 cores)
    .venv/bin/python bench/bench_finetune.py --skip-demo    # without the demo-size run (~4 min)

1. seconds per training step and training examples per second, with the encoder cache warm and without it
   (adapter only, batch 4), and the encoder's own seconds per clip, unpadded and padded to a 30 s window;
2. adapter + LoRA at the demo's shapes (params/demo.yaml's 04 knobs: batch 8, LoRA r=8 on q/k/v/o without dropout,
   the empty system turn, the transcript read-out), once in float32 and once in the dtype `auto` picks here (bf16 on
   a CPU with native bf16 dot products), each with its peak resident memory;
3. the time to train and predict every condition (+ zero_shot) at the demo size (params/demo.yaml's 04 block)
   on a fake 03 stage of espeak-ng clips (24 training clips, 6 test clips).
Each part runs in its own process (so peak memory is that part's); the printout is what to report.

The limit a step is measured against: this machine's GEMM rate at the LLM's own shapes (tokens x hidden @ hidden x
intermediate), in the dtype the step computes in, timed in the same process and thread count. `matmul ratio` =
the step's matmul FLOPs per second / that GEMM rate. Training the adapter (and LoRA) through a frozen LLM costs
4 x N FLOPs per token (forward, plus the backward pass to the inputs; no weight gradients for the frozen matrices),
N = the LLM's matrices without its input embedding table (a lookup, not a matmul), plus 4 x vocab x hidden per
position the loss reads (the output projection runs only from the first answer token on).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _child(part: str, run: Path, threads: int) -> dict:
    import dataclasses

    import torch

    from paraqa_utils import finetune, runs
    from paraqa_utils.finetune import conditions as finetune_stage
    from paraqa_utils.finetune import speech_data, speech_llm
    from paraqa_utils.finetune.config import make_config
    from paraqa_utils.params import load_profile

    torch.set_num_threads(threads)
    d = run / "03_explicit_merge"
    out: dict = {}
    if part in ("rates", "lora_float32", "lora_auto"):
        knobs = dict(n_steps=6, batch_size=4, train_mode="adapter")
        if part != "rates":  # the demo's shapes: its 04 knobs, with the read-out that needs no base
            demo = load_profile("demo")["04_finetune"]
            knobs = {k: demo[k] for k in ("batch_size", "train_mode", "lora_dropout", "system_prompt", "lr")
                     if k in demo}
            knobs.update(n_steps=6, readouts="transcript", base="none", dtype=part.split("_")[1])
        cfg = make_config(condition="baseline", train_file=str(d / "train_baseline.jsonl"), run_dir=str(run),
                          out_dir=str(run / f"bench_{part}"), resume=False, progress=False, torch_threads=threads,
                          test_files={"emotion": str(d / "test_emotion.jsonl")}, max_test_items=4, max_new_tokens=16,
                          **knobs)
        t0 = time.perf_counter()
        dtype = speech_llm.resolve_dtype(cfg.dtype, torch.device("cpu"))
        model = finetune.build_model(cfg, torch.device("cpu"), dtype)
        out["load_s"] = time.perf_counter() - t0
        out["dtype"] = str(dtype).replace("torch.", "")
        fmt = speech_data.prompt_format(model.tokenizer, cfg)
        samples = speech_data.encode_records(runs.read_jsonl(Path(cfg.train_file)), fmt, run, 15, False, True, {})
        clips = list({s.audio_key: s for s in samples}.values())
        bare = speech_data.EncoderCache(model.audio_encoder, None, enabled=False)
        bare.get(clips[:1])  # the first call pays one-time start-up costs: not the encoder's rate
        t0 = time.perf_counter()
        bare.get(clips)
        out["n_clips"] = len(clips)
        out["encoder_s_per_clip"] = (time.perf_counter() - t0) / out["n_clips"]
        import numpy as np  # what padding every clip to Whisper's 30 s window would cost instead

        t0 = time.perf_counter()
        model.audio_encoder.encode_many([np.zeros(30 * 16000, np.float32)] * 4)
        out["encoder_s_per_30s_window"] = (time.perf_counter() - t0) / 4
        cache = speech_data.EncoderCache(model.audio_encoder, Path(cfg.out_dir) / "_cache" / "encoder")
        cache.get(clips)  # warm: every training clip once, on disk for run_condition
        out["cache_on"] = finetune.run_condition(cfg)
        llm_cfg = model.llm.config
        log = [r for r in runs.read_jsonl(Path(cfg.out_dir) / "baseline" / "train_log.jsonl")]
        loss_positions = sum(r["n_answer_tokens"] for r in log)  # close enough: the slice also keeps some padding
        seconds = sum(r["seconds"] for r in log)
        out["matmul_flops_per_s"] = step_flops(model, out["cache_on"]["tokens_per_s"] * seconds, loss_positions) / seconds
        tokens = int(out["cache_on"]["tokens_per_s"] * out["cache_on"]["seconds_per_step"]) or 512
        out["tokens_per_step"] = tokens
        out["gemm_flops_per_s"] = gemm_flops_per_s(tokens, llm_cfg.hidden_size, llm_cfg.intermediate_size, dtype)
        out["shape"] = f"{llm_cfg.hidden_size} @ {llm_cfg.hidden_size} x {llm_cfg.intermediate_size}"
        # the figure earlier versions printed: 4 x all LLM params x tokens/s against the float32 GEMM
        out["n_llm_params"] = sum(p.numel() for p in model.llm.parameters())
        out["gemm_f32_flops_per_s"] = (out["gemm_flops_per_s"] if dtype == torch.float32 else
                                       gemm_flops_per_s(tokens, llm_cfg.hidden_size, llm_cfg.intermediate_size))
        if part == "rates":
            out["cache_off"] = finetune.run_condition(dataclasses.replace(
                cfg, out_dir=str(run / "bench_cache_off"), use_encoder_cache=False, test_files={}))
    else:  # demo: the notebook's own calls with the demo profile's 04 block
        block = dict(load_profile("demo")["04_finetune"])
        conditions, zero_shot = block.pop("conditions", "all"), block.pop("zero_shot", True)
        base = make_config(**{**block, "progress": False, "torch_threads": threads})
        stage = runs.Stage(run, "04_finetune")
        t0 = time.perf_counter()
        plan = finetune_stage.plan(stage, base, conditions, zero_shot)
        aligned = finetune_stage.prepare_base(stage, base)  # built once per machine; out of this figure after that
        out["base_built_s"] = time.perf_counter() - t0 if aligned.built else 0.0
        plan = finetune_stage.start_from(plan, aligned)
        t0 = time.perf_counter()
        summaries = {c: finetune.run_condition(cfg) for c, cfg in plan.items()}
        finetune_stage.merge_predictions(stage, plan)
        finetune_stage.finish(stage, plan, summaries, aligned=aligned)
        out.update(total_s=time.perf_counter() - t0, config={k: v for k, v in block.items()},
                   conditions={c: {k: s.get(k) for k in ("steps", "n_train_examples", "train_seconds", "predict_seconds",
                                                          "n_predictions", "seconds", "final_loss")}
                               for c, s in summaries.items()})
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def step_flops(model, tokens: float, loss_positions: float) -> float:
    """Matmul FLOPs of training steps over `tokens` (forward + backward to the inputs through the frozen LLM)."""
    table = model.llm.get_input_embeddings().weight
    n = sum(p.numel() for p in model.llm.parameters() if p.data_ptr() != table.data_ptr())
    head = model.llm.get_output_embeddings().weight
    return 4 * n * tokens + 4 * head.shape[0] * head.shape[1] * loss_positions * (head.data_ptr() == table.data_ptr())


def gemm_flops_per_s(tokens: int, hidden: int, inner: int, dtype=None, repeats: int = 20) -> float:
    """Matmul rate at one of the LLM's MLP shapes, in `dtype` (float32 by default; the best of `repeats`)."""
    import torch

    dtype = dtype or torch.float32
    a, b = torch.randn(tokens, hidden, dtype=dtype), torch.randn(hidden, inner, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * tokens * hidden * inner / best


def cfg_shape(part: dict) -> str:
    return part.get("shape", "hidden @ hidden x intermediate")


def run_part(part: str, run: Path, threads: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", part, "--run", str(run), "--threads", str(threads)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{part} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the profiles use 1)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--run", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, Path(args.run), args.threads)))
        return
    from paraqa_utils import assets
    from paraqa_utils.testing.fake_stages import make_fake_merge

    assets.resolve_model("whisper", "")  # convert once before timing anything
    assets.resolve_model("llm", "")
    with tempfile.TemporaryDirectory() as tmp:
        small, demo = Path(tmp) / "small", Path(tmp) / "demo"
        make_fake_merge(small, n_train_clips=8, n_test_clips=4)
        r = run_part("rates", small, args.threads)
        loras = {dt: run_part(f"lora_{dt}", small, args.threads) for dt in ("float32", "auto")}
        on, off = r["cache_on"], r["cache_off"]
        print(f"torch threads: {args.threads}   embedded default: Whisper base encoder + SmolLM2-135M-Instruct, CPU; "
              f"part 1 in {r['dtype']}")
        print(f"model load: {r['load_s']:.1f} s   encoder: {r['encoder_s_per_clip']:.2f} s per clip "
              f"({r['n_clips']} clips of ~2-4 s, unpadded), {r['encoder_s_per_30s_window']:.2f} s per 30 s window "
              f"(x{r['encoder_s_per_30s_window'] / r['encoder_s_per_clip']:.1f}: what padding to 30 s would cost)")
        print("training, adapter only, batch 4, 6 steps:")
        print(f"  encoder cache warm : {on['seconds_per_step']:.2f} s/step  {on['examples_per_s']:.2f} examples/s")
        print(f"  no encoder cache   : {off['seconds_per_step']:.2f} s/step  {off['examples_per_s']:.2f} examples/s")
        print(f"  speed-up from the cache: x{off['seconds_per_step'] / on['seconds_per_step']:.2f}")
        print("training, adapter + LoRA at the demo's shapes (batch 8, r=8 q/k/v/o, no dropout, empty system turn, "
              "transcript read-out), cache warm, 6 steps:")
        for name, part in loras.items():
            c = part["cache_on"]
            ratio = part["matmul_flops_per_s"] / part["gemm_flops_per_s"]
            print(f"  {name:7s} -> {part['dtype']:8s}: {c['seconds_per_step']:.2f} s/step  {c['examples_per_s']:.2f} "
                  f"examples/s  {c['tokens_per_s']:.0f} tokens/s  = {part['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s of "
                  f"matmuls; {part['dtype']} GEMM at {part['tokens_per_step']} x {cfg_shape(part)} here: "
                  f"{part['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s; matmul ratio {ratio:.2f}; peak RSS "
                  f"{part['peak_rss_mib']:.0f} MiB")
        f32, auto = loras["float32"], loras["auto"]
        for name, part in loras.items():
            old = 4 * part["n_llm_params"] * part["cache_on"]["tokens_per_s"] / part["gemm_f32_flops_per_s"]
            print(f"  {name:7s}: ratio as earlier versions counted it (4 x all {part['n_llm_params'] / 1e6:.0f} M LLM "
                  f"params x tokens/s against the float32 GEMM): {old:.2f}")
        print(f"  {auto['dtype']} against float32: x{f32['cache_on']['seconds_per_step'] / auto['cache_on']['seconds_per_step']:.2f} "
              f"per step; its matmuls against the float32 GEMM: ratio "
              f"{auto['matmul_flops_per_s'] / f32['gemm_flops_per_s']:.2f}")
        print("prediction (batch 8, <= 16 new tokens): " + ", ".join(
            f"{p['cache_on']['predict_seconds'] / p['cache_on']['n_predictions']:.2f} s per item ({p['dtype']})"
            for p in loras.values()))
        print(f"peak RSS: adapter {r['peak_rss_mib']:.0f} MiB")
        if not args.skip_demo:
            make_fake_merge(demo, n_train_clips=24, n_test_clips=6)
            t0 = time.perf_counter()
            d = run_part("demo", demo, args.threads)
            print(f"demo size ({d['config']}):")
            for c, s in d["conditions"].items():
                print(f"  {c:18s} train {s['train_seconds'] or 0:6.1f} s  predict {s['predict_seconds'] or 0:6.1f} s "
                      f"({s['n_predictions']} items)  total {s['seconds']:6.1f} s  final loss {s['final_loss']}")
            print(f"  the aligned base: built in {d['base_built_s']:.0f} s" if d["base_built_s"] else
                  "  the aligned base: reused from the machine's cache")
            print(f"  all conditions: {d['total_s']:.0f} s in the stage ({time.perf_counter() - t0:.0f} s with process "
                  f"start), peak RSS {d['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
