"""Fine-tuning data: audio loading, chat prompts with an audio span, truncation, length-grouped batches, encoder cache."""
from __future__ import annotations

import hashlib
import os
import math
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from paraqa_utils import audio
from paraqa_utils.finetune.speech_llm import AUDIO_PLACEHOLDER, IGNORE_INDEX, AudioEncoder, n_audio_tokens


class PromptTooLong(ValueError):
    """The audio span plus the chat template alone exceed max_seq_len: no text cut can make the sample fit."""


# ------------------------------------------------------------------------------------------------ prompts
TEMPLATE_SYSTEM = "template"  # system_prompt value: the chat template's own system turn


def prompt_format(model: Any, cfg: Any) -> "PromptFormat":
    """The prompt format of a fine-tuning config (its max_seq_len and system_prompt) for a SpeechLLM (a released
    checkpoint's is its processor's) or a tokenizer."""
    released = getattr(model, "released", None)
    if released is not None:
        return released.prompt_format(model.audio_encoder, cfg)
    return PromptFormat(getattr(model, "tokenizer", model), cfg.max_seq_len, cfg.system_prompt)


def user_content(instruction: str, explicit_block: str | None) -> str:
    """User turn = audio placeholder, then the explicit labels (conditions that use them), then the instruction."""
    block = f"{explicit_block}\n" if explicit_block else ""
    return f"{AUDIO_PLACEHOLDER}\n{block}{instruction}"


@dataclass
class Encoded:
    """One tokenized example: ids with a placeholder span of n_audio positions, labels only on the answer."""
    uid: str
    audio_path: Path
    audio_key: str
    input_ids: list[int]
    labels: list[int]
    audio_start: int
    n_audio: int
    prompt: str
    truncated: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_label_tokens(self) -> int:
        return sum(t != IGNORE_INDEX for t in self.labels)


class PromptFormat:
    """Renders the LLM's own chat template around the user turn and splits it at the audio placeholder."""
    audio_fill_id: int | None = None  # the id written at audio positions (embed() replaces them): the pad id

    def __init__(self, tokenizer: Any, max_seq_len: int, system_prompt: str = TEMPLATE_SYSTEM):
        """`system_prompt`: TEMPLATE_SYSTEM keeps the chat template's own system turn (SmolLM2's default is 19
        tokens, a fifth of a demo example); any other text, "" included, is sent as the system turn."""
        self.tok = tokenizer
        self.max_seq_len = max_seq_len
        self.system = system_prompt

    def _ids(self, text: str) -> list[int]:
        # The rendered template already holds BOS etc. as text, so no special tokens are added here.
        return self.tok(text, add_special_tokens=False)["input_ids"] if text else []

    def _render(self, content: str, target: str | None) -> tuple[str, str]:
        user = [{"role": "user", "content": content}]
        if self.system != TEMPLATE_SYSTEM:
            user = [{"role": "system", "content": self.system}] + user
        if getattr(self.tok, "chat_template", None):
            prompt = self.tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
            if target is None:
                return prompt, ""
            full = self.tok.apply_chat_template(user + [{"role": "assistant", "content": target}], tokenize=False)
            if full.startswith(prompt):
                return prompt, full[len(prompt):]  # the answer with the template's end-of-turn marker
            return prompt, target + (self.tok.eos_token or "")
        system = f"{self.system}\n" if self.system not in ("", TEMPLATE_SYSTEM) else ""
        prompt = f"{system}User: {content}\nAssistant:"  # a base LM without a chat template
        return prompt, ("" if target is None else f" {target}{self.tok.eos_token or ''}")

    def n_audio(self, n_samples: int, stack_k: int) -> int:
        """Audio positions of a clip: one per adapter output."""
        return n_audio_tokens(n_samples, stack_k)

    def stop_ids(self) -> list[int]:
        """Token ids that end an answer: EOS and the first token the template puts after an assistant turn."""
        _, answer = self._render(AUDIO_PLACEHOLDER, "x")
        tail = self._ids(answer[1:]) if answer.startswith("x") else []
        ids = {self.tok.eos_token_id, *(tail[:1])}
        return sorted(i for i in ids if i is not None)

    def encode(self, uid: str, audio_path: Path, audio_key: str, n_audio: int, content: str,
               target: str | None = None, meta: dict[str, Any] | None = None,
               readout_ids: Sequence[int] = ()) -> Encoded:
        """Tokenize; over max_seq_len, cut the answer's tail, then the start of the user text, never the audio.

        `readout_ids` (the transcript read-out's tokens) follow the n_audio adapter positions inside the audio span.
        """
        prompt, answer = self._render(content, target)
        if prompt.count(AUDIO_PLACEHOLDER) != 1:
            raise ValueError(f"{uid}: the rendered prompt must hold the audio placeholder exactly once")
        pre, rest = prompt.split(AUDIO_PLACEHOLDER)
        user_text = content.split(AUDIO_PLACEHOLDER, 1)[1].rstrip()
        between = ""  # template text between the audio and the user text (a processor's audio end marker)
        if not rest.startswith(user_text):
            at = rest.find(user_text.lstrip("\n")) if user_text.strip() else -1
            # a template that rewrites the content has no separable user text
            between, user_text = (rest[:at], user_text.lstrip("\n")) if at >= 0 else ("", "")
        pre_ids, user_ids = self._ids(pre), self._ids(user_text)
        between_ids = self._ids(between)
        suffix_ids, answer_ids = self._ids(rest[len(between) + len(user_text):]), self._ids(answer)
        n_span = n_audio + len(readout_ids) + len(between_ids)
        over = len(pre_ids) + n_span + len(user_ids) + len(suffix_ids) + len(answer_ids) - self.max_seq_len
        truncated = over > 0
        if over > 0 and len(answer_ids) > 1:
            cut = min(over, len(answer_ids) - 1)  # keep at least one answer token to learn from
            answer_ids, over = answer_ids[:len(answer_ids) - cut], over - cut
        if over > 0 and user_ids:
            cut = min(over, len(user_ids))  # the explicit labels come first, the question last: keep the question
            user_ids, over = user_ids[cut:], over - cut
        if over > 0:
            raise PromptTooLong(f"{uid}: {n_audio} audio positions + the chat template need "
                                f"{self.max_seq_len + over} > max_seq_len={self.max_seq_len} tokens")
        fill = self.tok.pad_token_id if self.audio_fill_id is None else self.audio_fill_id
        prompt_ids = pre_ids + [fill] * n_audio + list(readout_ids) + between_ids + user_ids + suffix_ids
        return Encoded(uid, audio_path, audio_key, prompt_ids + answer_ids,
                       [IGNORE_INDEX] * len(prompt_ids) + answer_ids, len(pre_ids), n_audio, content,
                       truncated, dict(meta or {}))


