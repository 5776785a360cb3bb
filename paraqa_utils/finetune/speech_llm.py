"""The MERaLiON-style Speech-LLM: frozen Whisper encoder -> frame-stacking MLP adapter -> causal LM (+ LoRA)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from paraqa_utils import assets
# the audio side lives in audio_encoder; its names stay importable from here, where callers found them
from paraqa_utils.finetune.audio_encoder import (ENCODER_STRIDE, MEL_HOP, AudioEncoder, FrameStackAdapter,  # noqa: F401
                                                 chunk_samples, n_audio_tokens, window_samples)

AUDIO_PLACEHOLDER = "<audio>"  # never tokenized: the prompt is split at it and adapter outputs go in between
IGNORE_INDEX = -100


# causal LMs whose logits are lm_head(last hidden state), Gemma-2 with its final soft-cap: SpeechLLM computes
# them at the answer positions only (others go through the LM's own forward)
PLAIN_HEADS = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo2", "smollm3"})


class SpeechLLM(nn.Module):
    """Adapter outputs replace the audio placeholder positions of the prompt; loss on answer tokens only."""

    def __init__(self, audio_encoder: AudioEncoder, llm: nn.Module, tokenizer: Any, stack_k: int,
                 adapter_hidden: int = 0, label_readout: nn.Module | None = None, adapter: nn.Module | None = None):
        """`adapter`: a released checkpoint's own projector (released.py); by default our frame-stacking MLP."""
        super().__init__()
        self.audio_encoder = audio_encoder
        self.llm = llm
        self.tokenizer = tokenizer
        llm_dim = llm.get_input_embeddings().weight.shape[1]
        self.adapter = adapter if adapter is not None else FrameStackAdapter(audio_encoder.dim, llm_dim, stack_k,
                                                                             adapter_hidden)
        self.released = None  # released.Released for a released checkpoint's parts
        self.audio_scale = 1.0  # what the LM's embedding layer multiplies token embeddings by, where audio needs it too
        # readout.LabelReadout: utterance tokens after the adapter's outputs, in the same audio span
        self.label_readout = label_readout
        # bf16 frozen weights: every matmul of forward/generate runs under bf16 autocast (the trainable adapter,
        # heads and LoRA stay float32), on GPUs and on CPUs with native bf16 dot products alike
        self.autocast_dtype = torch.bfloat16 if llm.get_input_embeddings().weight.dtype == torch.bfloat16 else None
        if self.autocast_dtype is not None:
            # peft casts each LoRA input to its float32 weights, and autocast casts it back for the matmul: two
            # copies of every activation a LoRA module reads (18 % of a CPU step, measured); autocast alone suffices
            for m in llm.modules():
                if hasattr(m, "cast_input_dtype_enabled"):
                    m.cast_input_dtype_enabled = False

    def autocast(self) -> Any:
        """bf16 autocast where the frozen weights are bf16 (forward and generate enter it themselves)."""
        import contextlib

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.llm.get_input_embeddings().weight.device.type, dtype=self.autocast_dtype)

    def audio_embeddings(self, states: torch.Tensor) -> torch.Tensor:
        """One clip's audio span: the adapter's outputs, then the label read-out's utterance tokens (if any)."""
        w = next(self.adapter.parameters())
        out = self.adapter(states[:, :self.audio_encoder.dim].to(w.device, w.dtype))
        out = out * self.audio_scale if self.audio_scale != 1.0 else out
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
        with self.autocast():
            return self._forward(input_ids, attention_mask, labels, audio_mask, audio_states)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                 audio_mask: torch.Tensor, audio_states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        embeds = self.embed(input_ids, audio_mask, audio_states)
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        parts = self._decoder_and_head()
        if parts is not None:
            # Logits at the answer positions only: the output projection (vocab x hidden, a fifth of SmolLM2's
            # weights) and the float32 log-softmax then run on the answer tokens, not on every position after the
            # batch's earliest answer start (half of them prompt or padding in a demo batch)
            decoder, head, cap = parts
            hidden = decoder(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
            logits = head(hidden[:, :-1][keep]).float()
            if cap:  # Gemma-2's final logit soft-capping, as its own forward applies it
                logits = torch.tanh(logits / cap) * cap
            loss = nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
            return loss, keep.sum()
        cols = keep.any(0).nonzero()
        first = int(cols.min()) if len(cols) else targets.shape[1] - 1
        # Logits only from the first answer position on, through the LM's own forward (a head this class does not
        # know may scale or cap its logits)
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False,
                       logits_to_keep=input_ids.shape[1] - first)
        logits = out.logits[:, :-1].float()
        tgt = targets[:, first:]
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                           ignore_index=IGNORE_INDEX, reduction="sum")
        return loss, (tgt != IGNORE_INDEX).sum()

    def _decoder_and_head(self) -> tuple[nn.Module, nn.Module, float | None] | None:
        """(decoder stack, output projection, soft-cap) of an LM whose head is a plain projection; None otherwise."""
        base = self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm
        cfg = getattr(base, "config", None)
        if getattr(cfg, "model_type", None) not in PLAIN_HEADS or not hasattr(base, "get_decoder"):
            return None
        return base.get_decoder(), base.get_output_embeddings(), getattr(cfg, "final_logit_softcapping", None)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, audio_mask: torch.Tensor,
                 audio_states: Sequence[torch.Tensor], max_new_tokens: int, stop_ids: Sequence[int],
                 pad_id: int) -> torch.Tensor:
        """Greedy answers for a left-padded batch; returns only the new tokens (batch, <= max_new_tokens)."""
        from transformers import GenerationConfig

        gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                               eos_token_id=list(stop_ids), pad_token_id=pad_id)
        with self.autocast():
            embeds = self.embed(input_ids, audio_mask, audio_states)
            return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, generation_config=gen)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.named_parameters() if p.requires_grad}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN's bf16 GEMM is then 2.5-4x its float32 one (bench_finetune measures it); without
    them bf16 is emulated and slower than float32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto': bf16 on a GPU that supports it (paper-scale models) and on a CPU with native bf16 dot products (the
    frozen weights in bf16, autocast, trainable weights float32); float32 elsewhere."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
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
    # on a CPU, plain matmul attention: torch's fused CPU attention kernel is slow to differentiate at these short
    # lengths (eager: 1.37 against 1.67 s per demo step, measured); GPUs keep the model's default (sdpa)
    attn = {"attn_implementation": "eager"} if device.type == "cpu" else {}
    llm = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype, **where, **attn)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # padding is always masked, so any id will do
    return llm.to(device=device, dtype=dtype).eval().requires_grad_(False), tok, model_id


def apply_lora(llm: nn.Module, r: int, alpha: int, dropout: float, target_modules: Sequence[str]) -> nn.Module:
    """Wrap the LLM with peft LoRA adapters (our optional extra; the paper trains the adapter only)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                     task_type="CAUSAL_LM", bias="none")
    return get_peft_model(llm, cfg)
