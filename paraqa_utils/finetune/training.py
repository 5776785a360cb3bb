"""The training loop of 04_finetune: schedules, gradient accumulation, checkpoints with resume, failure messages."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from paraqa_utils import runs
from paraqa_utils.finetune import distributed, zero
from paraqa_utils.finetune.distributed import DistInfo
from paraqa_utils.finetune.speech_data import Encoded, EncoderCache, collate, length_grouped_batches, n_steps_per_epoch

SCHEDULES = ("cosine", "linear", "constant")


class TrainingError(RuntimeError):
    """Training stopped on bad input or settings; the message says where and what to change."""


class NonFiniteLoss(TrainingError):
    """The loss became NaN or infinite."""


class OutOfMemory(TrainingError):
    """A batch did not fit in memory."""


class ResumeRefused(TrainingError):
    """A checkpoint belongs to another condition, model or training file."""


@dataclass
class TrainSettings:
    """The optimisation knobs (a view of FinetuneConfig, so this module does not depend on it)."""
    n_steps: int
    n_epochs: float
    batch_size: int
    grad_accum: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    schedule: str
    max_grad_norm: float
    seed: int
    group_by_length: bool
    save_every_steps: int
    resume: bool
    resume_from: str


def lr_factor(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up to the peak, then cosine or linear decay to zero (or constant)."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress)
    return f


def total_steps(settings: TrainSettings, n_samples: int, world: int = 1) -> int:
    """n_steps when set, else enough optimizer steps for n_epochs passes over the data (split across processes)."""
    if settings.n_steps > 0:
        return settings.n_steps
    per_epoch = n_steps_per_epoch(math.ceil(n_samples / world), settings.batch_size, settings.grad_accum)
    return max(1, math.ceil(settings.n_epochs * per_epoch))


def micro_batches(samples: Sequence[Encoded], settings: TrainSettings, rank: int = 0,
                  world: int = 1) -> Iterator[tuple[int, list[int]]]:
    """Endless (epoch, sample indices) stream, reproducible from the seed, so resume can skip what was done."""
    lengths = [len(s.input_ids) for s in samples]
    epoch = 0
    while True:
        for b in length_grouped_batches(lengths, settings.batch_size, settings.seed, epoch,
                                        settings.group_by_length)[rank::world]:
            yield epoch, b
        epoch += 1


# ------------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, step: int,
                    fingerprint: dict[str, Any], config: dict[str, Any], info: DistInfo = DistInfo(),
                    sharded_optimizer: bool = False, engine: Any = None) -> None:
    """Trainable weights, optimizer and RNG state, written to a temp folder then renamed (a kill keeps the old one).

    Every rank must call it (gathering FSDP shards is collective); rank 0 writes, except that FSDP's optimizer
    state is sharded and each rank writes its own part; a DeepSpeed `engine` writes its partitions into zero/.
    """
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    with zero.gathered(model):  # ZeRO-3's partitions, whole (FSDP's are gathered by full_tensor)
        weights = {n: distributed.full_tensor(p).detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    if info.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    distributed.barrier(info)
    if engine is not None:
        zero.save_state(engine, tmp / "zero")
    if info.main or sharded_optimizer:
        name = f"optimizer.rank{info.rank}.pt" if sharded_optimizer else "optimizer.pt"
        torch.save({"optimizer": optimizer.state_dict() if engine is None else None,
                    "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / name)
    distributed.barrier(info)
    if info.main:
        torch.save(weights, tmp / "trainable.pt")
        runs.write_json(tmp / "state.json", {"step": step, "fingerprint": fingerprint, "config": config,
                                             "world_size": info.world, "saved_utc": runs.utc_now()})
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    distributed.barrier(info)


def check_fingerprint(state: dict[str, Any], fingerprint: dict[str, Any], where: Path) -> None:
    """Refuse a checkpoint whose condition, models, trainable shapes or training data differ from this run's."""
    theirs = state.get("fingerprint", {})
    diffs = [f"{k}: checkpoint has {theirs.get(k)!r}, this run {v!r}" for k, v in fingerprint.items() if theirs.get(k) != v]
    if diffs:
        raise ResumeRefused(f"refusing to resume from {where}: it was made for another run:\n  " + "\n  ".join(diffs)
                            + "\nstart fresh (resume=False) or point resume_from at a checkpoint of this condition")


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    fingerprint: dict[str, Any], info: DistInfo = DistInfo(), sharded_optimizer: bool = False,
                    total: int | None = None, engine: Any = None) -> int:
    """Restore a checkpoint after checking its fingerprint; returns the optimizer steps already done.

    A checkpoint at or beyond `total` steps only restores the weights: nothing is left to train, so e.g. an FSDP
    run's weights can be loaded by a single process to predict.
    """
    folder = Path(folder)
    state = runs.read_json(folder / "state.json")
    check_fingerprint(state, fingerprint, folder)
    finished = total is not None and int(state["step"]) >= total
    if not finished and state.get("world_size", 1) != info.world:
        # each rank reads its own slice of the data order (and, under FSDP, its own optimizer shard): another
        # world size would train on other examples than the ones the checkpoint's steps skipped
        raise ResumeRefused(f"{folder} was saved by {state.get('world_size', 1)} process(es), this run has "
                            f"{info.world}: resume with n_processes={state.get('world_size', 1)}, or start fresh "
                            "(resume=False)" + (" (its optimizer is sharded per process)" if sharded_optimizer else ""))
    weights = torch.load(folder / "trainable.pt")
    params = dict(model.named_parameters())
    missing = sorted(set(n for n, p in params.items() if p.requires_grad) - set(weights))
    if missing:
        raise ResumeRefused(f"{folder} lacks trainable weights {missing[:5]}: it was made for another setup")
    if engine is not None:  # the engine restores its own weights (partitioned under ZeRO-3) and optimizer
        zero.load_state(engine, folder / "zero")
    for name, tensor in weights.items() if engine is None else ():
        distributed.load_into(params[name], tensor)
    if finished:
        return int(state["step"])
    rest = torch.load(folder / (f"optimizer.rank{info.rank}.pt" if sharded_optimizer else "optimizer.pt"),
                      weights_only=False)
    if engine is None:
        optimizer.load_state_dict(rest["optimizer"])
    scheduler.load_state_dict(rest["scheduler"])
    torch.set_rng_state(rest["torch_rng"])
    return int(state["step"])