def _missing(counts: dict[str, Any], uid: str) -> None:
    counts["n_missing_audio"] += 1
    ids = counts.setdefault("missing_audio_ids", [])
    if len(ids) < 20:  # a few ids to look at, not a copy of a broken corpus
        ids.append(uid)


def encode_records(records: Iterable[dict[str, Any]], fmt: PromptFormat, run_dir: Path, stack_k: int,
                   explicit: bool, train: bool, counts: dict[str, Any], readout: Any = None) -> list[Encoded]:
    """Train examples (03's `example` rows) or test items into Encoded samples; bad input is skipped and counted.

    `counts` collects n_missing_audio (+ their ids), n_skipped_too_long and n_truncated. `readout` (the model's
    read-outs, condition.Readouts) adds its utterance tokens to the audio span and its transcript tokens after it.
    """
    for k in ("n_missing_audio", "n_skipped_too_long", "n_truncated"):
        counts.setdefault(k, 0)
    out: list[Encoded] = []
    keys: dict[Path, str] = {}
    for rec in records:
        uid = rec["example_id"] if train else rec["item_id"]
        path = audio.resolve_audio(run_dir, rec["audio_path"])
        if not path.is_file():
            _missing(counts, uid)
            continue
        if path not in keys:
            keys[path] = audio.content_hash(path)
        text = rec["instruction"] if train else rec["question"]
        # Test items carry the annotator's labels for every clip; only `explicit` conditions see them.
        block = rec.get("explicit_block") if (train or explicit) else None
        meta = {k: rec.get(k) for k in ("condition", "task")} if train else {
            k: rec.get(k) for k in ("test_set", "question_type", "clip_id")}
        try:
            n_samples = audio.n_samples(path)
        except (RuntimeError, audio.AudioError):  # soundfile cannot read it: as good as missing
            _missing(counts, uid)
            continue
        try:
            n_audio = fmt.n_audio(n_samples, stack_k) + (readout.n_tokens if readout else 0)
            extra = readout.transcript_ids(keys[path]) if readout else ()
            enc = fmt.encode(uid, path, keys[path], n_audio, user_content(text, block),
                             rec["target"] if train else None, meta, extra)
        except PromptTooLong:
            counts["n_skipped_too_long"] += 1
            continue
        counts["n_truncated"] += int(enc.truncated)
        out.append(enc)
    return out


