"""Tiny randomly initialised Whisper / causal-LM / tokenizer stand-ins built from configs (tests and bench only)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Never a default: their weights are noise, so their answers mean nothing (CONTRIBUTING: tests only).
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_SPECIALS = ["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Enough English for byte-level BPE to learn a few merges; the model never sees this text as data.
_CORPUS = ("what is said in the recording? how does the speaker feel? the speaker sounds angry, happy, sad, "
           "neutral, surprised or fearful. is the speaker male or female? transcribe the audio. "
           "valence arousal dominance low mid high 0123456789 [ ] - s . , ? ! : ; ( ) ' \" \n") * 4


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A ~300-token byte-level BPE tokenizer with a ChatML chat template, trained offline in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([_CORPUS], trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<|im_end|>",
                                  bos_token="<|im_start|>", unk_token=None)
    tok.chat_template = CHATML_TEMPLATE
    return tok


def tiny_whisper(seed: int = 0, d_model: int = 32, n_mels: int = 80) -> PreTrainedModel:
    """A 1-layer Whisper with the real 1500-frame (30 s) window, so windowing code paths are the real ones."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(vocab_size=64, num_mel_bins=n_mels, d_model=d_model, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
                        decoder_ffn_dim=2 * d_model, max_source_positions=1500, max_target_positions=32,
                        pad_token_id=1, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2,
                        # wide init: at 0.02 the conv front end is drowned by the sinusoidal positions, and the
                        # encoder states would hardly depend on the audio (tests check that they do)
                        init_std=0.5)
    torch.manual_seed(seed)
    return WhisperForConditionalGeneration(cfg).eval()


def tiny_llm(vocab_size: int, seed: int = 0, hidden: int = 48, n_layers: int = 2) -> PreTrainedModel:
    """A 2-layer Llama with q/k/v/o projections named like the real ones (so LoRA targets match)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, tie_word_embeddings=True,
                      # wide init: with the default 0.02 a frozen 48-wide LM head caps logits near +-1, so
                      # nothing that trains (adapter, LoRA) could make the tiny model fit anything
                      initializer_range=0.3,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def save_tiny_models(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Tiny Whisper and tiny Llama saved as ordinary checkpoint folders (config, safetensors, tokenizer and
    preprocessor files), so tests load them through the same from_pretrained path as a real model id."""
    from transformers import WhisperFeatureExtractor

    root = Path(root)
    whisper_dir, llm_dir = root / f"tiny-whisper-seed{seed}", root / f"tiny-llm-seed{seed}"
    if not (whisper_dir / "config.json").exists():
        model = tiny_whisper(seed)
        model.save_pretrained(whisper_dir)
        WhisperFeatureExtractor(feature_size=model.config.num_mel_bins).save_pretrained(whisper_dir)
        tiny_tokenizer().save_pretrained(whisper_dir)  # the transcript read-out decodes with it (ids < 64)
    if not (llm_dir / "config.json").exists():
        tok = tiny_tokenizer()
        tiny_llm(len(tok), seed).save_pretrained(llm_dir)
        tok.save_pretrained(llm_dir)
    return whisper_dir, llm_dir


def save_tiny_qwen2_audio(root: Path, seed: int = 0) -> Path:
    """A 1-layer Qwen2-Audio (audio encoder with 128 mel bins and the real 30 s window, a 1-layer Qwen2) with its
    processor, saved as a checkpoint folder: the transformers audio-LLM path of `paraqa_utils.evaluate`."""
    import copy

    from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                              WhisperFeatureExtractor)

    out = Path(root) / f"tiny-qwen2-audio-seed{seed}"
    if (out / "config.json").exists():
        return out
    tok = copy.deepcopy(tiny_tokenizer())
    tok.add_special_tokens({"additional_special_tokens": ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]})
    cfg = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, d_model=32, encoder_layers=1,
                          encoder_attention_heads=2, encoder_ffn_dim=64, max_source_positions=1500, init_std=0.5),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=4096, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         initializer_range=0.3),
        # wide init, as tiny_whisper's and tiny_llm's: the states then depend on the audio, and LoRA on a frozen
        # 32-wide head can move the logits (at 0.02 the loss cannot leave ln(vocab))
        initializer_range=0.3, audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(seed)
    Qwen2AudioForConditionalGeneration(cfg).eval().save_pretrained(out)
    Qwen2AudioProcessor(WhisperFeatureExtractor(feature_size=128), tok).save_pretrained(out)
    return out