# ------------------------------------------------------------------------------------------------ the loop
def _is_oom(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in msg or "can't allocate memory" in msg


def train(model: nn.Module, samples: Sequence[Encoded], cache: EncoderCache, settings: TrainSettings,
          ckpt_dir: Path, log_path: Path, fingerprint: dict[str, Any], config: dict[str, Any],
          device: torch.device, autocast_dtype: torch.dtype | None = None, wrapped: nn.Module | None = None,
          info: DistInfo = DistInfo(), sharded: bool = False, progress: bool = True,
          zero_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the trainable parameters of `model` (adapter, LoRA); returns figures for metrics.json.

    `wrapped` is the DDP module when distributed (forward goes through it; checkpoints use `model`); with FSDP
    (`sharded`) the model itself is sharded in place; with `zero_config` a DeepSpeed engine steps the optimizer.
    Loss = sum of answer-token cross-entropies / answer tokens in the whole accumulation window, so a step's
    gradient does not depend on how the window was split into micro-batches.
    """
    from paraqa_utils.progress import tqdm

    wrapped = wrapped or model
    pad_id = model.tokenizer.pad_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    n_total = total_steps(settings, len(samples), info.world)
    warmup = int(settings.warmup_ratio * n_total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(settings.schedule, warmup, n_total))
    engine = zero.initialize(model, optimizer, zero_config) if zero_config else None
    wrapped = engine if engine is not None else wrapped
    step = 0
    source = Path(settings.resume_from) if settings.resume_from else Path(ckpt_dir)
    if (settings.resume or settings.resume_from) and (source / "state.json").exists():
        step = load_checkpoint(source, model, optimizer, scheduler, fingerprint, info, sharded, n_total, engine)
        if step > n_total:
            raise ResumeRefused(f"{source} is at step {step}, beyond this run's {n_total} steps; raise n_steps "
                                "or start fresh (resume=False)")
    elif settings.resume_from:
        raise ResumeRefused(f"resume_from={settings.resume_from}: no checkpoint there (state.json missing)")
    rank, world = info.rank, info.world
    if rank == 0:
        # a fresh start drops the old curve; a resumed one drops the steps logged after the checkpoint it restarts
        # from (a kill between two checkpoints), so every step appears once
        kept = [r for r in runs.read_jsonl(log_path) if r["step"] <= step] if step and log_path.exists() else []
        runs.write_jsonl(log_path, kept)
    stream = micro_batches(samples, settings, rank, world)
    for _ in range(step * settings.grad_accum):  # replay the data order up to the checkpoint
        next(stream)
    wrapped.train()
    model.audio_encoder.eval()  # frozen: no dropout in the encoder, ever
    t_start, n_examples, n_tokens, losses = time.perf_counter(), 0, 0, []
    bar = tqdm(total=n_total, initial=step, desc=f"train {config.get('condition', '')}", disable=not progress or rank != 0)

    def autocast() -> contextlib.AbstractContextManager:
        # bf16 autocast on GPUs: frozen weights in bf16, adapter/LoRA kept in float32 (peft's default)
        return torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()

    while step < n_total:
        t0 = time.perf_counter()
        window = [next(stream) for _ in range(settings.grad_accum)]
        # the answer tokens of the whole window over all ranks: DDP and FSDP average the ranks' gradients, so
        # each rank scales by world / global tokens and n processes match one process with n x grad_accum
        n_label = distributed.all_sum([sum(samples[i].n_label_tokens for _, b in window for i in b)], info, device)[0]
        scale = info.world / max(n_label, 1)
        step_loss = 0.0
        for j, (epoch, b) in enumerate(window):
            batch = [samples[i] for i in b]
            ids = [s.uid for s in batch]
            last = j == len(window) - 1 or wrapped is model or engine is not None  # the engine syncs itself
            sync = contextlib.nullcontext() if last else wrapped.no_sync()
            try:
                with sync:
                    states = cache.get(batch)
                    tensors = {k: v.to(device) for k, v in collate(batch, pad_id).items()}
                    with autocast():
                        loss_sum, _ = wrapped(audio_states=states, **tensors)
                    if not torch.isfinite(loss_sum):
                        raise NonFiniteLoss(f"loss is {loss_sum.item()} at step {step + 1} (epoch {epoch}, "
                                            f"micro-batch {j + 1}/{len(window)}); example ids: {ids}. Lower lr "
                                            f"(now {settings.lr}) or check these examples")
                    if engine is None:
                        (loss_sum * scale).backward()
                    else:  # the window's scale is 04's, not 1/grad_accum; step() acts at the window's end
                        engine.backward(loss_sum * scale, scale_wrt_gas=False)
                        engine.step()
            except TrainingError:
                raise
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc):
                    raise
                raise OutOfMemory(
                    f"out of memory at step {step + 1} with batch_size={settings.batch_size} (longest sample "
                    f"{max(len(s.input_ids) for s in batch)} tokens, example ids {ids}); lower batch_size and raise "
                    f"grad_accum to keep the effective batch of {settings.batch_size * settings.grad_accum}, or "
                    "set gradient_checkpointing=True or a smaller max_seq_len") from exc
            step_loss += loss_sum.item()
            n_examples += len(batch)
            n_tokens += sum(len(s.input_ids) for s in batch)
        if settings.max_grad_norm > 0 and engine is None:  # the engine clips with its gradient_clipping
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        if engine is None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        loss_all, n_window = distributed.all_sum([step_loss, float(sum(len(b) for _, b in window))], info, device)
        loss = loss_all / max(n_label, 1)
        losses.append(loss)
        if rank == 0:
            runs.append_jsonl(log_path, {"step": step, "loss": round(loss, 6), "lr": lr,
                                         "seconds": round(time.perf_counter() - t0, 4), "epoch": window[-1][0],
                                         "n_examples": int(n_window),
                                         "n_answer_tokens": int(n_label), "time": round(time.time(), 3)})
        if settings.save_every_steps and step % settings.save_every_steps == 0 and step < n_total:
            save_checkpoint(ckpt_dir, model, optimizer, scheduler, step, fingerprint, config, info, sharded, engine)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    if losses:
        save_checkpoint(ckpt_dir, model, optimizer, scheduler, step, fingerprint, config, info, sharded, engine)
    seconds = time.perf_counter() - t_start
    curve = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()] if rank == 0 else []
    return {"steps": step, "steps_this_run": len(losses), "train_seconds": round(seconds, 3),
            "final_loss": curve[-1]["loss"] if curve else None,
            "mean_loss": round(sum(c["loss"] for c in curve) / len(curve), 6) if curve else None,
            "first_loss": curve[0]["loss"] if curve else None,
            "seconds_per_step": round(seconds / len(losses), 4) if losses else None,
            "examples_per_s": round(n_examples / seconds, 4) if losses and seconds else None,
            "tokens_per_s": round(n_tokens / seconds, 2) if losses and seconds else None}
