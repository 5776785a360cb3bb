"""Convert the embedded offline models (CTranslate2 Whisper, GGUF causal LMs) into Hugging Face folders."""

from __future__ import annotations

import copy
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from paraqa_utils.runs import atomic_dir

if TYPE_CHECKING:  # transformers is imported lazily: it takes seconds to import
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, WhisperTokenizerFast

# Type ids as numbered by ctranslate2.specs.model_spec._dtype_to_type_id.
_CT2_DTYPES: dict[int, torch.dtype] = {
    0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}
_CT2_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU (exact erf GELU, as in HF Whisper)


@dataclass
class Ct2Model:
    """The raw content of a CTranslate2 ``model.bin``."""

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, torch.Tensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


def read_ct2_model(path: Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (binary version >= 4) without importing ctranslate2."""
    buf = bytearray(Path(path).read_bytes())  # writable, so torch.frombuffer does not warn
    pos = 0

    def unpack(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = unpack("H")
        raw = bytes(buf[pos : pos + n])
        pos += n
        return raw.rstrip(b"\0").decode("utf-8")  # the stored length counts a trailing NUL

    version = unpack("I")
    if version < 4:
        # Older files store no dtype byte; Whisper specs never used them (they need ctranslate2 >= 3).
        raise ValueError(f"{path}: CTranslate2 binary version {version} < 4 is not supported")
    model = Ct2Model(version, string(), unpack("I"))
    for _ in range(unpack("I")):
        name = string()
        shape = [unpack("I") for _ in range(unpack("B"))]
        type_id, num_bytes = unpack("B"), unpack("I")
        if type_id not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name!r} has unsupported CTranslate2 dtype id {type_id}")
        dtype = _CT2_DTYPES[type_id]
        count = num_bytes // dtype.itemsize
        expected = 1
        for dim in shape:
            expected *= dim
        if count != expected or num_bytes % dtype.itemsize:
            raise ValueError(f"{path}: variable {name!r}: {num_bytes} bytes do not fit shape {shape} of {dtype}")
        tensor = torch.frombuffer(buf, dtype=dtype, count=count, offset=pos) if count else torch.empty(0, dtype=dtype)
        model.variables[name] = tensor.reshape(shape)
        pos += num_bytes
    for _ in range(unpack("I")):
        alias = string()
        model.aliases[alias] = string()
    if pos != len(buf):
        # Catches a layout change in a future binary version instead of silently mis-parsing.
        raise ValueError(f"{path}: {len(buf) - pos} trailing bytes after parsing (binary version {version})")
    return model


def _float_variables(model: Ct2Model) -> dict[str, torch.Tensor]:
    """Float32 copies of all variables: int8/int16 weights are de-quantized with their ``*_scale``; aliases resolved."""
    out = dict(model.variables)
    for name in [n for n in out if n.endswith("_scale")]:
        base = name[: -len("_scale")]
        if base not in out or out[base].is_floating_point():
            continue
        weight, scale = out.pop(base).float(), out.pop(name).float()
        # CTranslate2 stores round(w * scale): per output row for int8, one scalar for int16.
        if scale.dim() == 1:
            scale = scale.reshape(-1, *([1] * (weight.dim() - 1)))
        out[base] = weight / scale
    bad = [n for n, t in out.items() if t.dim() > 0 and not t.is_floating_point()]
    if bad:
        raise ValueError(f"integer tensors without a usable *_scale (unsupported quantization): {bad[:5]}")
    out = {n: (t.float() if t.is_floating_point() else t) for n, t in out.items()}
    for alias, target in model.aliases.items():
        out[alias] = out[target]
    return out


def _map_attention(sd: dict, v: dict, src: str, dst: str, fused: str, parts: tuple[str, ...]) -> None:
    """Split a fused CT2 projection into HF q/k/v projections; HF's k_proj has no bias."""
    w, b = v.pop(f"{src}/{fused}/weight"), v.pop(f"{src}/{fused}/bias")
    for part, w_i, b_i in zip(parts, w.chunk(len(parts)), b.chunk(len(parts))):
        sd[f"{dst}.{part}_proj.weight"] = w_i
        if part == "k":
            # CT2 zero-fills the missing k bias when fusing; anything else cannot be represented in HF.
            if b_i.abs().max() > 0:
                raise ValueError(f"{src}: non-zero key bias cannot be mapped onto HF Whisper")
        else:
            sd[f"{dst}.{part}_proj.bias"] = b_i


def _map_layer_norm(sd: dict, v: dict, src: str, dst: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v.pop(f"{src}/gamma"), v.pop(f"{src}/beta")


def _map_linear(sd: dict, v: dict, src: str, dst: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v.pop(f"{src}/weight"), v.pop(f"{src}/bias")


def _whisper_state_dict(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    v = dict(v)
    sd: dict[str, torch.Tensor] = {}
    for side in ("encoder", "decoder"):
        n_layers = len({m.group(1) for n in v if (m := re.match(rf"{side}/layer_(\d+)/", n))})
        for i in range(n_layers):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _map_layer_norm(sd, v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            _map_attention(sd, v, f"{src}/self_attention", f"{dst}.self_attn", "linear_0", ("q", "k", "v"))
            _map_linear(sd, v, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            if side == "decoder":
                _map_layer_norm(sd, v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
                _map_linear(sd, v, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                _map_attention(sd, v, f"{src}/attention", f"{dst}.encoder_attn", "linear_1", ("k", "v"))
                _map_linear(sd, v, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
            _map_layer_norm(sd, v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            _map_linear(sd, v, f"{src}/ffn/linear_0", f"{dst}.fc1")
            _map_linear(sd, v, f"{src}/ffn/linear_1", f"{dst}.fc2")
        sd[f"model.{side}.embed_positions.weight"] = v.pop(f"{side}/position_encodings/encodings")
        _map_layer_norm(sd, v, f"{side}/layer_norm", f"model.{side}.layer_norm")
    for conv in ("conv1", "conv2"):
        _map_linear(sd, v, f"encoder/{conv}", f"model.encoder.{conv}")
    sd["model.decoder.embed_tokens.weight"] = v.pop("decoder/embeddings/weight")
    sd["proj_out.weight"] = v.pop("decoder/projection/weight")
    leftover = [n for n, t in v.items() if t.dim() > 0]  # scalars are spec options, checked by the caller
    if leftover:
        raise ValueError(f"CTranslate2 variables not mapped onto HF Whisper: {leftover[:8]}")
    return sd


def _whisper_tokenizer(ct2_dir: Path, vocab: list[str]) -> WhisperTokenizerFast | None:
    from transformers import AddedToken, WhisperTokenizerFast

    tok_file = ct2_dir / "tokenizer.json"
    if not tok_file.exists():
        return None
    specials = [t["content"] for t in json.loads(tok_file.read_text("utf-8"))["added_tokens"] if t.get("special")]
    # tokenizer.json alone has no tokenizer_config: re-declare the special tokens (HF derives the first
    # timestamp id from the last special id) and pad like the HF Whisper repos do.
    tok = WhisperTokenizerFast(tokenizer_file=str(tok_file), pad_token="<|endoftext|>",
                               additional_special_tokens=[t for t in specials if t != "<|endoftext|>"])
    # faster-whisper's tokenizer.json stops at <|notimestamps|>; add the timestamp tokens so that
    # len(tokenizer) == vocab_size, as in the current HF Whisper repos. No normalizer.json exists here,
    # so decode(..., normalize=True) is unavailable (basic_normalize still works).
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in vocab[len(tok):]])
    if len(tok) != len(vocab) or tok.convert_ids_to_tokens(len(vocab) - 1) != vocab[-1]:
        raise ValueError("tokenizer.json does not agree with vocabulary.txt")
    return tok


def convert_whisper_ct2_to_hf(ct2_dir: Path, out_dir: Path) -> Path:
    """Turn a CTranslate2 Whisper folder into a ``WhisperForConditionalGeneration`` folder (float32)."""
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor)

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    raw = read_ct2_model(ct2_dir / "model.bin")
    if raw.spec_name != "WhisperSpec":
        raise ValueError(f"{ct2_dir}: spec {raw.spec_name!r} is not a Whisper model")
    v = _float_variables(raw)
    ct2_cfg = json.loads((ct2_dir / "config.json").read_text("utf-8"))
    text = (ct2_dir / "vocabulary.txt").read_text("utf-8")
    # Split on "\n" only: some BPE tokens contain characters that str.splitlines() treats as breaks.
    vocab = (text[:-1] if text.endswith("\n") else text).split("\n")
    ids = {t: i for i, t in enumerate(vocab)}
    if int(v["decoder/activation"]) != _CT2_GELU or not bool(v["decoder/pre_norm"]):
        raise ValueError("only pre-norm GELU Whisper decoders are supported")
    tied = raw.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight"

    sd = _whisper_state_dict(v)
    if len(vocab) != sd["model.decoder.embed_tokens.weight"].shape[0]:
        raise ValueError("vocabulary.txt size differs from the embedding matrix")
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(vocab),
        num_mel_bins=sd["model.encoder.conv1.weight"].shape[1],
        d_model=sd["model.decoder.embed_tokens.weight"].shape[1],
        encoder_layers=sum(k.endswith("fc1.weight") and ".encoder." in k for k in sd),
        decoder_layers=sum(k.endswith("fc1.weight") and ".decoder." in k for k in sd),
        encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=sd["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=sd["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=sd["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=sd["model.decoder.embed_positions.weight"].shape[0],
        activation_function="gelu", tie_word_embeddings=tied,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        suppress_tokens=ct2_cfg.get("suppress_ids"), begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin"),
    )
    lang_ids = ct2_cfg.get("lang_ids") or []
    gen = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_length=config.max_target_positions, alignment_heads=ct2_cfg.get("alignment_heads"),
        suppress_tokens=ct2_cfg.get("suppress_ids"), begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin"),
        # The attributes WhisperForConditionalGeneration.generate reads for language/task/timestamps.
        is_multilingual=bool(lang_ids),
        lang_to_id={vocab[i]: i for i in lang_ids},
        task_to_id={t: ids[f"<|{t}|>"] for t in ("transcribe", "translate") if f"<|{t}|>" in ids},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids.get("<|startofprev|>"),
        max_initial_timestamp_index=50, return_timestamps=False,
    )

    model = WhisperForConditionalGeneration(config).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    allowed_missing = {"proj_out.weight"} if tied else set()  # HF re-ties proj_out to embed_tokens itself
    if set(missing) - allowed_missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing={missing}, unexpected={unexpected}")
    if tied:
        model.tie_weights()
    model.generation_config = gen

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        # Written on its own too: transformers 5's processor file nests it, older readers expect this name.
        feature_extractor.save_pretrained(tmp)
        tokenizer = _whisper_tokenizer(ct2_dir, vocab)
        if tokenizer is not None:
            WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(tmp)
    return out_dir


def _load_gguf(gguf_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    return model.eval(), tokenizer


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path, dtype: str = "bfloat16") -> Path:
    """De-quantize a GGUF causal LM through transformers and save it as a plain HF folder in ``dtype``."""
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ValueError(f"dtype must name a torch floating dtype, got {dtype!r}")
    gguf_model, tokenizer = _load_gguf(Path(gguf_path))

    # transformers refuses save_pretrained on a GGUF-quantized model, so rebuild an ordinary model from
    # the same config minus the quantization marker and copy the (already de-quantized) weights over.
    config = copy.deepcopy(gguf_model.config)
    config.__dict__.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    allowed_missing = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing={missing}, unexpected={unexpected}")
    model.tie_weights()
    model = model.to(torch_dtype).eval()
    model.config.dtype = torch_dtype
    model.generation_config = copy.deepcopy(gguf_model.generation_config)
    del gguf_model  # frees the float32 copy (~0.5 GB) before writing, unless the caller holds it

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)  # carries the chat template read from the GGUF metadata
    return Path(out_dir)
