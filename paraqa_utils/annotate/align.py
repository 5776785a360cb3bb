"""Forced alignment of ASR words to the audio with a CTC model (wav2vec2-style, transformers), our own Viterbi.

torchaudio's `forced_align` would do the search, but torchaudio has no build for the main environment's torch
(its newest release, 2.11, pins torch 2.11), so the trellis below is ours: the best path through the CTC
emissions that spells the transcript's characters in order, blanks allowed between and around them. Each word
takes the frames of its first to its last character.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

BLANK_NAMES = ("<pad>", "<blank>", "[PAD]", "<s>")
WORD_DELIMITER = "|"


class AlignError(RuntimeError):
    pass


def ctc_align(log_probs: np.ndarray, tokens: Sequence[int], blank: int) -> list[tuple[int, int]]:
    """(first frame, last frame) of each token on the best CTC path that emits `tokens` in order.

    States are the usual blank-interleaved sequence (blank, t1, blank, t2, ..., blank); a token may repeat over
    consecutive frames, and two equal neighbours need a blank between them. Raises AlignError when the audio
    has fewer frames than the transcript needs.
    """
    T, n = log_probs.shape[0], len(tokens)
    if n == 0:
        return []
    states = [blank] * (2 * n + 1)
    states[1::2] = list(tokens)
    need = n + sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)
    if T < need:
        raise AlignError(f"{T} frames cannot hold {n} tokens ({need} frames needed)")
    S = len(states)
    neg = -np.inf
    score = np.full((T, S), neg)
    back = np.zeros((T, S), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    emit = log_probs[:, states]
    score[0, 0], score[0, 1] = emit[0, 0], emit[0, 1]
    skip = np.array([s >= 2 and states[s] != blank and states[s] != states[s - 2] for s in range(S)])
    for t in range(1, T):
        prev = score[t - 1]
        cand = np.stack([prev, np.concatenate([[neg], prev[:-1]]),
                         np.where(skip, np.concatenate([[neg, neg], prev[:-2]]), neg)])
        back[t] = np.argmax(cand, axis=0)
        score[t] = cand[back[t], np.arange(S)] + emit[t]
    s = S - 1 if score[-1, S - 1] >= score[-1, S - 2] else S - 2
    spans: dict[int, list[int]] = {}
    for t in range(T - 1, -1, -1):
        if s % 2 == 1:
            spans.setdefault(s // 2, [t, t])[0] = t
        s -= int(back[t, s])
    return [(spans[k][0], spans[k][1]) for k in range(n)]


class CtcAligner:
    """A transformers CTC checkpoint (Wav2Vec2ForCTC and the like) and its character vocabulary."""

    def __init__(self, spec: str, device: str = "cpu"):
        from transformers import AutoModelForCTC, AutoProcessor

        src = str(Path(spec).expanduser().resolve()) if Path(spec).expanduser().exists() else spec
        try:
            self.processor = AutoProcessor.from_pretrained(src)
            self.model, info = AutoModelForCTC.from_pretrained(src, output_loading_info=True)
        except Exception as exc:
            raise AlignError(f"could not load CTC alignment model '{spec}': {type(exc).__name__}: {exc}") from None
        if info.get("missing_keys"):
            raise AlignError(f"'{spec}' lacks {sorted(info['missing_keys'])[:4]}: its CTC head would be random")
        self.model.to(device).eval()
        self.spec, self.device = spec, device
        self.vocab = self.processor.tokenizer.get_vocab()
        self.blank = next((self.vocab[b] for b in BLANK_NAMES if b in self.vocab), 0)
        self.upper = sum(k.isupper() for k in self.vocab) > sum(k.islower() for k in self.vocab)
        conf = self.model.config
        self.rate = int(getattr(self.processor.feature_extractor, "sampling_rate", 16000))
        self.stride = int(np.prod(getattr(conf, "conv_stride", [320])))  # samples per output frame

    def chars(self, word: str) -> list[int]:
        w = word.upper() if self.upper else word.lower()
        return [self.vocab[c] for c in w if c in self.vocab and c != WORD_DELIMITER]

    def align(self, audio: np.ndarray, words: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The words with start_s/end_s from the alignment; a word with no character in the vocabulary (a number,
        a symbol) keeps its ASR times. The audio is the clip (16 kHz mono), the words its ASR words."""
        import torch

        ids = [self.chars(w["w"]) for w in words]
        flat = [i for seq in ids for i in seq]
        if not flat:
            return [dict(w) for w in words]
        inputs = self.processor.feature_extractor(audio, sampling_rate=self.rate, return_tensors="pt")
        with torch.no_grad():
            logits = self.model(inputs["input_values"].to(self.device)).logits[0].float()
        spans = ctc_align(torch.log_softmax(logits, dim=-1).cpu().numpy(), flat, self.blank)
        out, k, sec = [], 0, self.stride / self.rate
        for w, seq in zip(words, ids):
            row = dict(w)
            if seq:
                first, last = spans[k][0], spans[k + len(seq) - 1][1]
                row["start_s"], row["end_s"] = round(first * sec, 3), round((last + 1) * sec, 3)
                k += len(seq)
            out.append(row)
        return out


def align_clips(aligner: CtcAligner, clips: Sequence[dict], words: dict[str, list],
                cache_dir: Path) -> tuple[dict[str, list], dict[str, str]]:
    """(aligned words per clip, cached per clip and audio; reasons per clip the aligner could not take: those
    keep their ASR times)."""
    from paraqa_utils import runs
    from paraqa_utils.annotate.cache import audio_tag
    from paraqa_utils.audio import load_audio

    out, errors = {}, {}
    for c in clips:
        cid = c["clip_id"]
        if not words.get(cid):
            continue
        f = cache_dir / f"{cid}-{audio_tag(c['audio_file'])}.json"
        if f.exists():
            out[cid] = runs.read_json(f)
            continue
        try:
            out[cid] = aligner.align(load_audio(c["audio_file"], aligner.rate), words[cid])
        except AlignError as exc:
            errors[cid] = f"alignment failed, ASR times kept: {exc}"
            continue
        runs.write_json(f, out[cid])
    return out, errors
