"""GPU check for 04_finetune at the paper's shapes: training throughput, model FLOPs utilisation, peak memory.

    .venv/bin/python bench/gpu_check.py                 # on a GPU: Whisper large-v3 encoder + Gemma-2-9B shapes
    .venv/bin/python bench/gpu_check.py --tiny          # anywhere (CPU too): tiny configs, proves the script runs
    .venv/bin/python bench/gpu_check.py --pipeline      # also run_condition() itself (train + predict) on the device
    .venv/bin/python bench/gpu_check.py --speech-llm qwen2-audio-7b   # a released audio-LLM's shapes (or
                                                          # meralion-2-10b): LoRA (+ --train-projector) through 04's parts

On a machine without our environment (a lent GPU box with its own torch, no registry): bench/gpu_wheels.sh
fetches the few wheels to carry and gives the one command to run there.

--pipeline runs the stage's real entry point, finetune.run_condition, with tiny random models on a fake 03
stage (espeak-ng clips, or tones without espeak-ng): bf16 autocast, LoRA, checkpoint, greedy generation.

Weights are random, built from configs (no hub access): the shapes, not the values, set the cost. One training
step = frozen encoder forward on 30 s of audio per sample (no encoder cache), adapter (stack 15 -> MLP) + LoRA on
the LLM trained in float32 master weights under bf16 autocast, ~100 audio + ~200 text positions per sample,
loss on the last 50 (answer) positions, AdamW. Batch sizes 1/4/8 by default.

Model FLOPs per step (what MFU counts: matmuls and convolutions, nothing recomputed, 2 FLOPs per multiply-add):
  encoder forward 2*N_enc*T_enc (its first convolution runs at the mel rate, 2*T_enc) + attention 4*L*T^2*d;
  LLM forward 2*N*T + attention; LLM backward to its inputs only (its weights are frozen) 2*N*T + 2x attention
  (gradients reach Q, K and V); LM head (forward and backward) on the answer positions only; adapter 6*N*T, less
  its first layer's input gradient, which nothing needs; LoRA 6*N*T.
  tests/unit/test_gpu_check.py checks this count against torch's FlopCounterMode on the tiny shapes.
  MFU = model FLOPs / (step time * peak bf16 dense FLOP/s of the GPU).
Released audio-LLMs (--speech-llm, shapes in paraqa_utils/testing/released_shapes.py) are built the way 04 takes them
apart (finetune/released.py): the frozen audio encoder on 30 s (Qwen2-Audio: 750 audio tokens per clip;
MERaLiON: 100), the projector (frozen, or trained with --train-projector), LoRA on q/k/v/o of the language model.
Their model FLOPs are counted by torch's FlopCounterMode on one step rather than by the formula above.
Writes gpu_check.json into $OUT (or --json) as well as printing a table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils.finetune import speech_llm  # noqa: E402
from paraqa_utils.finetune.speech_data import Encoded, collate  # noqa: E402

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.5, "H100": 989.4, "A100": 312.0,
                    "L40S": 362.1, "A10": 125.0}


def configs(tiny: bool, encoder_attn: str = "sdpa"):
    from transformers import Gemma2Config, WhisperConfig

    if tiny:
        enc = WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
                            num_mel_bins=128, max_source_positions=1500, decoder_layers=1, decoder_attention_heads=2,
                            vocab_size=64, pad_token_id=1, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2)
        llm = Gemma2Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                           sliding_window=256, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    else:
        # openai/whisper-large-v3 encoder and google/gemma-2-9b-it, as published in their config.json files
        enc = WhisperConfig(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                            num_mel_bins=128, max_source_positions=1500, decoder_layers=1, decoder_attention_heads=20,
                            vocab_size=51866, pad_token_id=50256, bos_token_id=50257, eos_token_id=50257,
                            decoder_start_token_id=50258)
        llm = Gemma2Config(vocab_size=256000, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                           num_attention_heads=16, num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
                           sliding_window=4096, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
                           max_position_embeddings=8192, hidden_activation="gelu_pytorch_tanh",
                           pad_token_id=0, bos_token_id=2, eos_token_id=1)
    llm._attn_implementation = "eager"  # what HF recommends for training Gemma-2 (attention soft-capping)
    enc._attn_implementation = encoder_attn
    return enc, llm


def build(tiny: bool, device: torch.device, dtype: torch.dtype, lora_r: int, grad_ckpt: bool,
          encoder_attn: str = "sdpa"):
    from transformers import Gemma2ForCausalLM, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    enc_cfg, llm_cfg = configs(tiny, encoder_attn)
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)  # build the 9B LLM directly in bf16 on the GPU: no 37 GB float32 detour
    with torch.device(device):
        encoder, llm = WhisperEncoder(enc_cfg), Gemma2ForCausalLM(llm_cfg)
    torch.set_default_dtype(torch.float32)
    llm.requires_grad_(False)
    llm = speech_llm.apply_lora(llm, lora_r, 2 * lora_r, 0.05, ["q_proj", "k_proj", "v_proj", "o_proj"])
    if grad_ckpt:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    audio = speech_llm.AudioEncoder(encoder, WhisperFeatureExtractor(feature_size=enc_cfg.num_mel_bins), 15, "random")
    model = speech_llm.SpeechLLM(audio, llm, None, 15).to(device)
    for p in model.parameters():  # LoRA + adapter keep float32 master weights; the frozen rest is bf16
        if p.requires_grad:
            p.data = p.data.float()
    return model, enc_cfg, llm_cfg


def build_released(name: str, tiny: bool, device: torch.device, dtype: torch.dtype, lora_r: int, grad_ckpt: bool,
                   train_projector: bool):
    """A released audio-LLM of published shapes with random weights, as 04's SpeechLLM (released.assemble)."""
    import tempfile

    import transformers
    from transformers import AutoConfig, AutoModel, WhisperFeatureExtractor

    from paraqa_utils.finetune import released
    from paraqa_utils.testing.released_shapes import save_shape_config

    folder = save_shape_config(name, Path(tempfile.mkdtemp(prefix="gpu_check_shapes_")), tiny)
    conf = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    arch = conf.architectures[0]
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    with torch.device(device):
        cls = getattr(transformers, arch, None)
        hf = cls._from_config(conf) if cls is not None else AutoModel.from_config(conf, trust_remote_code=True)
    torch.set_default_dtype(torch.float32)
    audio_conf = getattr(conf, "audio_config", None) or conf.speech_config
    fe = WhisperFeatureExtractor(feature_size=audio_conf.num_mel_bins)
    model = released.assemble(hf, arch, fe, None, f"shapes:{name}", "adapter+lora" if train_projector else "lora",
                              lora_r, 2 * lora_r, 0.05, ["q_proj", "k_proj", "v_proj", "o_proj"], 0, grad_ckpt)
    for p in model.parameters():  # LoRA (+ projector) keep float32 master weights; the frozen rest is bf16
        if p.requires_grad:
            p.data = p.data.float()
    return model, conf.get_text_config()


