"""Stage 04: train the Speech-LLM for one condition and answer every test set (`python -m paraqa_utils.finetune`)."""
from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from paraqa_utils import runs
from paraqa_utils.finetune import base_store, distributed, readout
from paraqa_utils.finetune import speech_llm
from paraqa_utils.finetune.model import READOUT_CLASSES, READOUT_WEIGHTS, load_base, prepare_readouts, setup
from paraqa_utils.finetune import training, zero
from paraqa_utils.finetune.config import ConfigError, FinetuneConfig, load_config, save_config
from paraqa_utils.finetune.speech_data import EncoderCache, collate, encode_records, prompt_format

USAGE = """Train one condition and answer every test set; the notebook calls run_condition() with the same config.

  python -m paraqa_utils.finetune --config outputs/runs/<run>/04_finetune/baseline/config.yaml
  python -m paraqa_utils.finetune --config F --set n_steps=100 --set train_mode=adapter+lora
  torchrun --nproc-per-node 8 -m paraqa_utils.finetune --config F     # DDP; add --set fsdp=true to shard the LLM
  accelerate launch -m paraqa_utils.finetune --config F

Under FSDP, predict afterwards in one process: --set resume=true --set n_steps=<same> loads the final checkpoint.
"""


def fingerprint(cfg: FinetuneConfig, model: speech_llm.SpeechLLM) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: condition, models, trainable shapes and training data."""
    # n_steps is left out on purpose: a finished run may be extended by raising it
    same = ("batch_size", "grad_accum", "seed", "lr", "schedule", "warmup_ratio", "weight_decay", "max_seq_len",
            "max_train_examples", "group_by_length", "system_prompt")
    return {"condition": cfg.condition, "speech_llm": cfg.speech_llm,
            "whisper_model": model.audio_encoder.model_id, "llm_model": model.llm_id,
            "train_mode": cfg.train_mode, "stack_k": cfg.stack_k, "adapter_hidden": cfg.adapter_hidden,
            "dtype": str(next(model.llm.parameters()).dtype).replace("torch.", ""),
            "lora": [cfg.lora_r, cfg.lora_alpha, cfg.target_modules()] if cfg.train_mode != "adapter" else None,
            "train_file_sha256": runs.sha256_file(Path(cfg.train_file)) if cfg.train_file else None,
            "readouts": cfg.readouts, "base": base_store.read_manifest(Path(cfg.base_path)).get("key") if cfg.base_path else None,
            **{k: getattr(cfg, k) for k in same}}


def save_weights(model: speech_llm.SpeechLLM, cond_dir: Path, info: distributed.DistInfo, sharded: bool) -> None:
    """adapter.safetensors (+ lora/ in peft's own format, loadable with PeftModel.from_pretrained).

    Every process calls it (gathering FSDP shards is collective); under FSDP the LoRA weights are in the
    checkpoint's trainable.pt instead of lora/. A released checkpoint's projector is saved (under its own names)
    only when it was trained; its lora/ is peft's format on the whole released model.
    """
    from safetensors.torch import save_file

    trained = model.released is None or any(p.requires_grad for p in model.adapter.parameters())
    own = model.adapter if model.released is None else model.adapter.module  # a projector under its own names
    adapter = {k: distributed.full_tensor(v).detach().cpu().contiguous()
               for k, v in own.state_dict().items()} if trained else {}
    if not info.main:
        return
    if trained:
        save_file(adapter, str(cond_dir / "adapter.safetensors"))
    if model.released is not None:
        from paraqa_utils.finetune import released

        if not sharded:
            released.save_lora(model, cond_dir / "lora")
        return
    if model.label_readout is not None:  # the folder stays self-contained: paraqa: evaluation needs no base cache
        save_file({k: v.detach().cpu().contiguous() for k, v in model.label_readout.state_dict().items()},
                  str(cond_dir / READOUT_WEIGHTS))
        runs.write_json(cond_dir / READOUT_CLASSES, {"label_classes": model.label_readout.facets})
    if hasattr(model.llm, "peft_config") and not sharded:
        model.llm.save_pretrained(str(cond_dir / "lora"))


def predict(model: speech_llm.SpeechLLM, cache: EncoderCache, cfg: FinetuneConfig, device: torch.device,
            counts: dict[str, Any], info: distributed.DistInfo = distributed.DistInfo(),
            reads: readout.Readouts | None = None) -> list[dict[str, Any]]:
    """Greedy answers to the test items (this process's share of them), batched by test set and prompt length."""
    from paraqa_utils.progress import tqdm

    fmt = prompt_format(model, cfg)
    stop, pad = fmt.stop_ids(), model.tokenizer.pad_token_id
    samples = []
    for name, path in sorted(cfg.test_files.items()):
        items = list(runs.read_jsonl(Path(path)))
        items = items[:cfg.max_test_items] if cfg.max_test_items else items
        if reads is not None:
            prepare_readouts(reads, cache, items, Path(cfg.run_dir))
        samples += encode_records(items, fmt, Path(cfg.run_dir), cfg.stack_k, cfg.explicit, False, counts, reads)
    # one test set per batch where possible (answers of a set have similar lengths: a batch of one-word answers
    # stops at EOS early instead of decoding as long as a transcript), shortest prompts together within a set
    samples = sorted(samples, key=lambda s: (s.meta["test_set"], len(s.input_ids)))[info.rank::info.world]
    model.eval()
    out = []
    batches = [samples[i:i + cfg.predict_batch_size] for i in range(0, len(samples), cfg.predict_batch_size)]
    for batch in tqdm(batches, desc=f"predict {cfg.condition}", disable=not cfg.progress):
        states = cache.get(batch)
        t = {k: v.to(device) for k, v in collate(batch, pad, pad_left=True).items()}
        t0 = time.perf_counter()
        new = model.generate(t["input_ids"], t["attention_mask"], t["audio_mask"], states, cfg.max_new_tokens, stop, pad)
        seconds = (time.perf_counter() - t0) / len(batch)  # a batch decodes together: its time is shared equally
        for s, row in zip(batch, new.tolist()):
            ends = [i for i, tok in enumerate(row) if tok in stop]
            tokens = row[:ends[0]] if ends else row
            heard = reads.transcript(s.audio_key) if reads is not None else None
            out.append({"item_id": s.uid, "condition": cfg.condition, "test_set": s.meta["test_set"],
                        "question_type": s.meta["question_type"], "prompt": s.prompt,
                        **({"transcript_readout": heard} if heard is not None else {}),
                        "answer": model.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                        "n_tokens": len(tokens), "seconds": round(seconds, 4)})
    return out


def finished_summary(cfg: FinetuneConfig) -> dict[str, Any] | None:
    """The condition's summary.json when it finished earlier with this very config and training data (a resumed
    pipeline run skips it), else None."""
    done = Path(cfg.out_dir) / cfg.condition / "summary.json"
    if not (cfg.resume and done.exists()):
        return None
    old = runs.read_json(done)
    data_sha = runs.sha256_file(Path(cfg.train_file)) if cfg.train_file else None
    same = old.get("config") == cfg.to_dict() and old.get("train_file_sha256") == data_sha
    return old if same and "predictions_skipped" not in old else None


def run_condition(cfg: FinetuneConfig) -> dict[str, Any]:
    """Train one condition (unless train_file is empty), save its weights and config, predict every test set.

    Writes <out_dir>/<condition>/{adapter.safetensors, lora/, config.yaml, train_log.jsonl, predictions.jsonl,
    summary.json}; checkpoints and the encoder cache go to <out_dir>/_cache/. Returns the summary.
    """
    info = distributed.init()
    cond_dir = Path(cfg.out_dir) / cfg.condition
    cond_dir.mkdir(parents=True, exist_ok=True)
    done = cond_dir / "summary.json"
    data_sha = runs.sha256_file(Path(cfg.train_file)) if cfg.train_file else None
    if info.world == 1 and (old := finished_summary(cfg)) is not None:
        return old
    t0 = time.perf_counter()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    model, cache, reads, device = setup(cfg, info)
    dtype = next(model.llm.parameters()).dtype
    counts: dict[str, Any] = {}
    started = load_base(model, cfg, cache, reads) if cfg.base_path else None
    summary: dict[str, Any] = {"condition": cfg.condition, "explicit": cfg.explicit, "train_mode": cfg.train_mode,
                               "speech_llm": cfg.speech_llm, "whisper_model": model.audio_encoder.model_id,
                               "llm_model": model.llm_id,
                               **({"released": model.released.describe()} if model.released is not None else {}),
                               "device": str(device), "dtype": str(dtype).replace("torch.", ""), "world_size": info.world,
                               "train_file_sha256": data_sha, "readouts": cfg.readouts, "base": started,
                               "n_trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    save_config(cfg, cond_dir / "config.yaml")
    if cfg.train_file:
        records = list(runs.read_jsonl(Path(cfg.train_file)))
        if cfg.max_train_examples and len(records) > cfg.max_train_examples:
            # a seeded subset keeps the task mixture; the first N could be a single task
            records = random.Random(cfg.seed).sample(records, cfg.max_train_examples)
        fmt = prompt_format(model, cfg)
        prepare_readouts(reads, cache, records, Path(cfg.run_dir))
        samples = encode_records(records, fmt, Path(cfg.run_dir), cfg.stack_k, cfg.explicit, True, counts, reads)
        train_counts = {f"train_{k}": v for k, v in counts.items()}
        counts.clear()
        if not samples:
            raise training.TrainingError(f"{cfg.condition}: none of the {len(records)} training examples is usable "
                                         f"({train_counts})")
        settings = training.TrainSettings(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(training.TrainSettings)})
        ds = (zero.fill(zero.read(cfg.deepspeed_config), cfg.batch_size, cfg.grad_accum, info.world,
                        cfg.max_grad_norm, dtype == torch.bfloat16) if cfg.deepspeed_config else None)
        wrapped = model if ds else distributed.wrap(model, info, device, cfg.fsdp)  # the engine wraps it itself
        autocast = torch.bfloat16 if dtype == torch.bfloat16 and device.type == "cuda" and not ds else None
        if ds:
            summary["deepspeed"] = {**zero.describe(ds), "config": cfg.deepspeed_config,
                                    "zero_optimization": ds.get("zero_optimization") or {}}
        summary.update(train_counts, n_train_examples=len(samples), **training.train(
            model, samples, cache, settings, Path(cfg.out_dir) / "_cache" / "checkpoints" / cfg.condition,
            cond_dir / "train_log.jsonl", fingerprint(cfg, model), cfg.to_dict(), device, autocast,
            wrapped if wrapped is not model else None, info, cfg.fsdp and info.world > 1, cfg.progress, ds))
        summary["train_cache"] = cache.stats()
    else:
        summary.update(n_train_examples=0, steps=0)
    sharded = (cfg.fsdp or zero.stage_of(summary.get("deepspeed")) == 3) and info.world > 1
    if sharded:
        summary["predictions_skipped"] = "sharded weights (FSDP / ZeRO-3): predict in one process with the saved weights"
    elif cfg.test_files:
        preds = predict(model, cache, cfg, device, counts, info, reads)
        # under DDP every process answers its share, so no process idles into a collective timeout
        part = f"predictions.rank{info.rank}.jsonl" if info.world > 1 else "predictions.jsonl"
        runs.write_jsonl(cond_dir / part, preds)
        distributed.barrier(info)
        if info.world > 1 and info.main:
            parts = [cond_dir / f"predictions.rank{r}.jsonl" for r in range(info.world)]
            preds = [row for p in parts for row in runs.read_jsonl(p)]
            runs.write_jsonl(cond_dir / "predictions.jsonl", preds)
            for p in parts:
                p.unlink()
        summary.update({f"test_{k}": v for k, v in counts.items()}, n_predictions=len(preds),
                       predict_seconds=round(sum(p["seconds"] for p in preds), 3))
    with zero.gathered(model):
        save_weights(model, cond_dir, info, sharded)
    if info.main:
        summary.update(cache.stats(), seconds=round(time.perf_counter() - t0, 3), config=cfg.to_dict())
        runs.write_json(done, summary)
    distributed.barrier(info)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="YAML with FinetuneConfig keys (e.g. a saved config.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key (YAML value)")
    args = ap.parse_args(argv)
    import yaml

    try:
        cfg = load_config(args.config, args.set)
    except (OSError, yaml.YAMLError, ConfigError) as exc:
        print(f"paraqa_utils.finetune: {exc}", file=sys.stderr)
        return 2
    summary = run_condition(cfg)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    print({k: v for k, v in summary.items() if k != "config"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
