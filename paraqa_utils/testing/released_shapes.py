"""The published shapes of the released audio-LLMs 04 fine-tunes, as config-only checkpoint folders (no weights).

The memory check counts their parameters on the meta device, and bench/gpu_check.py builds them with random
weights on a GPU. The numbers are those of the public config.json files:

- Qwen/Qwen2-Audio-7B-Instruct: a Whisper-large-v3-sized audio tower, and Qwen2-7B's decoder with its 156,032
  vocabulary (8.4 B parameters in all).
- MERaLiON/MERaLiON-2-10B: a Whisper-large-v3 encoder, the gated adapter (stack 15 -> 5 x 1280 -> Gemma width), and
  Gemma-2-9B (tied embeddings). It is written in our MERaLiON-layout code (testing/meralion_layout), which has the
  same tensors.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

SHAPES = ("qwen2-audio-7b", "meralion-2-10b")

WHISPER_LARGE_ENCODER = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                             num_mel_bins=128, max_source_positions=1500)
GEMMA2_9B = dict(model_type="gemma2", vocab_size=256000, hidden_size=3584, intermediate_size=14336,
                 num_hidden_layers=42, num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                 query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=30.0,
                 attn_logit_softcapping=50.0, max_position_embeddings=8192, hidden_activation="gelu_pytorch_tanh",
                 tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1)


def shape_config(name: str, tiny: bool = False) -> dict:
    """config.json's content for one of SHAPES; `tiny` keeps the structure at a few thousand parameters."""
    if name == "qwen2-audio-7b":
        audio = dict(model_type="qwen2_audio_encoder", **WHISPER_LARGE_ENCODER)
        text = dict(model_type="qwen2", vocab_size=156032, hidden_size=4096, intermediate_size=11008,
                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=8192,
                    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, eos_token_id=151645,
                    pad_token_id=151643)
        if tiny:
            audio.update(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128)
            text.update(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, eos_token_id=1, pad_token_id=0)
        return dict(model_type="qwen2_audio", architectures=["Qwen2AudioForConditionalGeneration"], audio_config=audio,
                    text_config=text, audio_token_index=151646 if not tiny else 999)
    if name == "meralion-2-10b":
        speech = dict(model_type="whisper", **WHISPER_LARGE_ENCODER, decoder_layers=1, decoder_attention_heads=20,
                      vocab_size=51866)
        text = dict(GEMMA2_9B)
        if tiny:
            speech.update(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
                          decoder_attention_heads=2)
            text.update(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                        sliding_window=256)
        return dict(model_type="meralion", architectures=["MERaLiONForConditionalGeneration"],
                    auto_map={"AutoConfig": "configuration_meralion.MERaLiONConfig",
                              "AutoModel": "modeling_meralion.MERaLiONForConditionalGeneration"},
                    speech_config=speech, text_config=text, speech_mlp_scale_factor=15, speech_mlp_use_projection=True,
                    speech_token_index=255999 if not tiny else 999)
    raise ValueError(f"unknown shape {name!r}: one of {', '.join(SHAPES)}")


def save_shape_config(name: str, root: Path, tiny: bool = False) -> Path:
    """A folder with config.json (+ MERaLiON's code files): what a hub checkpoint is without its weights."""
    from paraqa_utils.testing.tiny_meralion import CODE_FILES, LAYOUT_DIR

    out = Path(root) / f"{name}{'-tiny' if tiny else ''}"
    out.mkdir(parents=True, exist_ok=True)
    conf = shape_config(name, tiny)
    (out / "config.json").write_text(json.dumps(conf, indent=2))
    if "auto_map" in conf:
        for f in CODE_FILES:
            shutil.copyfile(LAYOUT_DIR / f, out / f)
    return out