# ------------------------------------------------------------------------------------------------ batches
def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                           group_by_length: bool = True, mega_batches: int = 50) -> list[list[int]]:
    """Shuffled batches whose members have similar lengths (less padding), reproducible from (seed, epoch)."""
    rng = random.Random(seed * 100_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if group_by_length:
        span = batch_size * mega_batches
        idx = [i for s in range(0, len(idx), span) for i in sorted(idx[s:s + span], key=lambda i: -lengths[i])]
    batches = [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]
    rng.shuffle(batches)  # sorted mega-batches would otherwise feed long batches first, every epoch
    return batches


def collate(samples: Sequence[Encoded], pad_id: int, pad_left: bool = False) -> dict[str, torch.Tensor]:
    """Pad to the longest sample (left for generation, right for training); audio_mask marks adapter positions."""
    n = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), n), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((len(samples), n), dtype=torch.long)
    audio = torch.zeros((len(samples), n), dtype=torch.bool)
    for row, s in enumerate(samples):
        off = n - len(s.input_ids) if pad_left else 0
        ids[row, off:off + len(s.input_ids)] = torch.tensor(s.input_ids)
        labels[row, off:off + len(s.labels)] = torch.tensor(s.labels)
        attn[row, off:off + len(s.input_ids)] = 1
        audio[row, off + s.audio_start:off + s.audio_start + s.n_audio] = True
    return {"input_ids": ids, "attention_mask": attn, "labels": labels, "audio_mask": audio}


# ------------------------------------------------------------------------------------------------ cache
class EncoderCache:
    """Encoder outputs per clip (the encoder is frozen): memory LRU, then disk, then the encoder itself."""

    def __init__(self, encoder: AudioEncoder, folder: Path | None, enabled: bool = True, max_in_memory: int = 256,
                 n_extra_tokens: int = 0):
        self.encoder = encoder
        self.n_extra_tokens = n_extra_tokens  # audio positions filled from the states by read-outs, not the adapter
        self.enabled = enabled
        self.folder = Path(folder) if folder else None
        self.max_in_memory = max_in_memory
        self.memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        tap = f"|tap{encoder.tap_layer}" if getattr(encoder, "tap_layer", 0) else ""
        self.tag = hashlib.sha256(f"{encoder.model_id}|{encoder.stack_k}|"
                                  f"{next(encoder.parameters()).dtype}{tap}".encode()).hexdigest()[:12]
        self.hits = self.misses = 0
        self.encode_seconds = 0.0

    def get(self, samples: Sequence[Encoded]) -> list[torch.Tensor]:
        """Encoder states for each sample's clip, computing the missing ones in one batched call."""
        out = self.states_for([(s.audio_key, s.audio_path) for s in samples])
        for s, st in zip(samples, out):
            assert st.shape[0] == (s.n_audio - self.n_extra_tokens) * self.encoder.stack_k, (s.uid, st.shape, s.n_audio)
        return out

    def states_for(self, clips: Sequence[tuple[str, Path]]) -> list[torch.Tensor]:
        """Encoder states for (audio content hash, path) pairs."""
        found: dict[str, torch.Tensor] = {}
        todo: dict[str, Path] = {}
        keys = [f"{audio_key}_{self.tag}" for audio_key, _ in clips]
        for key, (_, path) in zip(keys, clips):
            if not self.enabled:
                todo[key] = path
            elif key in self.memory:
                self.memory.move_to_end(key)
                found[key] = self.memory[key]
            elif self.folder and (self.folder / f"{key}.pt").exists():
                found[key] = self._remember(key, torch.load(self.folder / f"{key}.pt"))
            else:
                todo[key] = path
        self.misses += sum(k in todo for k in keys)
        self.hits += len(keys) - sum(k in todo for k in keys)
        if todo:
            t0 = time.perf_counter()
            states = self.encoder.encode_many([audio.load_audio(p, check=False) for p in todo.values()])
            self.encode_seconds += time.perf_counter() - t0
            for key, st in zip(todo, states):
                st = st.detach().cpu() if st.device.type != "cpu" and self.enabled else st
                found[key] = st
                if self.enabled:
                    self._remember(key, st)
                    if self.folder:
                        self.folder.mkdir(parents=True, exist_ok=True)
                        tmp = self.folder / f".{key}.{os.getpid()}.tmp"  # DDP ranks share the folder
                        torch.save(st.detach().clone(), tmp)
                        tmp.replace(self.folder / f"{key}.pt")
        return [found[k] for k in keys]

    def _remember(self, key: str, states: torch.Tensor) -> torch.Tensor:
        self.memory[key] = states
        while len(self.memory) > self.max_in_memory:
            self.memory.popitem(last=False)
        return states

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {"encoder_cache_hits": self.hits, "encoder_cache_misses": self.misses,
                "encoder_cache_hit_rate": round(self.hits / total, 4) if total else None,
                "encoder_seconds": round(self.encode_seconds, 3)}


def n_steps_per_epoch(n_samples: int, batch_size: int, grad_accum: int) -> int:
    return max(1, math.ceil(math.ceil(n_samples / batch_size) / grad_accum))
