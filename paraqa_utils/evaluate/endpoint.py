"""An OpenAI-compatible audio chat endpoint as a model under evaluation (OpenAI's audio models, vLLM serving
Qwen2-Audio): the clip goes as a base64 WAV `input_audio` content part beside the question, through the
project's LLM client (cache, retries, rate limits; the base64 payload is not counted as prompt tokens).

    openai:<model>@<base_url>[#key_env=VAR,max_audio_s=30,long_audio=first_30s|windows,explicit=true]
"""
from __future__ import annotations

import base64
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from paraqa_utils.audio import SAMPLE_RATE_HZ, load_audio
from paraqa_utils.explicit_merge.exports import user_text
from paraqa_utils.llm import LLMClient, LLMRequest
from paraqa_utils.llm.server import Endpoint

POLICIES = ("first_30s", "windows")


class ModelSpecError(ValueError):
    pass


def spec_options(cls: type, name: str, opts: str, fixed: tuple[str, ...]) -> dict[str, Any]:
    """'#k=v,k=v' of a --model spec, each typed by the model class's field of that name (bool: 1/true/yes);
    an unknown option or a long_audio policy we do not have is a ModelSpecError naming it."""
    types = {f.name: str(f.type) for f in dataclasses.fields(cls) if f.name not in fixed}
    kw: dict[str, Any] = {}
    for item in filter(None, opts.split(",")):
        k, _, v = item.partition("=")
        if k not in types:
            raise ModelSpecError(f"--model {name}: unknown option {k!r} (options: {', '.join(types)})")
        kind = types[k].split(" ")[0]
        try:
            kw[k] = v.lower() in ("1", "true", "yes") if kind == "bool" else {"float": float, "int": int}.get(kind, str)(v)
        except ValueError:
            raise ModelSpecError(f"--model {name}: option {k}={v!r} is not a {kind}") from None
    if kw.get("long_audio", POLICIES[0]) not in POLICIES:
        raise ModelSpecError(f"--model {name}: long_audio={kw['long_audio']!r}: one of {', '.join(POLICIES)}")
    return kw


@dataclass(frozen=True)
class EndpointModel:
    name: str
    model: str
    base_url: str
    key_env: str = ""
    max_audio_s: float = 30.0  # what the model takes in one clip (Qwen2-Audio and Whisper-based models: 30 s)
    long_audio: str = "first_30s"  # a longer clip: its first max_audio_s (AudioBench) or windows of it, answered in turn
    explicit: bool = False  # put 03's explicit labels before the question (never unless asked for)
    max_tokens: int = 256

    @classmethod
    def parse(cls, name: str, spec: str) -> "EndpointModel":
        body, _, opts = spec.partition("#")
        if not body.startswith("openai:") or "@" not in body:
            raise ModelSpecError(f"--model {name}={spec}: expected openai:<model>@<base_url>[#options]")
        model, _, url = body[len("openai:"):].partition("@")
        return cls(name, model, url, **spec_options(cls, name, opts, ("name", "model", "base_url")))

    def describe(self) -> dict[str, Any]:
        return {"kind": "openai-audio-endpoint", "model": self.model, "base_url": self.base_url,
                "max_audio_s": self.max_audio_s, "long_audio": self.long_audio, "explicit": self.explicit}


def wav_b64(audio: np.ndarray) -> str:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE_HZ, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode()


def pieces(audio: np.ndarray, m: EndpointModel) -> tuple[list[np.ndarray], str]:
    """The audio the model gets, and the policy applied ("whole" when it fits)."""
    n = int(m.max_audio_s * SAMPLE_RATE_HZ)
    if len(audio) <= n:
        return [audio], "whole"
    if m.long_audio == "first_30s":
        return [audio[:n]], f"first_{m.max_audio_s:g}s"
    return [audio[i:i + n] for i in range(0, len(audio), n)], f"windows_{m.max_audio_s:g}s"


def prompt_text(item: dict[str, Any], explicit: bool) -> str:
    """The question, after 03's explicit block only when `explicit` (exports.user_text's layout)."""
    return user_text({**item, "explicit_block": item.get("explicit_block") if explicit else None})


def answer(m: EndpointModel, items: Sequence[dict[str, Any]], cache_dir: Path | None, concurrency: int = 8,
           timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """One prediction row per item: {id, model, test_set, question_type, answer, audio_policy, explicit, error}.
    A clip that cannot be read, or an endpoint error, is the item's `error` (recorded, never dropped)."""
    client = LLMClient([Endpoint(base_url=m.base_url, model=m.model, api_key_env=m.key_env)], model=m.model,
                       cache_dir=cache_dir, ledger_name=f"evaluate:{m.name}", concurrency=concurrency,
                       timeout_s=timeout_s, response_format="none", max_invalid_retries=0, progress=False)
    reqs, rows = [], {}
    for it in items:
        row = {"id": it["id"], "model": m.name, "test_set": it["test_set"], "question_type": it.get("question_type"),
               "answer": "", "audio_policy": None, "explicit": bool(m.explicit and it.get("explicit_block")),
               "error": None}
        rows[it["id"]] = row
        try:
            parts, row["audio_policy"] = pieces(load_audio(it["audio_path"]), m)
        except Exception as exc:  # missing or undecodable audio: this item's failure
            row["error"] = f"audio: {type(exc).__name__}: {exc}"
            continue
        for k, part in enumerate(parts):
            content = [{"type": "text", "text": prompt_text(it, m.explicit)},
                       {"type": "input_audio", "input_audio": {"data": wav_b64(part), "format": "wav"}}]
            reqs.append(LLMRequest(messages=[{"role": "user", "content": content}], temperature=0.0,
                                   max_tokens=m.max_tokens, tag=(it["id"], k)))
    answers: dict[str, list[str]] = {}
    for res in client.complete(reqs):
        iid, k = res.tag
        if res.ok and (res.text or "").strip():
            answers.setdefault(iid, []).append(res.text.strip())
        else:
            rows[iid]["error"] = rows[iid]["error"] or f"endpoint: {res.error_kind or 'no text'} {res.error}"[:300]
    for iid, texts in answers.items():
        if rows[iid]["error"] is None:
            rows[iid]["answer"] = " ".join(texts)
    return list(rows.values())
