"""A transformers audio-LLM as a model under evaluation, through its own processor and `generate` (the Qwen2-Audio
family first: any checkpoint whose processor takes `text` + `audio` and whose config names its class).

    hf:<hub id or folder>[#max_audio_s=30,long_audio=first_30s|windows,explicit=true,device=cpu,max_new_tokens=64,
                          batch_size=8,trust_remote_code=false]

A checkpoint that ships its own model code (MERaLiON: `auto_map` in its config.json) runs only with
trust_remote_code=true; its class is then the one its auto_map names.

Greedy answers are generated `batch_size` audio pieces at a time, left-padded (each piece of a long clip is one row;
an item's pieces are joined in order). Padding moves the logits by float rounding only (~1e-6 on the tiny checkpoint,
whose batched answers equal its one-at-a-time ones: tests/unit/test_evaluate.py), so only a near-tie can differ.
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
    batch_size: int = 8  # audio pieces per generate call
    trust_remote_code: bool = False  # run the checkpoint's own model code (MERaLiON)

    @classmethod
    def parse(cls, name: str, spec: str) -> "HfAudioLLM":
        body, _, opts = spec.partition("#")
        return cls(name, body[len("hf:"):], **spec_options(cls, name, opts, ("name", "model")))

    def describe(self) -> dict[str, Any]:
        return {"kind": "transformers-audio-llm", "model": self.model, "max_audio_s": self.max_audio_s,
                "long_audio": self.long_audio, "explicit": self.explicit}


REMOTE_CLASSES = ("AutoModelForSpeechSeq2Seq", "AutoModelForCausalLM", "AutoModel")  # tried in this order


def load(m: HfAudioLLM) -> tuple[Any, Any]:
    """(processor, model): the class the config's `architectures` names in transformers, else (remote code, with
    trust_remote_code=true only) the one its auto_map names."""
    import transformers
    from transformers import AutoProcessor

    from paraqa_utils.finetune.released import checkpoint_config

    try:
        conf = checkpoint_config(m.model)
        arch = (conf.get("architectures") or [""])[0]
        cls = getattr(transformers, arch, None)
        auto = conf.get("auto_map") or {}
        if cls is None and not auto:
            raise ModelSpecError(f"--model {m.name}: {m.model}'s config names no transformers class ({arch or 'none'})")
        if cls is None and not m.trust_remote_code:
            raise ModelSpecError(f"--model {m.name}: {m.model} ({arch}) runs its own model code (auto_map in its "
                                 "config.json); add #trust_remote_code=true to run it (read it first)")
        if cls is None:
            key = next((k for k in REMOTE_CLASSES if k in auto), None)
            if key is None:
                raise ModelSpecError(f"--model {m.name}: {m.model}'s auto_map names no model class ({', '.join(auto)})")
            cls = getattr(transformers, key)
        trust = {"trust_remote_code": True} if m.trust_remote_code else {}
        return (AutoProcessor.from_pretrained(m.model, **trust),
                cls.from_pretrained(m.model, **trust).to(m.device).eval())
    except (OSError, ValueError) as exc:
        if isinstance(exc, ModelSpecError):
            raise
        raise ModelSpecError(f"--model {m.name}: could not load {m.model}: {exc}") from None


def chat_text(proc: Any, question: str) -> str:
    """The prompt with the processor's audio slot: its chat template with an audio part, else our own layout
    (the audio first, as 04 builds a released model's prompts: released.chat_prompt)."""
    from paraqa_utils.finetune.released import chat_prompt

    token = getattr(proc, "audio_token", None) or getattr(proc, "speech_token", None) or "<|AUDIO|>"
    conv = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": question}]}]
    return chat_prompt(proc, token, conv, True)


def answer(m: HfAudioLLM, items: Sequence[dict[str, Any]], cache_dir: Any = None) -> list[dict[str, Any]]:
    """One prediction row per item (endpoint.answer's row); a clip that cannot be read is that item's `error`."""
    import torch

    from paraqa_utils.evaluate.endpoint import pieces

    proc, model = load(m)
    proc.tokenizer.padding_side = "left"  # generation continues every row from its last real token
    rate = int(getattr(proc.feature_extractor, "sampling_rate", 16000))
    rows: list[dict[str, Any]] = []
    texts: list[list[str]] = []
    work: list[tuple[int, str, Any]] = []  # (row index, prompt, audio piece): one generate row each
    step = max(1, m.batch_size)

    # Qwen2-Audio's processor takes `audio`, MERaLiON's own `audios`
    import inspect

    audio_kw = "audios" if "audios" in inspect.signature(proc.__call__).parameters else "audio"

    def run(batch: list[tuple[int, str, Any]]) -> None:
        inputs = proc(text=[t for _, t, _ in batch], **{audio_kw: [a for _, _, a in batch]}, sampling_rate=rate,
                      padding=True, return_tensors="pt").to(m.device)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=m.max_new_tokens, do_sample=False)
        for (k, _, _), text in zip(batch, proc.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                                            skip_special_tokens=True)):
            texts[k].append(text.strip())

    for it in items:
        row = {"id": it["id"], "model": m.name, "test_set": it["test_set"], "question_type": it.get("question_type"),
               "answer": "", "audio_policy": None, "explicit": bool(m.explicit and it.get("explicit_block")),
               "error": None}
        rows.append(row)
        texts.append([])
        try:
            parts, row["audio_policy"] = pieces(load_audio(it["audio_path"], rate), m)
        except Exception as exc:
            row["error"] = f"audio: {type(exc).__name__}: {exc}"
            continue
        work += [(len(rows) - 1, chat_text(proc, prompt_text(it, m.explicit)), part) for part in parts]
        while len(work) >= step:  # audio is read as it is answered, never the whole set at once
            run(work[:step])
            del work[:step]
    if work:
        run(work)
    for row, parts_text in zip(rows, texts):
        row["answer"] = " ".join(t for t in parts_text if t)
    return rows
