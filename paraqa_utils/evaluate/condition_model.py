"""A ParaQA-trained condition folder as a model under evaluation (`04_finetune/<condition>/` of any run).

    paraqa:<condition folder>[#explicit=true|false,device=cpu|cuda]

Loads the folder's `config.yaml`, `adapter.safetensors` and `lora/` (peft's format) onto the models the config
names, and answers with 04's own greedy decoding. Audio longer than 30 s goes through the encoder in 30 s windows,
as in training. The condition's explicit labels are used only for a condition trained with them (`explicit` in its
config), and only where a test item carries them; `explicit=false|true` overrides.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from paraqa_utils import runs
from paraqa_utils.evaluate.endpoint import spec_options

MAX_AUDIO_S = 30.0  # per encoder window; longer clips are several windows


class ConditionModelError(ValueError):
    pass


@dataclass(frozen=True)
class ConditionModel:
    name: str
    folder: Path
    explicit: bool | None = None  # None: the condition's own setting
    device: str = ""  # empty: the config's
    max_audio_s: float = MAX_AUDIO_S
    long_audio: str = "windows"

    @classmethod
    def parse(cls, name: str, spec: str) -> "ConditionModel":
        body, _, opts = spec.partition("#")
        folder = Path(body[len("paraqa:"):]).expanduser()
        if not (folder / "config.yaml").is_file() or not weight_files(folder):
            raise ConditionModelError(f"--model {name}={spec}: {folder} is not a trained condition folder "
                                      "(config.yaml and adapter.safetensors or lora/, as 04_finetune writes them)")
        return cls(name, folder, **spec_options(cls, name, opts, ("name", "folder", "max_audio_s", "long_audio")))

    @property
    def model(self) -> str:
        return str(self.folder)

    def describe(self) -> dict[str, Any]:
        return {"kind": "paraqa-condition", "folder": str(self.folder), "explicit": self.explicit,
                "max_audio_s": self.max_audio_s, "long_audio": self.long_audio}


def weight_files(folder: Path) -> list[Path]:
    """The trained weights of a condition folder: adapter.safetensors (our adapter, or a released model's projector
    when it trained) and lora/adapter_model.safetensors."""
    return [p for p in (folder / "adapter.safetensors", folder / "lora" / "adapter_model.safetensors") if p.is_file()]


def load(m: ConditionModel, cache_dir: Path) -> tuple[Any, Any, Any, Any, Any]:
    """(config for prediction, model with the saved weights, encoder cache, read-outs, device)."""
    from safetensors.torch import load_file

    from paraqa_utils.finetune import load_config
    from paraqa_utils.finetune import model as speech_model

    cfg = load_config(m.folder / "config.yaml")
    # the folder holds every trained weight (adapter, read-out heads, LoRA): the base it started from is not needed
    cfg = dataclasses.replace(cfg, device=m.device or cfg.device, train_file="", max_test_items=0, progress=False,
                              explicit=cfg.explicit if m.explicit is None else m.explicit, out_dir=str(cache_dir),
                              base_path="")
    classes = None
    if (m.folder / speech_model.READOUT_CLASSES).is_file():
        classes = runs.read_json(m.folder / speech_model.READOUT_CLASSES)["label_classes"]
    model, cache, reads, device = speech_model.setup(cfg, label_classes=classes)
    if model.released is not None:  # a released audio-LLM: its projector (when trained) and its LoRA
        if (m.folder / "adapter.safetensors").is_file():
            model.adapter.module.load_state_dict(load_file(str(m.folder / "adapter.safetensors")), strict=True)
        if cfg.train_mode != "adapter":
            from paraqa_utils.finetune import released

            if not (m.folder / "lora" / "adapter_model.safetensors").is_file():
                raise ConditionModelError(f"{m.folder}: train_mode {cfg.train_mode} but no lora/adapter_model.safetensors")
            unmatched = released.load_lora(model, m.folder / "lora")
            if unmatched:
                raise ConditionModelError(f"{m.folder}: LoRA weights {unmatched[:3]} do not fit {cfg.speech_llm}")
        return cfg, model, cache, reads, device
    model.adapter.load_state_dict(load_file(str(m.folder / "adapter.safetensors")), strict=True)
    if model.label_readout is not None:
        if not (m.folder / speech_model.READOUT_WEIGHTS).is_file():
            raise ConditionModelError(f"{m.folder}: readouts has labels but there is no {speech_model.READOUT_WEIGHTS}")
        model.label_readout.load_state_dict(load_file(str(m.folder / speech_model.READOUT_WEIGHTS)), strict=True)
    lora = m.folder / "lora" / "adapter_model.safetensors"
    if cfg.train_mode == "adapter+lora":
        if not lora.is_file():
            raise ConditionModelError(f"{m.folder}: train_mode adapter+lora but no lora/adapter_model.safetensors")
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model.llm, load_file(str(lora)))
        missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
        if missing:
            raise ConditionModelError(f"{m.folder}: LoRA weights {missing[:3]} do not fit the model in config.yaml")
    return cfg, model, cache, reads, device


def answer(m: ConditionModel, items: Sequence[dict[str, Any]], cache_dir: Path) -> list[dict[str, Any]]:
    """Prediction rows like endpoint.answer's; an item whose audio is missing or unreadable is its `error`."""
    from paraqa_utils.finetune.condition import predict

    cache_dir.mkdir(parents=True, exist_ok=True)
    # keyed on every weight file; a folder with adapter.safetensors alone keeps that file's sha (earlier caches hold)
    key = "".join(runs.sha256_file(p) for p in weight_files(m.folder))
    done_path = cache_dir / f"answers-{runs.sha256_text(key)[:12] if len(key) > 64 else key[:12]}.jsonl"
    done = {r["id"]: r for r in runs.read_jsonl(done_path)} if done_path.exists() else {}
    if all(it["id"] in done for it in items):  # answered earlier by these very weights: nothing is recomputed
        return [done[it["id"]] for it in items]
    cfg, model, cache, reads, device = load(m, cache_dir)
    records = [{"item_id": it["id"], "test_set": it["test_set"], "question_type": it.get("question_type"),
                "audio_path": str(Path(it["audio_path"]).resolve()), "question": it["question"],
                "explicit_block": it.get("explicit_block"), "clip_id": it.get("clip_id")} for it in items]
    runs.write_jsonl(cache_dir / "items.jsonl", records)
    counts: dict[str, Any] = {}
    got = {p["item_id"]: p for p in predict(model, cache, dataclasses.replace(
        cfg, test_files={"eval": str(cache_dir / "items.jsonl")}), device, counts, reads=reads)}
    rows = [{"id": it["id"], "model": m.name, "test_set": it["test_set"], "question_type": it.get("question_type"),
             "answer": got[it["id"]]["answer"] if it["id"] in got else "",
             "audio_policy": "windows" if it["id"] in got else None,
             "explicit": bool(cfg.explicit and it.get("explicit_block")),
             "error": None if it["id"] in got else "audio: missing, unreadable or too long for the prompt"}
            for it in items]
    runs.write_jsonl(done_path, rows)
    return rows