def counted_flops(model, tensors, waves) -> float:
    """Model FLOPs of one training step, counted by torch (encoder forward, LLM forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(tensors["input_ids"].device.type, dtype=torch.bfloat16,
                                 enabled=tensors["input_ids"].is_cuda):
        states = model.audio_encoder.encode_many(waves)
        loss, n = model(audio_states=states, **tensors)
        (loss / n).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def n_params(module: torch.nn.Module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def model_flops(model, enc_cfg, llm_cfg, bs: int, t_text: int, n_audio: int, n_answer: int) -> float:
    """Model FLOPs of one training step (see the module docstring)."""
    encoder = model.audio_encoder.encoder
    t_enc = n_audio * model.adapter.stack_k
    n_enc = n_params(encoder) - encoder.embed_positions.weight.numel()
    enc = 2 * (n_enc + n_params(encoder.conv1)) * t_enc + 4 * enc_cfg.encoder_layers * t_enc ** 2 * enc_cfg.d_model
    t = t_text + n_audio
    emb = llm_cfg.vocab_size * llm_cfg.hidden_size
    base = n_params(model.llm, trainable=False) - emb  # decoder matmuls (embedding lookup is not a matmul)
    attn = 4 * llm_cfg.num_hidden_layers * t ** 2 * llm_cfg.num_attention_heads * llm_cfg.head_dim
    head = 2 * emb * (n_answer + 1)  # logits from the position before the first answer token on
    llm = (2 * base * t + attn + head) + (2 * base * t + 2 * attn + head)  # forward + backward to the inputs
    first, second = model.adapter.proj[0], model.adapter.proj[2]
    adapter = (4 * n_params(first) + 6 * n_params(second)) * n_audio
    lora = 6 * (n_params(model, True) - n_params(model.adapter)) * t
    return bs * (enc + llm + adapter + lora)


def batch(bs: int, vocab: int, n_audio: int, t_text: int, n_answer: int, device: torch.device,
          n_samples: int = 0):
    """Random token ids with an audio span of n_audio, and waves of n_samples (default: n_audio stacked chunks)."""
    g = torch.Generator().manual_seed(bs)
    samples = []
    n_pre = 20
    for i in range(bs):
        ids = torch.randint(3, vocab, (t_text + n_audio,), generator=g).tolist()
        labels = [-100] * (len(ids) - n_answer) + ids[-n_answer:]
        samples.append(Encoded(f"s{i}", Path("-"), "-", ids, labels, n_pre, n_audio, ""))
    t = {k: v.to(device) for k, v in collate(samples, 0).items()}
    waves = [torch.randn(n_samples or n_audio * 15 * 320, generator=g).numpy() * 0.1 for _ in range(bs)]
    return t, waves


def pipeline_check(device: torch.device, out_dir: Path) -> dict:
    """finetune.run_condition end to end on this device (tiny models): the code path the stage runs."""
    import shutil
    import tempfile

    from paraqa_utils import finetune
    from paraqa_utils.testing.fake_stages import make_fake_merge
    from paraqa_utils.testing.tiny_models import save_tiny_models

    run = Path(tempfile.mkdtemp(prefix="gpu_check_run_"))
    whisper_dir, llm_dir = (str(p) for p in save_tiny_models(run / "tiny_models"))
    make_fake_merge(run, n_train_clips=4, n_test_clips=2, tts=shutil.which("espeak-ng") is not None)
    d = run / "03_explicit_merge"
    cfg = finetune.make_config(
        condition="implicit_explicit", train_file=str(d / "train_implicit_explicit.jsonl"), explicit=True,
        test_files={s: str(d / f"test_{s}.jsonl") for s in ("cpqa_ref", "emotion")}, run_dir=str(run),
        out_dir=str(out_dir), whisper_model=whisper_dir, llm_model=llm_dir, train_mode="adapter+lora", n_steps=4, batch_size=2,
        grad_accum=2, max_new_tokens=4, device=device.type, save_every_steps=2, progress=False)
    s = finetune.run_condition(cfg)
    ok = s["steps"] == 4 and s["final_loss"] is not None and s["n_predictions"] == 6
    return {"ok": ok, **{k: s.get(k) for k in ("device", "dtype", "steps", "final_loss", "n_predictions",
                                               "seconds_per_step", "encoder_cache_hit_rate")}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny configs (runs on CPU in seconds)")
    ap.add_argument("--batch-sizes", default="1,4,8")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per batch size")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--audio-tokens", type=int, default=100, help="adapter outputs per sample (100 = 30 s)")
    ap.add_argument("--text-tokens", type=int, default=200)
    ap.add_argument("--answer-tokens", type=int, default=50)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing in the LLM")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="peak bf16 dense TFLOP/s (0: from the GPU name)")
    ap.add_argument("--pipeline", action="store_true", help="also run finetune.run_condition on the device")
    ap.add_argument("--json", default="", help="where to write the results (default $OUT/gpu_check.json)")
    ap.add_argument("--speech-llm", default="", help="a released audio-LLM's shapes: qwen2-audio-7b or meralion-2-10b")
    ap.add_argument("--train-projector", action="store_true", help="with --speech-llm: train its projector too")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("no GPU: run with --tiny to check the script on CPU")
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), 0.0)
    t0 = time.perf_counter()
    if args.speech_llm:
        model, llm_cfg = build_released(args.speech_llm, args.tiny, device, dtype, args.lora_r, args.grad_ckpt,
                                        args.train_projector)
        enc_cfg = None
        args.audio_tokens = model.audio_encoder.n_tokens(30 * 16000)  # a 30 s clip, as the processor counts it
    else:
        model, enc_cfg, llm_cfg = build(args.tiny, device, dtype, args.lora_r, args.grad_ckpt)
    print(f"device: {name}  build: {time.perf_counter() - t0:.1f} s  params: encoder {n_params(model.audio_encoder) / 1e9:.3f} B, "
          f"LLM {n_params(model.llm) / 1e9:.3f} B, trainable {n_params(model, True) / 1e6:.1f} M "
          f"(adapter {n_params(model.adapter) / 1e6:.1f} M)")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    results = {"device": name, "tiny": args.tiny, "speech_llm": args.speech_llm or "own", "dtype": str(dtype), "peak_bf16_tflops": peak,
               "grad_ckpt": args.grad_ckpt, "lora_r": args.lora_r, "audio_tokens": args.audio_tokens,
               "text_tokens": args.text_tokens, "answer_tokens": args.answer_tokens, "rows": []}
    t_text = args.text_tokens
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        row = {"batch_size": bs}
        tensors, waves = batch(bs, llm_cfg.vocab_size, args.audio_tokens, t_text, args.answer_tokens, device,
                               30 * 16000 if args.speech_llm else 0)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            times, enc_times = [], []
            for i in range(args.warmup + args.steps):
                if cuda:
                    torch.cuda.synchronize()
                s0 = time.perf_counter()
                states = model.audio_encoder.encode_many(waves)
                if cuda:
                    torch.cuda.synchronize()
                s1 = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    loss, n = model(audio_states=states, **tensors)
                (loss / n).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.synchronize()
                if i >= args.warmup:
                    times.append(time.perf_counter() - s0)
                    enc_times.append(s1 - s0)
            step = sorted(times)[len(times) // 2]
            flops = (counted_flops(model, tensors, waves) if args.speech_llm else
                     model_flops(model, enc_cfg, llm_cfg, bs, t_text, args.audio_tokens, args.answer_tokens))
            row.update(step_s=round(step, 4), examples_per_s=round(bs / step, 3),
                       tokens_per_s=round(bs * (t_text + args.audio_tokens) / step, 1),
                       encoder_share=round(sorted(enc_times)[len(enc_times) // 2] / step, 3),
                       model_tflops_per_step=round(flops / 1e12, 3), achieved_tflops=round(flops / step / 1e12, 2),
                       mfu=round(flops / step / 1e12 / peak, 4) if peak else None,
                       peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                       final_loss=round(float(loss.detach() / n), 4))
        except torch.OutOfMemoryError as exc:
            row.update(error=f"OOM: {str(exc)[:200]}")
        results["rows"].append(row)
        print(json.dumps(row))
    out = Path(args.json) if args.json else Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    if args.pipeline:
        del model, opt
        if cuda:
            torch.cuda.empty_cache()
        results["pipeline"] = pipeline_check(device, out.parent / "gpu_check_pipeline")
        print("pipeline:", json.dumps(results["pipeline"]))
    out.write_text(json.dumps(results, indent=2))
    print(f"{'bs':>3} {'step s':>8} {'ex/s':>7} {'tok/s':>9} {'MFU':>6} {'peak GiB':>9} {'enc share':>9}")
    for r in results["rows"]:
        if "error" in r:
            print(f"{r['batch_size']:>3} {r['error']}")
        else:
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
            print(f"{r['batch_size']:>3} {r['step_s']:>8.3f} {r['examples_per_s']:>7.2f} {r['tokens_per_s']:>9.0f} "
                  f"{mfu:>6} {str(r['peak_mem_gib']):>9} {r['encoder_share']:>9.2f}")
    print(f"wrote {out}")
    return 0 if results.get("pipeline", {"ok": True})["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
