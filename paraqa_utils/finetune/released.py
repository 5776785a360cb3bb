"""Released audio-LLMs as stage 04's Speech-LLM (`speech_llm: hf:<hub id or folder>`).

The checkpoint is taken apart into the three pieces our own stack has. Its audio encoder is frozen, and its outputs
are cached per clip like Whisper's. Its projector plays the adapter's part, trained with `train_mode` adapter or
adapter+lora and frozen with lora. Its language model gets LoRA. They then go through the same loop, launcher,
checkpoints, resume and predictions (SpeechLLM). The class comes from the config's `architectures`:

- `Qwen2AudioForConditionalGeneration`: native in transformers.
- `MERaLiONForConditionalGeneration` / `MERaLiON2ForConditionalGeneration`: the checkpoint's own code, which runs
  only with `trust_remote_code: true`.

The prompt is the processor's chat template with its audio part, and the audio token is repeated as many times as
the processor repeats it. The LoRA weights are saved in peft's format on the whole released model, so that
`PeftModel.from_pretrained(<the released class>.from_pretrained(id), "<condition>/lora")` loads them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from paraqa_utils.finetune.speech_data import PromptFormat
from paraqa_utils.finetune.released_audio import BatchedProjector, Family, ReleasedEncoder
from paraqa_utils.finetune.speech_llm import AUDIO_PLACEHOLDER, SpeechLLM

PREFIX = "hf:"
OWN = "own"


class ReleasedModelError(ValueError):
    """A released checkpoint that 04 cannot train as configured; the message names what and what is supported."""


FAMILIES = {
    "Qwen2AudioForConditionalGeneration": Family("qwen2_audio", False, "model.audio_tower", "model.multi_modal_projector",
                                                 "model.language_model", "lm_head"),
    "MERaLiONForConditionalGeneration": Family("meralion", True, "speech_encoder", "speech_audio_adapter",
                                               "text_decoder", "", encoder_norm="ln_speech"),
    "MERaLiON2ForConditionalGeneration": Family("meralion", True, "speech_encoder", "speech_audio_adapter",
                                                "text_decoder", "", encoder_norm="ln_speech"),
}


def is_released(spec: str) -> bool:
    return (spec or OWN).strip().startswith(PREFIX)


def model_path(spec: str) -> str:
    return spec.strip()[len(PREFIX):]


def part(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path ("model.audio_tower")."""
    for name in path.split("."):
        model = getattr(model, name)
    return model


def checkpoint_config(path: str) -> dict[str, Any]:
    """A folder's or hub id's config.json as written (its architectures and auto_map), read without transformers'
    config classes, so that remote code is never imported (nor asked about) to read it."""
    import json

    from transformers.utils import cached_file

    return json.loads(Path(cached_file(path, "config.json")).read_text())


def family_of(spec: str, trust_remote_code: bool) -> tuple[str, Family, Any]:
    """(architecture, family, config) of a checkpoint; refuses an architecture 04 cannot take apart, and remote code
    without trust_remote_code, from its config.json alone (before transformers could ask to run any code)."""
    from transformers import AutoConfig

    path = model_path(spec)
    try:
        raw = checkpoint_config(path)
    except (OSError, ValueError) as exc:
        raise ReleasedModelError(f"speech_llm={spec}: cannot read its config.json: {exc}") from None
    arch = (raw.get("architectures") or ["(none)"])[0]
    if arch not in FAMILIES:
        raise ReleasedModelError(f"speech_llm={spec}: architecture {arch} is not supported; 04 trains "
                                 f"{', '.join(sorted(FAMILIES))} (or speech_llm: own, our Whisper + LLM stack)")
    fam = FAMILIES[arch]
    if fam.remote_code and not trust_remote_code:
        raise ReleasedModelError(f"speech_llm={spec}: {arch} runs the checkpoint's own code (auto_map in its "
                                 "config.json); set trust_remote_code: true to run it (read it first)")
    try:
        return arch, fam, AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ReleasedModelError(f"speech_llm={spec}: cannot read its config: {exc}") from None


