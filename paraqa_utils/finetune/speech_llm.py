"""The MERaLiON-style Speech-LLM: frozen Whisper encoder -> frame-stacking MLP adapter -> causal LM (+ LoRA)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from paraqa_utils import assets
from paraqa_utils.audio import SAMPLE_RATE_HZ


AUDIO_PLACEHOLDER = "<audio>"  # never tokenized: the prompt is split at it and adapter outputs go in between
IGNORE_INDEX = -100
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


class SpeechLLM(nn.Module):
    """Adapter outputs replace the audio placeholder positions of the prompt; loss on answer tokens only."""

    def __init__(self, audio_encoder: AudioEncoder, llm: nn.Module, tokenizer: Any, stack_k: int,
                 adapter_hidden: int = 0, label_readout: nn.Module | None = None):
        super().__init__()
        self.audio_encoder = audio_encoder
        self.llm = llm
        self.tokenizer = tokenizer
        llm_dim = llm.get_input_embeddings().weight.shape[1]
        self.adapter = FrameStackAdapter(audio_encoder.dim, llm_dim, stack_k, adapter_hidden)
        # readout.LabelReadout: utterance tokens after the adapter's outputs, in the same audio span
        self.label_readout = label_readout

    def audio_embeddings(self, states: torch.Tensor) -> torch.Tensor:
        """One clip's audio span: the adapter's outputs, then the label read-out's utterance tokens (if any)."""
        w = self.adapter.proj[0].weight
        out = self.adapter(states[:, :self.audio_encoder.dim].to(w.device, w.dtype))
        if self.label_readout is not None:
            out = torch.cat([out, self.label_readout(states).to(out.device, out.dtype)])
        return out

    def embed(self, input_ids: torch.Tensor, audio_mask: torch.Tensor,
              audio_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Token embeddings with the audio span of each row filled by that row's adapter outputs."""
        table = self.llm.get_input_embeddings()
        embeds = table(input_ids.masked_fill(audio_mask, 0))
        audio = [self.audio_embeddings(s) for s in audio_states]
        for row, a in enumerate(audio):
            # The placeholder expanded to exactly this many positions when the prompt was built (speech_data).
            n = int(audio_mask[row].sum())
            assert n == a.shape[0], f"row {row}: {n} audio positions in the prompt but {a.shape[0]} adapter outputs"
        return embeds.masked_scatter(audio_mask.unsqueeze(-1), torch.cat(audio).to(embeds.dtype))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                audio_mask: torch.Tensor, audio_states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of answer-token cross-entropies, number of answer tokens)."""
        embeds = self.embed(input_ids, audio_mask, audio_states)
        targets = labels[:, 1:]
        cols = (targets != IGNORE_INDEX).any(0).nonzero()
        first = int(cols.min()) if len(cols) else targets.shape[1] - 1
        # Logits only from the first answer position on: the prompt (audio included) needs none, which
        # saves a (batch, length, vocab) tensor; going through the LM's own forward keeps e.g. Gemma-2's
        # final logit soft-capping.
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False,
                       logits_to_keep=input_ids.shape[1] - first)
        logits = out.logits[:, :-1].float()
        tgt = targets[:, first:]
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                           ignore_index=IGNORE_INDEX, reduction="sum")
        return loss, (tgt != IGNORE_INDEX).sum()

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, audio_mask: torch.Tensor,
                 audio_states: Sequence[torch.Tensor], max_new_tokens: int, stop_ids: Sequence[int],
                 pad_id: int) -> torch.Tensor:
        """Greedy answers for a left-padded batch; returns only the new tokens (batch, <= max_new_tokens)."""
        from transformers import GenerationConfig

        embeds = self.embed(input_ids, audio_mask, audio_states)
        gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                               eos_token_id=list(stop_ids), pad_token_id=pad_id)
        return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, generation_config=gen)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.named_parameters() if p.requires_grad}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto': bf16 on a GPU that supports it (paper-scale models), float32 on CPU (bf16 matmuls are slow there)."""
    if dtype == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


# Frozen parts already loaded in this process, one per kind, reused by the next condition: they never change
# (the notebook trains six conditions in one kernel; reloading costs seconds each on a small CPU).
_LOADED: dict[str, tuple[tuple, Any]] = {}


def _reuse(kind: str, key: tuple, build: Any) -> Any:
    if kind not in _LOADED or _LOADED[kind][0] != key:
        _LOADED.pop(kind, None)  # free the old one before loading the next
        _LOADED[kind] = (key, build())
    return _LOADED[kind][1]


def load_audio_encoder(spec: str, stack_k: int, device: torch.device, dtype: torch.dtype,
                       seed: int = 0, tap: bool = False) -> AudioEncoder:
    """Whisper's encoder from '' (embedded Whisper base), a local folder or a hub id; `tap`: also emit the output
    of the middle layer (AudioEncoder.tap_layer)."""
    encoder, fe, model_id, whisper = _reuse("encoder", (spec, str(device), dtype, seed),
                                            lambda: _load_whisper(spec, device, dtype, seed))
    return AudioEncoder(encoder, fe, stack_k, model_id, whisper, max(1, len(encoder.layers) // 2) if tap else 0)


def _load_whisper(spec: str, device: torch.device, dtype: torch.dtype,
                  seed: int) -> tuple[nn.Module, Any, str, nn.Module]:
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    model_id = assets.resolve_model("whisper", spec)
    model = WhisperForConditionalGeneration.from_pretrained(model_id, dtype=dtype)
    try:
        fe = WhisperFeatureExtractor.from_pretrained(model_id)
    except OSError:  # a folder with weights only: the extractor is fully defined by the mel count
        fe = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return model.get_encoder(), fe, model_id, model


def load_llm(spec: str, device: torch.device, dtype: torch.dtype, seed: int = 0,
             reuse: bool = False) -> tuple[nn.Module, Any, str]:
    """Any AutoModelForCausalLM with its tokenizer: '' (embedded SmolLM2-135M-Instruct), a folder or a hub id.

    `reuse` only when nothing will modify the model (adapter-only training): LoRA is injected in place.
    """
    key = (spec, str(device), dtype, seed)
    if reuse:
        return _reuse("llm", key, lambda: _load_llm(spec, device, dtype, seed))
    _LOADED.pop("llm", None)
    return _load_llm(spec, device, dtype, seed)


def _load_llm(spec: str, device: torch.device, dtype: torch.dtype, seed: int) -> tuple[nn.Module, Any, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_id = assets.resolve_model("llm", spec)
    tok = AutoTokenizer.from_pretrained(model_id)
    # straight onto the GPU when there is one: a 9B model need not pass through host memory
    where = {"device_map": {"": device}} if device.type == "cuda" else {}
    llm = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype, **where)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # padding is always masked, so any id will do
    return llm.to(device=device, dtype=dtype).eval().requires_grad_(False), tok, model_id


def apply_lora(llm: nn.Module, r: int, alpha: int, dropout: float, target_modules: Sequence[str]) -> nn.Module:
    """Wrap the LLM with peft LoRA adapters (our optional extra; the paper trains the adapter only)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                     task_type="CAUSAL_LM", bias="none")
    return get_peft_model(llm, cfg)
