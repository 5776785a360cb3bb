"""A transformers audio-LLM as a model under evaluation, through its own processor and `generate` (the Qwen2-Audio
family first: any checkpoint whose processor takes `text` + `audio` and whose config names its class).

    hf:<hub id or folder>[#max_audio_s=30,long_audio=first_30s|windows,explicit=true,device=cpu,max_new_tokens=64]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from paraqa_utils.audio import load_audio
from paraqa_utils.evaluate.endpoint import ModelSpecError, prompt_text, spec_options


@dataclass(frozen=True)
class HfAudioLLM:
    name: str
    model: str
    max_audio_s: float = 30.0  # Qwen2-Audio's encoder takes 30 s
    long_audio: str = "first_30s"
    explicit: bool = False
    device: str = "cpu"
    max_new_tokens: int = 64

    @classmethod
    def parse(cls, name: str, spec: str) -> "HfAudioLLM":
        body, _, opts = spec.partition("#")
        return cls(name, body[len("hf:"):], **spec_options(cls, name, opts, ("name", "model")))

    def describe(self) -> dict[str, Any]:
        return {"kind": "transformers-audio-llm", "model": self.model, "max_audio_s": self.max_audio_s,
                "long_audio": self.long_audio, "explicit": self.explicit}


def load(m: HfAudioLLM) -> tuple[Any, Any]:
    import transformers
    from transformers import AutoConfig, AutoProcessor

    try:
        conf = AutoConfig.from_pretrained(m.model)
        cls = getattr(transformers, (conf.architectures or [""])[0], None)
        if cls is None:
            raise ModelSpecError(f"{m.model}: its config names no transformers class ({conf.architectures})")
        return AutoProcessor.from_pretrained(m.model), cls.from_pretrained(m.model).to(m.device).eval()
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"--model {m.name}: could not load {m.model}: {exc}") from None


def chat_text(proc: Any, question: str) -> str:
    """The prompt with the processor's audio slot: its chat template with an audio part, else our own layout."""
    token = getattr(proc, "audio_token", "<|AUDIO|>")
    slot = f"{getattr(proc, 'audio_bos_token', '')}{token}{getattr(proc, 'audio_eos_token', '')}"
    conv = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": question}]}]
    try:
        text = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    except Exception:  # a template that takes string content only
        text = ""
    if token in text:
        return text
    plain = [{"role": "user", "content": f"{slot}\n{question}"}]
    return proc.apply_chat_template(plain, add_generation_prompt=True, tokenize=False) \
        if getattr(proc, "chat_template", None) else f"{slot}\n{question}"


def answer(m: HfAudioLLM, items: Sequence[dict[str, Any]], cache_dir: Any = None) -> list[dict[str, Any]]:
    import torch

    from paraqa_utils.evaluate.endpoint import pieces

    proc, model = load(m)
    rate = int(getattr(proc.feature_extractor, "sampling_rate", 16000))
    rows = []
    for it in items:
        row = {"id": it["id"], "model": m.name, "test_set": it["test_set"], "question_type": it.get("question_type"),
               "answer": "", "audio_policy": None, "explicit": bool(m.explicit and it.get("explicit_block")),
               "error": None}
        rows.append(row)
        try:
            parts, row["audio_policy"] = pieces(load_audio(it["audio_path"], rate), m)
        except Exception as exc:
            row["error"] = f"audio: {type(exc).__name__}: {exc}"
            continue
        texts = []
        for part in parts:
            inputs = proc(text=chat_text(proc, prompt_text(it, m.explicit)), audio=[part], sampling_rate=rate,
                          return_tensors="pt").to(m.device)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=m.max_new_tokens, do_sample=False)
            texts.append(proc.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip())
        row["answer"] = " ".join(t for t in texts if t)
    return rows
