"""DeepSpeed ZeRO for 04_finetune: the condition's training under a DeepSpeed engine, from a DeepSpeed JSON
(`deepspeed_config`: params/launch/zero2_bf16.json or zero3_bf16.json, or the `deepspeed_config_file` of an
accelerate config with `distributed_type: DEEPSPEED`).

04's loop keeps what it owns: the optimizer (AdamW over the adapter and LoRA), the learning-rate schedule, the
loss normalised by the answer tokens of the whole accumulation window over all ranks, and the data order. So a
DeepSpeed config that names its own `optimizer` or `scheduler` is refused, and its "auto" values are filled from
04's settings. ZeRO-2 shards the optimizer state and gradients (the frozen LLM stays whole on every GPU); ZeRO-3
also shards the weights, like FSDP full shard: the frozen audio encoder is kept out of the engine (the encoder
cache calls it outside the engine's forward), and, as under FSDP, the test sets are then answered by one process
with the saved weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

SUPPORTED_STAGES = (0, 1, 2, 3)
OWNED_BY_04 = ("optimizer", "scheduler")


class ZeroConfigError(ValueError):
    """A DeepSpeed config 04 cannot train with; says which key and what to do."""


REPO_ROOT = Path(__file__).resolve().parents[2]


def read(path: str) -> dict[str, Any]:
    """The DeepSpeed JSON at `path` (relative to the working folder, else to the repository: the shipped ones)."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.is_file():
        p = REPO_ROOT / p
    if not p.is_file():
        raise ZeroConfigError(f"deepspeed_config {path}: no such file")
    try:
        ds = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ZeroConfigError(f"deepspeed_config {path}: not JSON ({exc})") from None
    own = [k for k in OWNED_BY_04 if k in ds]
    if own:
        raise ZeroConfigError(f"deepspeed_config {path}: remove {own}: 04 sets the optimizer (lr, weight_decay) and "
                              "the schedule (schedule, warmup_ratio) itself")
    stage = stage_of(ds)
    if stage not in SUPPORTED_STAGES:
        raise ZeroConfigError(f"deepspeed_config {path}: ZeRO stage {stage} is not one of {SUPPORTED_STAGES}")
    if (ds.get("fp16") or {}).get("enabled") in (True, "true"):
        raise ZeroConfigError(f"deepspeed_config {path}: fp16 is not supported (no loss scaling in 04's loop); "
                              "use bf16")
    return ds


def stage_of(ds: dict[str, Any] | None) -> int:
    return int(((ds or {}).get("zero_optimization") or {}).get("stage", 0))


def gathered(model: nn.Module) -> Any:
    """A context in which every ZeRO-3-partitioned trainable parameter of `model` holds its whole value (on every
    rank: a collective call); a no-op when nothing is partitioned."""
    import contextlib

    parts = [p for p in model.parameters() if p.requires_grad and hasattr(p, "ds_id")]
    if not parts:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(parts, modifier_rank=None)


def fill(ds: dict[str, Any], batch_size: int, grad_accum: int, world: int, max_grad_norm: float,
         bf16: bool) -> dict[str, Any]:
    """The config with 04's values in place of "auto" (and where absent); a value that contradicts 04's is
    refused rather than silently used, since it would change the effective batch."""
    want = {"train_micro_batch_size_per_gpu": batch_size, "gradient_accumulation_steps": grad_accum,
            "train_batch_size": batch_size * grad_accum * world, "gradient_clipping": float(max_grad_norm)}
    out = json.loads(json.dumps(ds))
    for key, value in want.items():
        given = out.get(key, "auto")
        if given != "auto" and given != value:
            raise ZeroConfigError(f"deepspeed_config sets {key}={given!r} but 04's settings give {value!r} "
                                  "(batch_size, grad_accum, processes, max_grad_norm): set it to \"auto\"")
        out[key] = value
    b = out.setdefault("bf16", {}).get("enabled", "auto")
    out["bf16"]["enabled"] = bf16 if b == "auto" else bool(b)
    out.setdefault("zero_allow_untested_optimizer", True)  # 04's own torch AdamW
    out.setdefault("steps_per_print", 10 ** 9)  # 04 logs its own steps
    return out


def initialize(model: nn.Module, optimizer: torch.optim.Optimizer, ds: dict[str, Any]) -> Any:
    """The DeepSpeed engine around `model` with 04's optimizer. The frozen audio encoder is hidden from it while it
    is built (the encoder cache calls it outside the engine's forward), then put back."""
    import deepspeed

    encoder = getattr(model, "audio_encoder", None)
    if encoder is not None:
        del model.audio_encoder
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, model_parameters=params, config=ds,
                                          dist_init_required=False)
    finally:
        if encoder is not None and stage_of(ds) == 3:
            # not a submodule again: ZeRO-3 walks the module's parameters and would meet the encoder's, which it
            # never partitioned; a plain attribute keeps `model.audio_encoder` working for the encoder cache
            object.__setattr__(model, "audio_encoder", encoder)
        elif encoder is not None:
            model.audio_encoder = encoder
    return engine


def describe(ds: dict[str, Any]) -> dict[str, Any]:
    """What the stage's provenance records of a filled config."""
    z = ds.get("zero_optimization") or {}
    return {"zero_stage": stage_of(ds), "bf16": bool((ds.get("bf16") or {}).get("enabled")),
            "offload_optimizer": (z.get("offload_optimizer") or {}).get("device", "none"),
            "micro_batch": ds["train_micro_batch_size_per_gpu"], "grad_accum": ds["gradient_accumulation_steps"],
            "train_batch_size": ds["train_batch_size"], "gradient_clipping": ds["gradient_clipping"]}


def save_state(engine: Any, folder: Path) -> None:
    """The engine's optimizer partitions (collective: every rank calls it), without the frozen weights."""
    engine.save_checkpoint(str(folder), tag="zero", exclude_frozen_parameters=True)


def load_state(engine: Any, folder: Path) -> None:
    path, _ = engine.load_checkpoint(str(folder), tag="zero", load_module_strict=False, load_optimizer_states=True,
                                     load_lr_scheduler_states=False)
    if path is None:
        raise FileNotFoundError(f"{folder}: no DeepSpeed optimizer state (tag 'zero')")
