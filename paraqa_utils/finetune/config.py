"""Stage 04's configuration: one condition's training and prediction knobs, checked, loaded and saved as YAML."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from paraqa_utils.finetune import readout, training
from paraqa_utils.params import ParamsError, check_types, stage_config

TRAIN_MODES = ("adapter", "adapter+lora", "lora")  # lora: a released checkpoint's LoRA alone, its projector frozen
DTYPES = ("auto", "float32", "bfloat16", "float16")
ZERO_SHOT = "zero_shot"
STAGE = "04_finetune"


class ConfigError(ValueError):
    """A fine-tuning config with an unknown key or a bad value; the message names the key."""


@dataclass
class FinetuneConfig:
    """Every knob of one condition's training and prediction; saved as `<condition>/config.yaml`.

    Knobs have no default here: their one default is 04_finetune.ipynb's parameters cell (`make_config` and
    `load_config` fill them from it). Only the per-condition fields, which the stage sets, have defaults.
    """
    speech_llm: str  # own: our stack (whisper_model + adapter + llm_model); hf:<id or folder>: a released audio-LLM
    trust_remote_code: bool  # run a released checkpoint's own model code (MERaLiON); off by default
    whisper_model: str  # "" = embedded Whisper base; a path or hub id (openai/whisper-large-v3)
    llm_model: str  # "" = embedded SmolLM2-135M-Instruct; any causal LM path or hub id
    train_mode: str  # the paper trains the adapter only; "adapter+lora" adds LoRA; "lora" (released models) LoRA alone
    stack_k: int
    adapter_hidden: int  # 0 = the LLM's hidden size
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: str
    n_steps: int  # optimizer steps; 0 = n_epochs passes over the data
    n_epochs: float
    batch_size: int
    grad_accum: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    schedule: str
    max_grad_norm: float
    max_seq_len: int
    system_prompt: str  # "template": the chat template's own system turn; "" an empty one; else this text
    max_train_examples: int  # 0 = all
    group_by_length: bool
    max_new_tokens: int
    max_test_items: int  # per test set; 0 = all
    predict_batch_size: int
    use_encoder_cache: bool
    device: str
    dtype: str  # auto: bf16 on GPUs and on CPUs with native bf16 dot products, else float32
    gradient_checkpointing: bool
    fsdp: bool
    deepspeed_config: str  # "" = none; else a DeepSpeed JSON (ZeRO stage 0-2) whose engine steps the optimizer
    save_every_steps: int  # 0 = a checkpoint at the end only
    resume: bool  # continue from this condition's own checkpoint, if one exists
    resume_from: str  # or from this checkpoint folder (refused if made for another condition/model)
    seed: int
    torch_threads: int  # 0 = torch's default; 1 is often faster on a CPU shared with other jobs
    readouts: str  # "" (the paper's adapter only) or transcript,labels: encoder read-outs beside the adapter
    base: str  # auto: build (once per machine) or reuse the aligned base; none: start untrained; or a base folder
    base_steps: int  # optimizer steps of the base's alignment phase
    base_lr: float
    base_max_clips: int  # train-split clips the base learns from; 0 = all
    # per condition, set by the stage's plan (not knobs)
    condition: str = "baseline"
    train_file: str = ""  # empty: no training, the untrained stack (the zero-shot floor)
    test_files: dict = field(default_factory=dict)  # test set name -> test_<set>.jsonl
    explicit: bool = False  # put the annotator's labels (explicit_block) into test prompts
    base_path: str = ""  # the aligned base this condition starts from (set by base.prepare); empty: untrained
    run_dir: str = ""  # relative audio paths are relative to it
    out_dir: str = "."  # the stage folder: writes <out_dir>/<condition>/ and caches in <out_dir>/_cache/
    progress: bool = True

    def __post_init__(self) -> None:
        problems = check_types(self)
        if problems:  # the value checks below assume the right types
            raise ConfigError("fine-tuning config:\n  - " + "\n  - ".join(problems))
        checks = [(self.train_mode in TRAIN_MODES, f"train_mode={self.train_mode!r}: one of {TRAIN_MODES}"),
                  (self.schedule in training.SCHEDULES, f"schedule={self.schedule!r}: one of {training.SCHEDULES}"),
                  (self.dtype in DTYPES, f"dtype={self.dtype!r}: one of {DTYPES}"),
                  (self.stack_k >= 1, "stack_k must be >= 1"), (self.batch_size >= 1, "batch_size must be >= 1"),
                  (self.grad_accum >= 1, "grad_accum must be >= 1"), (self.lr > 0, "lr must be > 0"),
                  (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
                  (self.n_steps > 0 or self.n_epochs > 0, "set n_steps > 0 or n_epochs > 0"),
                  (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
                  (self.max_seq_len >= 16, "max_seq_len must be >= 16"),
                  (self.train_mode == "adapter" or bool(self.target_modules()),
                   f"{self.train_mode} needs lora_target_modules"),
                  (self.released() or self.speech_llm.strip() == "own",
                   f"speech_llm={self.speech_llm!r}: own, or hf:<hub id or folder> (a released audio-LLM)"),
                  (self.released() or self.train_mode != "lora",
                   "train_mode=lora freezes the adapter: only a released audio-LLM (speech_llm: hf:...) has a "
                   "trained one; our own stack trains adapter or adapter+lora"),
                  (not self.released() or not self.readouts.strip(),
                   f"readouts={self.readouts!r} reads our Whisper encoder: a released audio-LLM (speech_llm) takes none"),
                  (not (self.fsdp and self.deepspeed_config), "fsdp and deepspeed_config exclude each other"),
                  (self.base_steps >= 1, "base_steps must be >= 1"), (self.base_lr > 0, "base_lr must be > 0")]
        problems = [msg for ok, msg in checks if not ok]
        try:
            readout.parse_readouts(self.readouts)
        except readout.ReadoutError as exc:
            problems.append(str(exc))
        if problems:
            raise ConfigError("fine-tuning config:\n  - " + "\n  - ".join(problems))

    def released(self) -> bool:
        """A released audio-LLM (speech_llm: hf:...) rather than our own stack."""
        return self.speech_llm.strip().startswith("hf:")

    def target_modules(self) -> list[str]:
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """Unknown keys are an error (with the closest known key); missing knobs take 04's notebook defaults."""
        try:
            return stage_config(cls, STAGE, data, strict=True)
        except ParamsError as exc:
            raise ConfigError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> FinetuneConfig:
    """A saved config.yaml, with `KEY=VALUE` overrides (values parsed as YAML); ConfigError names what is wrong."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a mapping of config keys")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        data[key] = yaml.safe_load(value)
    return FinetuneConfig.from_dict(data)


def save_config(cfg: FinetuneConfig, path: Path) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def make_config(**values: Any) -> FinetuneConfig:
    """A config from keyword values, the rest from 04_finetune.ipynb's parameters (tests, scripts, notebooks)."""
    return FinetuneConfig.from_dict(values)