# ------------------------------------------------------------------------------------------------ the prompt
class ProcessorPrompt(PromptFormat):
    """The processor's chat template with an audio part; its audio token, repeated n_tokens times, fills the span."""

    def __init__(self, processor: Any, audio_token: str, n_tokens: Callable[[int], int], max_seq_len: int,
                 system_prompt: str):
        super().__init__(processor.tokenizer, max_seq_len, system_prompt)
        self.proc = processor
        self.audio_token = audio_token
        self.audio_fill_id = processor.tokenizer.convert_tokens_to_ids(audio_token)
        self.n_tokens = n_tokens

    def n_audio(self, n_samples: int, stack_k: int) -> int:
        return self.n_tokens(n_samples)

    def _messages(self, text: str) -> list[dict[str, Any]]:
        user = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": text}]}]
        if self.system not in ("template",):
            user = [{"role": "system", "content": [{"type": "text", "text": self.system}]}] + user
        return user

    def _template(self, messages: list[dict[str, Any]], generation: bool) -> str:
        return chat_prompt(self.proc, self.audio_token, messages, generation)

    def _render(self, content: str, target: str | None) -> tuple[str, str]:
        text = content.split(AUDIO_PLACEHOLDER, 1)[1].lstrip("\n")
        msgs = self._messages(text)
        prompt = self._template(msgs, True)
        if prompt.count(self.audio_token) != 1:
            raise ReleasedModelError(f"the processor's prompt holds its audio token {self.audio_token!r} "
                                     f"{prompt.count(self.audio_token)} times, not once")
        prompt = prompt.replace(self.audio_token, AUDIO_PLACEHOLDER)
        if target is None:
            return prompt, ""
        full = self._template(msgs + [{"role": "assistant", "content": [{"type": "text", "text": target}]}], False)
        full = full.replace(self.audio_token, AUDIO_PLACEHOLDER)
        if full.startswith(prompt):
            return prompt, full[len(prompt):]
        return prompt, target + (self.tok.eos_token or "")


def chat_prompt(processor: Any, audio_token: str, messages: list[dict[str, Any]], generation: bool) -> str:
    """Messages whose content parts include {"type": "audio"}, rendered by the processor's chat template (or its
    tokenizer's) with the audio token once. A template without audio parts gets the string content with the audio
    token where the audio part is (between the processor's audio_bos/audio_eos tokens, when it has them), then a new line."""
    tok = processor.tokenizer
    owner = processor if getattr(processor, "chat_template", None) else tok
    try:
        text = owner.apply_chat_template(messages, add_generation_prompt=generation, tokenize=False)
    except Exception:  # a template that takes string content only
        text = ""
    if audio_token in text:
        return text
    slot = f"{getattr(processor, 'audio_bos_token', '') or ''}{audio_token}{getattr(processor, 'audio_eos_token', '') or ''}"
    flat = [{"role": m["role"], "content": "".join(f"{slot}\n" if part["type"] == "audio" else part["text"]
                                                   for part in m["content"])} for m in messages]
    if not getattr(tok, "chat_template", None):
        return "".join(m["content"] for m in flat)
    return tok.apply_chat_template(flat, add_generation_prompt=generation, tokenize=False)


