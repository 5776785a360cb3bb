"""The aligned base's files: its key (sha256 of inputs and settings), weights, manifest, layout and probe checks."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from paraqa_utils import runs
from paraqa_utils.finetune.config import ConfigError, FinetuneConfig

FORMAT = "paraqa-base/2"  # /2: hard label tokens
WEIGHTS = "base.safetensors"
MANIFEST = "manifest.json"
N_PROBE = 8  # base examples whose loss is the base's fingerprint: every condition must start there
PROBE_TOLERANCE = 1e-3  # relative: a condition's step-0 probe loss must equal the base's final one within this

class BaseError(ConfigError):
    """A base that cannot be used: other settings or corpus, another layout, no usable training clip."""

# ------------------------------------------------------------------------------------------------ the key
def inputs(cfg: FinetuneConfig, model_ids: dict[str, str], rows: list[dict], audio_hashes: dict[str, str],
           classes: dict[str, list[str]]) -> dict[str, Any]:
    """Everything the base depends on; the key is its sha256. Audio enters by content hash, not by path."""
    data = [{k: r[k] for k in ("example_id", "instruction", "target")} | {"audio": audio_hashes[r["clip_id"]]}
            for r in rows]
    return {"format": FORMAT, **model_ids, "readouts": cfg.readouts, "train_mode": cfg.train_mode,
            "stack_k": cfg.stack_k, "adapter_hidden": cfg.adapter_hidden,
            "lora": [cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules()]
            if cfg.train_mode != "adapter" else None,
            "base_steps": cfg.base_steps, "base_lr": cfg.base_lr, "batch_size": cfg.batch_size,
            "grad_accum": cfg.grad_accum, "schedule": cfg.schedule, "warmup_ratio": cfg.warmup_ratio,
            "max_grad_norm": cfg.max_grad_norm, "max_seq_len": cfg.max_seq_len, "seed": cfg.seed,
            "dtype": resolved_dtype(cfg), "system_prompt": cfg.system_prompt, "label_classes": classes,
            "examples_sha256": hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest(),
            "n_examples": len(rows)}


def resolved_dtype(cfg: FinetuneConfig) -> str:
    """The dtype the base trains in (`auto` differs between machines: a CPU with native bf16 trains in bf16)."""
    from paraqa_utils.finetune import speech_llm

    return str(speech_llm.resolve_dtype(cfg.dtype, speech_llm.resolve_device(cfg.device))).replace("torch.", "")


def key_of(inp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inp, sort_keys=True).encode()).hexdigest()


def differing_keys(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))


# ------------------------------------------------------------------------------------------------ weights
def base_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a base holds: the adapter, the label read-out (heads and their standardisation) and the LoRA weights."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if k.startswith(("adapter.", "label_readout.")) or ".lora_" in k}


def check_layout(found: dict[str, torch.Tensor], model: torch.nn.Module, where: Path) -> None:
    want = base_tensors(model)
    missing, unexpected = sorted(set(want) - set(found)), sorted(set(found) - set(want))
    shapes = sorted(k for k in set(want) & set(found) if tuple(want[k].shape) != tuple(found[k].shape))
    if missing or unexpected or shapes:
        parts = [f"missing tensors {missing[:6]}{' ...' if len(missing) > 6 else ''}" if missing else "",
                 f"unexpected tensors {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}" if unexpected else "",
                 "other shapes: " + ", ".join(f"{k} {tuple(found[k].shape)} vs {tuple(want[k].shape)}"
                                              for k in shapes[:4]) if shapes else ""]
        raise BaseError(f"the base in {where} does not fit this model (readouts, train_mode, LoRA and adapter "
                        f"settings must match): " + "; ".join(p for p in parts if p))


def load_into(model: torch.nn.Module, folder: Path) -> dict[str, Any]:
    """Load a base's weights into `model` (layout checked first); returns its manifest."""
    from safetensors.torch import load_file

    folder = Path(folder)
    found = load_file(str(folder / WEIGHTS))
    check_layout(found, model, folder)
    missing, unexpected = model.load_state_dict(found, strict=False)
    assert not unexpected, unexpected
    return read_manifest(folder)


def read_manifest(folder: Path) -> dict[str, Any]:
    p = Path(folder) / MANIFEST
    return runs.read_json(p) if p.exists() else {}


def intact(folder: Path) -> str | None:
    """None when the cached base is whole; else why not (a kill mid-write, a corrupt or edited file)."""
    folder = Path(folder)
    try:
        man = runs.read_json(folder / MANIFEST)
    except (OSError, ValueError) as exc:
        return f"manifest unreadable ({type(exc).__name__})"
    if man.get("format") != FORMAT or not (folder / WEIGHTS).exists():
        return "manifest or weights missing"
    if runs.sha256_file(folder / WEIGHTS) != man.get("weights_sha256"):
        return "weights do not match the manifest's sha256 (corrupt or partial file)"
    return None


# ------------------------------------------------------------------------------------------------ probe loss
@torch.no_grad()
def probe_loss(model: Any, samples: Sequence[Any], cache: Any) -> float:
    """Mean answer-token cross-entropy of the fixed probe examples, dropout off."""
    from paraqa_utils.finetune.speech_data import collate

    was = model.training
    model.eval()
    p = next(model.adapter.parameters())
    t = {k: v.to(p.device) for k, v in collate(list(samples), model.tokenizer.pad_token_id).items()}
    loss, n = model(audio_states=cache.get(list(samples)), **t)
    model.train(was)
    return float(loss) / max(int(n), 1)


def probe_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["example_id"])[:N_PROBE]



def shown_path(path: str) -> str:
    """A cache path as a run records it: relative to the outputs folder when inside it (no machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(runs.outputs_dir().resolve()))
    except ValueError:
        return str(path)
