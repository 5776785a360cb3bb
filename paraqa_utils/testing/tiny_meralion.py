"""A tiny random checkpoint in the on-disk layout of MERaLiON-AudioLLM (a Speech-LLM whose hub repo ships its own
code): config.json with `auto_map`, model.safetensors, generation_config.json, the Whisper feature extractor's
preprocessor_config.json, processor_config.json, the tokenizer files, and the three remote-code files of
`meralion_layout/` (ours, written to reproduce the public layout). Loaded with trust_remote_code=True, fully offline.
Tests and bench only: its weights are noise by design.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch

LAYOUT_DIR = Path(__file__).resolve().parent / "meralion_layout"
CODE_FILES = ("configuration_meralion.py", "modeling_meralion.py", "processing_meralion.py")
SPEECH_TOKEN = "<SpeechHere>"
MODEL_AUTO_MAP = {"AutoConfig": "configuration_meralion.MERaLiONConfig",
                  "AutoModel": "modeling_meralion.MERaLiONForConditionalGeneration",
                  "AutoModelForSpeechSeq2Seq": "modeling_meralion.MERaLiONForConditionalGeneration"}
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_meralion.MERaLiONProcessor"}
# Gemma's turn markers; the placeholder goes where the audio is heard (the model card's prompt puts it last)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
CARD_PROMPT = "Instruction: {query} \nFollow the text instruction based on the following audio: " + SPEECH_TOKEN


def meralion_tokenizer():
    """The shared tiny BPE tokenizer with Gemma's <bos>/<eos>, turn markers, the speech placeholder and template."""
    from paraqa_utils.testing.tiny_models import tiny_tokenizer

    tok = copy.deepcopy(tiny_tokenizer())
    tok.add_special_tokens({"bos_token": "<bos>", "eos_token": "<eos>",
                            "additional_special_tokens": [SPEECH_TOKEN, "<start_of_turn>", "<end_of_turn>"]})
    tok.chat_template = GEMMA_TEMPLATE
    return tok


def tiny_meralion_config(tok, n_mels: int = 80) -> dict:
    """config.json's content before saving: Whisper encoder d_model 32 (1500 frames = 30 s), a 1-layer Gemma2."""
    speech = dict(model_type="whisper", d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                  decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=n_mels,
                  max_source_positions=1500, max_target_positions=448, vocab_size=51865,  # the real sizes: no tensors
                  # wide init, as tiny_models.tiny_whisper: at 0.02 the encoder output hardly depends on the audio
                  init_std=0.5)
    text = dict(model_type="gemma2", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                sliding_window=64, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                # wide init, as tiny_models.tiny_llm (the adapter takes it too): at 0.02 the soft-capped logits are
                # nearly flat, and greedy decoding repeats one token whatever the audio
                initializer_range=0.3,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return dict(speech_config=speech, text_config=text, speech_mlp_scale_factor=15, speech_mlp_use_projection=True,
                speech_token_index=tok.convert_tokens_to_ids(SPEECH_TOKEN))


def write_processor_files(out: Path, tok, n_mels: int, speech_token_index: int) -> None:
    """The processor as a transformers-4 save of a remote-code processor left it on the hub: the feature extractor
    in preprocessor_config.json, the processor's own kwargs in processor_config.json, both with the auto_map."""
    from transformers import WhisperFeatureExtractor

    owner = {"processor_class": "MERaLiONProcessor", "auto_map": PROCESSOR_AUTO_MAP}
    WhisperFeatureExtractor(feature_size=n_mels).save_pretrained(out)
    pre = json.loads((out / "preprocessor_config.json").read_text())
    (out / "preprocessor_config.json").write_text(json.dumps({**pre, **owner}, indent=2, sort_keys=True) + "\n")
    tok.save_pretrained(out)
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**tok_cfg, **owner}, indent=2) + "\n")
    proc = dict(fixed_speech_embeds_length=100, speech_token_index=speech_token_index, time_duration_limit=30,
                whisper_chunk_size=30, do_normalize=True, **owner)
    (out / "processor_config.json").write_text(json.dumps(proc, indent=2, sort_keys=True) + "\n")


def save_tiny_meralion(root: Path, seed: int = 0, n_mels: int = 80) -> Path:
    """Write the folder `root/tiny-meralion-seed{seed}` (`-mel{n_mels}` appended unless 80, v1's Whisper-large-v2
    front end; MERaLiON-2 has 128) as the hub repo looks; a folder that already has config.json is returned as is."""
    from transformers import GenerationConfig

    from paraqa_utils.testing.meralion_layout.configuration_meralion import MERaLiONConfig
    from paraqa_utils.testing.meralion_layout.modeling_meralion import MERaLiONForConditionalGeneration

    out = Path(root) / (f"tiny-meralion-seed{seed}" + ("" if n_mels == 80 else f"-mel{n_mels}"))
    if (out / "config.json").exists():
        return out
    part = out.with_name(out.name + ".partial")  # renamed when complete: a failed write leaves no config.json
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    tok = meralion_tokenizer()
    config = MERaLiONConfig(**tiny_meralion_config(tok, n_mels), auto_map=MODEL_AUTO_MAP,
                            architectures=["MERaLiONForConditionalGeneration"])
    torch.manual_seed(seed)
    model = MERaLiONForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
        eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")])
    model.save_pretrained(part)
    write_processor_files(part, tok, n_mels, config.speech_token_index)
    for name in CODE_FILES:
        shutil.copyfile(LAYOUT_DIR / name, part / name)
    part.rename(out)
    return out