def audio_token_of(processor: Any, spec: str) -> str:
    """The processor's audio token (Qwen2-Audio's `audio_token`, MERaLiON's `speech_token`), checked to be one
    token of its tokenizer."""
    token = getattr(processor, "audio_token", None) or getattr(processor, "speech_token", None)
    tok = getattr(processor, "tokenizer", None)
    if not token or tok is None:
        raise ReleasedModelError(f"speech_llm={spec}: its processor ({type(processor).__name__}) has no audio token "
                                 "(audio_token / speech_token) and tokenizer: 04 cannot place the audio in the prompt")
    ids = tok(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tok.unk_token_id:
        raise ReleasedModelError(f"speech_llm={spec}: the processor's audio token {token!r} is not a single token of "
                                 f"its tokenizer (it encodes to {ids})")
    return token


# ------------------------------------------------------------------------------------------------ LoRA
def lora_pattern(model: nn.Module, prefix: str, targets: Sequence[str], spec: str) -> str:
    """A peft regex for the linear layers named `targets` inside the language model only (an audio encoder has
    q_proj/k_proj too); refuses targets that match no linear layer there, naming them and the ones that exist."""
    names = [n for n, m in model.named_modules() if n.startswith(prefix + ".") and isinstance(m, nn.Linear)]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    unmatched = [t for t in targets if t not in leaves]
    if unmatched:
        raise ReleasedModelError(f"speech_llm={spec}: lora_target_modules {', '.join(unmatched)} match no linear "
                                 f"layer of its language model ({prefix}); it has {', '.join(leaves)}")
    return rf"^{re.escape(prefix)}\..*\.({'|'.join(re.escape(t) for t in targets)})$"


# ------------------------------------------------------------------------------------------------ the model
def causal_lm(model: nn.Module, fam: Family, text_config: Any) -> nn.Module:
    """The released language model as a causal LM that shares the released modules (no copy): MERaLiON's text
    decoder already is one; Qwen2-Audio's decoder stack and head go into an empty causal-LM shell of its class."""
    lm = part(model, fam.language_model)
    if not fam.lm_head:
        return lm
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(text_config)
    shell.model = lm
    shell.lm_head = part(model, fam.lm_head)
    shell.generation_config.pad_token_id = getattr(text_config, "pad_token_id", None)
    return shell


def build(cfg: Any, device: torch.device, dtype: torch.dtype) -> SpeechLLM:
    """The released checkpoint of `cfg.speech_llm` as a SpeechLLM (assemble's parts), loaded on `device`."""
    import transformers
    from transformers import AutoModel, AutoProcessor

    spec = cfg.speech_llm
    arch, fam, conf = family_of(spec, cfg.trust_remote_code)
    path = model_path(spec)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    token = audio_token_of(processor, spec)
    cls = getattr(transformers, arch, None) or AutoModel  # remote code: the class its auto_map names
    where = {"device_map": {"": device}} if device.type == "cuda" else {}
    try:
        hf = cls.from_pretrained(path, dtype=dtype, trust_remote_code=cfg.trust_remote_code, **where)
    except (OSError, ValueError) as exc:
        raise ReleasedModelError(f"speech_llm={spec}: could not load {arch}: {exc}") from None
    model = assemble(hf.to(device=device, dtype=dtype), arch, processor.feature_extractor, processor.tokenizer, spec,
                     cfg.train_mode, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules(), cfg.seed,
                     cfg.gradient_checkpointing, processor)
    model.released = Released(arch, fam, processor, token, model.released_peft)
    return model


def assemble(hf: nn.Module, arch: str, feature_extractor: Any, tokenizer: Any, spec: str, train_mode: str, lora_r: int,
             lora_alpha: int, lora_dropout: float, targets: Sequence[str], seed: int, gradient_checkpointing: bool,
             processor: Any = None) -> SpeechLLM:
    """A released model (loaded, or built from a config: bench/gpu_check.py) as a SpeechLLM: frozen encoder, its
    projector (trained unless train_mode is lora), its language model with LoRA on `targets` (adapter+lora, lora)."""
    fam = FAMILIES[arch]
    hf = hf.eval().requires_grad_(False)
    text_config = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config.text_config
    norm = part(hf, fam.encoder_norm) if fam.encoder_norm else None
    encoder = ReleasedEncoder(fam, part(hf, fam.encoder), norm, feature_extractor, spec, processor)
    lora = train_mode in ("adapter+lora", "lora")
    pattern = lora_pattern(hf, fam.language_model, targets, spec) if lora else None
    llm = causal_lm(hf, fam, text_config)
    torch.manual_seed(seed)
    peft_model = None
    if lora:
        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(hf, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                   target_modules=pattern, bias="none"))
    projector = BatchedProjector(part(hf, fam.projector), encoder.stack_k)
    if train_mode != "lora":  # the projector trains in float32 under autocast, as our own adapter does
        projector.module.to(torch.float32).requires_grad_(True)
    if gradient_checkpointing:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = SpeechLLM(encoder, llm, tokenizer, encoder.stack_k, adapter=projector)
    model.llm_id = spec
    model.released_peft = peft_model
    if fam.name == "meralion":
        # trained under transformers 4, whose Gemma-2 scaled every input embedding by sqrt(hidden) (speech too);
        # transformers 5 scales in the embedding layer, which the speech embeddings bypass
        model.audio_scale = float(getattr(llm.get_input_embeddings(), "scalar_embed_scale", 1.0))
    return model


@dataclass
class Released:
    """What a SpeechLLM built from a released checkpoint carries beside its parts."""
    architecture: str
    family: Family
    processor: Any
    audio_token: str
    peft_model: Any  # the released model wrapped by peft (None without LoRA): saves and loads lora/

    def prompt_format(self, encoder: ReleasedEncoder, cfg: Any) -> ProcessorPrompt:
        return ProcessorPrompt(self.processor, self.audio_token, encoder.n_tokens, cfg.max_seq_len, cfg.system_prompt)

    def describe(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "family": self.family.name, "audio_token": self.audio_token,
                "projector": self.family.projector, "language_model": self.family.language_model}


def save_lora(model: SpeechLLM, folder: Path) -> None:
    if model.released.peft_model is not None:
        model.released.peft_model.save_pretrained(str(folder))


def load_lora(model: SpeechLLM, folder: Path) -> list[str]:
    """Load `folder`'s peft weights into the model's LoRA layers; returns LoRA keys that found no layer."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model.released.peft_model, load_file(str(folder / "adapter_model.safetensors")))
    return [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
