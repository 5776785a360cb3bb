"""Read-outs of the frozen Whisper encoder that reach the LLM beside the adapter's outputs (04's `readouts` knob).

The paper's model (MERaLiON) hears because it was pre-trained on transcription, spoken QA and paralinguistic tasks at
a scale a 2-core CPU cannot repeat. Our base phase (`paraqa_utils.finetune.base`) gets there with two read-outs
that use what the frozen encoder already knows, in the spirit of DeSTA2 and of Qwen-Audio's "Whisper features +
text" designs (PAPER.md's related work), not a copy of either:

- `transcript`: the Speech-LLM's own Whisper decoder transcribes the clip greedily from the very encoder states the
  adapter reads (unpadded, as AudioEncoder computes them), and the transcript's LLM tokens follow the adapter
  positions in the audio span. Nothing outside the model is asked: it is the speech model's second output head.
- `labels`: one utterance token per facet (gender, emotion). A linear head on the clip's pooled encoder states
  (mean and standard deviation over frames, of the top layer and of the middle one, where paralinguistic
  information is richer: chosen on the demo's dev split, where emotion UA is 0.48 from both, 0.33 from the top)
  gives the class, and the token is the LLM's own embedding of the class
  word. The heads are fitted in the base phase on the train split's
  corpus labels only, then frozen.

Both are off by default for the paper's adapter-only path (`readouts: ""`); the demo profiles turn them on.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

READOUTS = ("transcript", "labels")


class ReadoutError(ValueError):
    """A read-out that cannot be built (unknown name, a Whisper checkpoint without its decoder, no classes)."""


def parse_readouts(spec: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in (spec or "").split(",") if n.strip())
    unknown = [n for n in names if n not in READOUTS]
    if unknown:
        raise ReadoutError(f"readouts {unknown}: known read-outs are {list(READOUTS)} (comma-separated, or empty)")
    return names


# ------------------------------------------------------------------------------------------------ transcript
class WhisperTranscriber:
    """Greedy Whisper decoding from given encoder states (no 30 s padding), batched over clips of equal length."""

    def __init__(self, whisper: nn.Module, model_id: str, max_new_tokens: int = 224):
        self.decoder = whisper.model.decoder.eval().requires_grad_(False)
        self.d_model = int(whisper.config.d_model)
        import inspect

        # transformers 5.x renamed the decoder's past_key_values to cache (the old name warns, then goes)
        self._cache_arg = "cache" if "cache" in inspect.signature(self.decoder.forward).parameters else "past_key_values"
        self.proj_out = whisper.proj_out.eval().requires_grad_(False)
        self.model_id = model_id
        gen = whisper.generation_config
        self.eos = int(gen.eos_token_id)
        lang = (getattr(gen, "lang_to_id", None) or {}).get("<|en|>")
        task = (getattr(gen, "task_to_id", None) or {}).get("transcribe")
        notime = getattr(gen, "no_timestamps_token_id", None)
        self.prompt = [int(gen.decoder_start_token_id)] + [int(t) for t in (lang, task, notime) if t is not None]
        # the decoder's positional table bounds prompt + transcript (448 for real Whisper checkpoints)
        self.max_new_tokens = min(max_new_tokens, int(whisper.config.max_target_positions) - len(self.prompt))
        suppress = set(getattr(gen, "suppress_tokens", None) or [])
        vocab = self.proj_out.weight.shape[0]
        self.suppress = torch.tensor(sorted(t for t in suppress if t < vocab), dtype=torch.long)
        self._tok = None
        self.tokenizer_source = model_id

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            from transformers import AutoTokenizer

            try:
                self._tok = AutoTokenizer.from_pretrained(self.tokenizer_source)
            except (OSError, ValueError) as exc:
                raise ReadoutError(f"the transcript read-out needs the Whisper checkpoint's tokenizer files, and "
                                   f"{self.tokenizer_source} has none loadable ({type(exc).__name__}); drop transcript "
                                   "from readouts or use a full checkpoint") from None
        return self._tok

    def budget(self, n_frames: int) -> int:
        """Tokens allowed for a clip: room for fast speech (5 tokens a second, 50 encoder frames a second), capped."""
        return min(self.max_new_tokens, 12 + n_frames * 5 // 50)

    @torch.no_grad()
    def transcribe(self, states: Sequence[torch.Tensor]) -> list[str]:
        """One transcript per (T_i, d) encoder output."""
        out: list[str] = [""] * len(states)
        by_len: dict[int, list[int]] = {}
        for i, s in enumerate(states):
            by_len.setdefault(int(s.shape[0]), []).append(i)
        p = next(self.decoder.parameters())
        for length, idx in sorted(by_len.items()):
            for start in range(0, len(idx), 16):
                part = idx[start:start + 16]
                # the encoder's top layer only (states may also carry a tapped layer: AudioEncoder.tap_layer)
                enc = torch.stack([states[i][:, :self.d_model] for i in part]).to(p.device, p.dtype)
                for i, ids in zip(part, self._greedy(enc, self.budget(length))):
                    out[i] = self.tokenizer.decode(collapse_loop(ids), skip_special_tokens=True).strip()
        return out

    def _greedy(self, enc: torch.Tensor, budget: int) -> list[list[int]]:
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        n = enc.shape[0]
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        ids = torch.tensor([self.prompt] * n, device=enc.device)
        done = torch.zeros(n, dtype=torch.bool, device=enc.device)
        result: list[list[int]] = [[] for _ in range(n)]
        for _ in range(budget):
            h = self.decoder(input_ids=ids, encoder_hidden_states=enc, **{self._cache_arg: cache}, use_cache=True)
            cache = getattr(h, "cache", None) or h.past_key_values
            logits = self.proj_out(h.last_hidden_state[:, -1]).float()
            if len(self.suppress):
                logits[:, self.suppress.to(logits.device)] = float("-inf")
            nxt = logits.argmax(-1)
            for row in range(n):
                if not done[row]:
                    if int(nxt[row]) == self.eos:
                        done[row] = True
                    else:
                        result[row].append(int(nxt[row]))
            if bool(done.all()):
                break
            ids = nxt[:, None]
        return result


def collapse_loop(ids: Sequence[int], min_block: int = 3) -> list[int]:
    """Greedy decoding without Whisper's temperature fallback can fall into a loop that runs to the token budget
    ("A. B. A. B. A. B. A"): keep the first copy of a block that repeats, without a break, up to the end."""
    ids = list(ids)
    n = len(ids)
    for start in range(n):
        for block in range(min_block, (n - start) // 2 + 1):
            if all(ids[j] == ids[j - block] for j in range(start + block, n)):
                return ids[:start + block]
    return ids


class TranscriptCache:
    """Transcripts per clip, on disk beside the encoder cache (keyed by audio hash and the Whisper checkpoint)."""

    def __init__(self, transcriber: WhisperTranscriber, folder: Path | None):
        self.transcriber = transcriber
        self.folder = Path(folder) if folder else None
        self.tag = hashlib.sha256(f"{transcriber.model_id}|greedy-v2|{transcriber.max_new_tokens}".encode()).hexdigest()[:12]
        self.memory: dict[str, str] = {}
        self.n_decoded = 0

    def _path(self, audio_key: str) -> Path | None:
        return self.folder / f"{audio_key}_{self.tag}.json" if self.folder else None

    def lookup(self, audio_key: str) -> str | None:
        if audio_key in self.memory:
            return self.memory[audio_key]
        p = self._path(audio_key)
        if p is not None and p.exists():
            try:
                self.memory[audio_key] = json.loads(p.read_text())["text"]
                return self.memory[audio_key]
            except (ValueError, KeyError):  # a torn write: decode again
                p.unlink()
        return None

    def fill(self, keys_and_states: Sequence[tuple[str, torch.Tensor]]) -> None:
        todo = [(k, s) for k, s in keys_and_states if self.lookup(k) is None]
        todo = list(dict(todo).items())
        if not todo:
            return
        texts = self.transcriber.transcribe([s for _, s in todo])
        self.n_decoded += len(todo)
        for (k, _), text in zip(todo, texts):
            self.memory[k] = text
            p = self._path(k)
            if p is not None:
                p.parent.mkdir(parents=True, exist_ok=True)
                tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"text": text}))
                tmp.replace(p)


def transcript_text(text: str) -> str:
    """How the transcript read-out sits in the audio span (after the adapter positions)."""
    return f" {text.strip()}\n" if text.strip() else "\n"


# ------------------------------------------------------------------------------------------------ both, per run
class Readouts:
    """What encode_records asks of the model's read-outs: utterance-token count and each clip's transcript ids."""

    def __init__(self, names: Sequence[str], llm_tokenizer: Any, transcripts: TranscriptCache | None,
                 label_readout: Any):
        self.names = tuple(names)
        self.tok = llm_tokenizer
        self.transcripts = transcripts if "transcript" in self.names else None
        self.labels = label_readout if "labels" in self.names else None

    @property
    def n_tokens(self) -> int:
        return self.labels.n_tokens if self.labels is not None else 0

    def prepare(self, clips: Sequence[tuple[str, Path]], encoder_states: Any) -> None:
        """Transcribe the clips not yet in the transcript cache; `encoder_states(list of (key, path))` gives states."""
        if self.transcripts is None:
            return
        todo = [(k, p) for k, p in dict(clips).items() if self.transcripts.lookup(k) is None]
        for start in range(0, len(todo), 64):  # bounded memory on large corpora
            part = todo[start:start + 64]
            self.transcripts.fill(list(zip([k for k, _ in part], encoder_states(part))))

    def transcript(self, audio_key: str) -> str | None:
        return self.transcripts.lookup(audio_key) if self.transcripts is not None else None

    def transcript_ids(self, audio_key: str) -> list[int]:
        if self.transcripts is None:
            return []
        text = self.transcripts.lookup(audio_key)
        if text is None:
            raise ReadoutError(f"no transcript read-out for audio {audio_key}: prepare() was not called for it")
        return self.tok(transcript_text(text), add_special_tokens=False)["input_ids"]
