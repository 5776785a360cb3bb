"""A released audio-LLM's audio side as 04's Speech-LLM uses it: its frozen encoder on the processor's features
(cached per clip like Whisper's), and its projector in the adapter's place (released.py assembles them)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from paraqa_utils.audio import SAMPLE_RATE_HZ


@dataclass(frozen=True)
class Family:
    """Where a released class keeps its parts (module paths in the loaded model) and how it places audio."""
    name: str
    remote_code: bool
    encoder: str  # the frozen audio encoder (+ for MERaLiON its LayerNorm, `encoder_norm`)
    projector: str  # the adapter's part
    language_model: str  # the decoder stack that LoRA targets
    lm_head: str  # "" when `language_model` is a whole causal LM (head included)
    encoder_norm: str = ""



class ReleasedEncoder(nn.Module):
    """The checkpoint's frozen audio encoder on the processor's features, as EncoderCache expects an encoder.

    Each clip gives `stack_k * n_tokens(len(wave))` states: Qwen2-Audio's pooled frames (one per audio token, up to
    750 for its 30 s window), MERaLiON's encoder frames after its LayerNorm (1500 per 30 s chunk, 15 per token).
    """
    tap_layer = 0
    whisper = None

    def __init__(self, family: Family, encoder: nn.Module, norm: nn.Module | None, feature_extractor: Any,
                 model_id: str, processor: Any):
        super().__init__()
        self.family = family
        self.encoder = encoder.eval().requires_grad_(False)
        self.norm = norm.eval().requires_grad_(False) if norm is not None else None
        self.feature_extractor = feature_extractor
        self.model_id = model_id
        self.dim = int(getattr(encoder.config, "d_model"))
        self.rate = int(getattr(feature_extractor, "sampling_rate", SAMPLE_RATE_HZ))
        self.window = int(getattr(feature_extractor, "n_samples", 30 * self.rate))  # 30 s of samples
        self.hop = int(getattr(feature_extractor, "hop_length", 160))
        if family.name == "meralion":
            self.per_chunk = int(getattr(processor, "fixed_speech_embeds_length", 100))
            limit = int(getattr(processor, "time_duration_limit", 30)) // int(getattr(processor, "whisper_chunk_size", 30))
            self.max_chunks = max(1, limit)
            self.stack_k = int(encoder.config.max_source_positions) // self.per_chunk
            self.normalize = {"do_normalize": bool(getattr(processor, "do_normalize", False))}
        else:
            self.stack_k = 1
            self.normalize = {}

    def n_tokens(self, n_samples: int) -> int:
        """Audio tokens the processor puts in the prompt for a clip of n_samples (16 kHz)."""
        if self.family.name == "meralion":
            return self.per_chunk * min(self.max_chunks, max(1, math.ceil(n_samples / self.window)))
        frames = min(max(1, math.ceil(min(n_samples, self.window) / self.hop)), self.window // self.hop)
        return max(1, ((frames - 1) // 2 + 1 - 2) // 2 + 1)  # the tower's convolution, then its 2x pooling

    @torch.no_grad()
    def encode_many(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        p = next(self.encoder.parameters())
        out: list[torch.Tensor] = []
        for i in range(0, len(waves), 8):  # 30 s windows, so a few clips per call keeps a GPU's memory flat
            out += self._encode([np.asarray(w, dtype=np.float32) for w in waves[i:i + 8]], p)
        return out

    def _encode(self, waves: list[np.ndarray], p: torch.Tensor) -> list[torch.Tensor]:
        if self.family.name == "meralion":
            n_chunks = [self.n_tokens(len(w)) // self.per_chunk for w in waves]
            chunks = [w[c * self.window:(c + 1) * self.window] for w, n in zip(waves, n_chunks) for c in range(n)]
            chunks = [c if len(c) else np.zeros(1, np.float32) for c in chunks]
            feats = self.feature_extractor(chunks, sampling_rate=self.rate, return_tensors="pt", padding="max_length",
                                           return_attention_mask=True, **self.normalize)
            states = self.encoder(feats.input_features.to(p.device, p.dtype),
                                  attention_mask=feats.attention_mask.to(p.device)).last_hidden_state
            states = self.norm(states) if self.norm is not None else states
            per = iter(states)
            return [torch.cat([next(per) for _ in range(n)]) for n in n_chunks]
        from transformers.masking_utils import create_bidirectional_mask

        feats = self.feature_extractor([w[:self.window] for w in waves], sampling_rate=self.rate, return_tensors="pt",
                                       padding="max_length", return_attention_mask=True)
        lengths = feats.attention_mask.sum(-1)
        conv = (lengths - 1) // 2 + 1  # as the released forward masks the tower's padded frames
        n_pos = (feats.input_features.shape[-1] - 2) // 2 + 1
        mask2d = (torch.arange(n_pos)[None, :] < conv[:, None]).long().to(p.device)
        dummy = torch.zeros((len(waves), n_pos, 1), dtype=p.dtype, device=p.device)
        mask = create_bidirectional_mask(config=self.encoder.config, inputs_embeds=dummy, attention_mask=mask2d)
        states = self.encoder(feats.input_features.to(p.device, p.dtype), attention_mask=mask).last_hidden_state
        return [s[:self.n_tokens(len(w))] for s, w in zip(states, waves)]


class BatchedProjector(nn.Module):
    """The released projector on one clip's (T, d) states: it takes (batch, T, d), as inside its own model."""

    def __init__(self, projector: nn.Module, stack_k: int):
        super().__init__()
        self.module = projector
        self.stack_k = stack_k

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.module(states[None])[0]
