"""The audio side of the Speech-LLM: Whisper's frozen encoder on windows of at most 30 s, and the frame-stacking
adapter that projects stacked encoder frames into the LLM's embedding space."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from paraqa_utils.audio import SAMPLE_RATE_HZ

MEL_HOP = 160  # Whisper: one log-mel frame per 10 ms
ENCODER_STRIDE = 2  # Whisper's second convolution halves the frame rate (20 ms per encoder frame)


def chunk_samples(stack_k: int) -> int:
    """Audio samples behind one adapter output (k encoder frames; 0.3 s for k = 15)."""
    return stack_k * ENCODER_STRIDE * MEL_HOP


def window_samples(stack_k: int, max_source_positions: int = 1500) -> int:
    """Samples per encoder window: the longest multiple of the chunk that fits the positional table (30 s, k=15)."""
    return (max_source_positions // stack_k) * chunk_samples(stack_k)


def n_audio_tokens(n_samples: int, stack_k: int) -> int:
    """Adapter outputs for a clip: windows are whole chunks, so only the last one is padded (at least 1)."""
    return max(1, math.ceil(n_samples / chunk_samples(stack_k)))


class FrameStackAdapter(nn.Module):
    """Stack k consecutive encoder frames and project them with an MLP into the LLM's embedding space.

    Paper (section 4): Whisper's 1500 frames per 30 s, stacked by 15, give 100 LLM positions.
    """

    def __init__(self, encoder_dim: int, llm_dim: int, stack_k: int, hidden_dim: int = 0):
        super().__init__()
        self.stack_k = stack_k
        hidden_dim = hidden_dim or llm_dim
        self.proj = nn.Sequential(nn.Linear(stack_k * encoder_dim, hidden_dim), nn.GELU(),
                                  nn.Linear(hidden_dim, llm_dim))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(T, d) encoder frames, T a multiple of k -> (T / k, llm_dim)."""
        t, d = states.shape
        if t % self.stack_k:
            raise ValueError(f"{t} encoder frames is not a multiple of stack_k={self.stack_k}")
        return self.proj(states.reshape(t // self.stack_k, self.stack_k * d))


class AudioEncoder(nn.Module):
    """Whisper's encoder (frozen) run on windows of at most 30 s, without padding short clips to 30 s."""

    def __init__(self, encoder: nn.Module, feature_extractor: Any, stack_k: int, model_id: str,
                 whisper: nn.Module | None = None, tap_layer: int = 0):
        """`tap_layer` > 0: each frame also carries that layer's output (the label read-out reads it: paralinguistic
        information is richer mid-depth than at the top); states are then (T, 2d), and the adapter reads the first d."""
        super().__init__()
        self.tap_layer = tap_layer
        self.encoder = encoder.eval().requires_grad_(False)
        # the whole Whisper model (its decoder serves the transcript read-out), kept out of this module's parameters
        self._whisper = [whisper] if whisper is not None else []
        self.feature_extractor = feature_extractor
        self.stack_k = stack_k
        self.model_id = model_id
        self.dim = encoder.config.d_model
        self.window = window_samples(stack_k, encoder.config.max_source_positions)

    @property
    def whisper(self) -> nn.Module | None:
        """The full Whisper checkpoint the encoder came from (None for an encoder given alone)."""
        return self._whisper[0] if self._whisper else None

    @torch.no_grad()
    def _encode_features(self, feats: torch.Tensor) -> torch.Tensor:
        # HF's WhisperEncoder.forward insists on exactly 3000 mel frames; its modules do not, so run them
        # here with the positional table sliced to the input length (OFFLINE.md; as several open projects do).
        enc = self.encoder
        x = nn.functional.gelu(enc.conv1(feats))
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        tapped = None
        for i, layer in enumerate(enc.layers, 1):
            out = layer(x, None)
            x = out[0] if isinstance(out, tuple) else out  # transformers 4.x layers return tuples
            if i == self.tap_layer:
                tapped = x
        x = enc.layer_norm(x)
        return torch.cat([x, tapped], -1) if tapped is not None else x

    @torch.no_grad()
    def encode_many(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """16 kHz waveforms -> one (T_i, d) tensor each; T_i = k * n_audio_tokens(len(wave_i), k).

        Windows of equal length (all full 30 s windows, typically) go through the encoder as one batch.
        """
        chunk = chunk_samples(self.stack_k)
        pieces: list[tuple[int, int, np.ndarray]] = []  # (clip, window index, padded window)
        n_windows = [0] * len(waves)
        for i, wave in enumerate(waves):
            for start in range(0, max(len(wave), 1), self.window):
                w = np.asarray(wave[start:start + self.window], dtype=np.float32)
                pieces.append((i, n_windows[i], np.pad(w, (0, (-len(w)) % chunk if len(w) else chunk))))
                n_windows[i] += 1
        outs: dict[tuple[int, int], torch.Tensor] = {}
        p = next(self.encoder.parameters())
        for length in sorted({len(w) for _, _, w in pieces}):
            group = [(i, j, w) for i, j, w in pieces if len(w) == length]
            # on a GPU the log-mel STFT runs there too (transformers' torch path); on CPU it is the same code
            feats = self.feature_extractor([w for _, _, w in group], sampling_rate=SAMPLE_RATE_HZ, padding=False,
                                           return_tensors="pt", device=str(p.device)).input_features
            assert feats.shape[-1] == length // MEL_HOP, (feats.shape, length)
            states = self._encode_features(feats.to(p.device, p.dtype))
            for (i, j, _), s in zip(group, states):
                outs[(i, j)] = s
        return [torch.cat([outs[(i, j)] for j in range(n)]) for i, n in enumerate(n_windows)]
