"""The tiny MERaLiON-AudioLLM-layout checkpoint: loaded the way the real one is (Auto classes, trust_remote_code=True,
from a local folder, offline), its tensor names, its processor's 100 placeholders per 30 s chunk, and a forward and a
generate that agree with the layout composed by hand (speech_encoder -> ln_speech -> adapter -> scatter -> decoder)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from paraqa_utils.testing.tiny_meralion import CARD_PROMPT, CODE_FILES, SPEECH_TOKEN, save_tiny_meralion

RATE = 16000
PREFIXES = {"speech_encoder", "ln_speech", "speech_audio_adapter", "text_decoder"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, one_torch_thread):
    return save_tiny_meralion(tmp_path_factory.mktemp("meralion"))


@pytest.fixture(scope="module")
def model(folder):
    from transformers import AutoModelForSpeechSeq2Seq

    return AutoModelForSpeechSeq2Seq.from_pretrained(str(folder), trust_remote_code=True).eval()


def processor(folder, **kwargs):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(folder), trust_remote_code=True, **kwargs)


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 0.1).astype(np.float32)


def prompt(proc, query: str = "How does the speaker feel?") -> str:
    conv = [{"role": "user", "content": CARD_PROMPT.format(query=query)}]
    return proc.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)


def test_folder_is_laid_out_as_the_hub_repo(folder):
    files = {p.name for p in folder.iterdir()}
    assert {*CODE_FILES, "config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json",
            "processor_config.json", "tokenizer.json", "tokenizer_config.json"} <= files
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "meralion" and cfg["architectures"] == ["MERaLiONForConditionalGeneration"]
    assert cfg["auto_map"]["AutoConfig"] == "configuration_meralion.MERaLiONConfig"
    assert cfg["auto_map"]["AutoModelForSpeechSeq2Seq"] == cfg["auto_map"]["AutoModel"] \
        == "modeling_meralion.MERaLiONForConditionalGeneration"
    assert (cfg["speech_mlp_scale_factor"], cfg["speech_mlp_use_projection"]) == (15, True)
    speech, text = cfg["speech_config"], cfg["text_config"]
    assert (speech["model_type"], speech["num_mel_bins"], speech["max_source_positions"]) == ("whisper", 80, 1500)
    assert text["model_type"] == "gemma2"
    for name in ("hidden_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "head_dim",
                 "intermediate_size", "sliding_window"):
        assert cfg[name] == text[name], name
    for name in ("processor_config.json", "preprocessor_config.json"):
        assert json.loads((folder / name).read_text())["auto_map"] == {
            "AutoProcessor": "processing_meralion.MERaLiONProcessor"}
    proc_cfg = json.loads((folder / "processor_config.json").read_text())
    assert proc_cfg["fixed_speech_embeds_length"] == 100 and proc_cfg["time_duration_limit"] == 30
    assert save_tiny_meralion(folder.parent) == folder  # idempotent


def test_auto_classes_load_the_shipped_code_and_only_with_trust(folder, model):
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=True)
    assert type(config).__name__ == "MERaLiONConfig" and type(config).__module__.startswith("transformers_modules.")
    assert type(model).__name__ == "MERaLiONForConditionalGeneration"
    assert type(AutoModel.from_pretrained(str(folder), trust_remote_code=True)).__name__ == type(model).__name__
    assert {k.split(".")[0] for k in model.state_dict()} == PREFIXES
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == PREFIXES
    tok_id = processor(folder).tokenizer.convert_tokens_to_ids(SPEECH_TOKEN)
    assert config.speech_token_index == tok_id < config.text_config.vocab_size
    for auto in (AutoConfig, AutoModel):
        with pytest.raises(ValueError, match="custom code"):
            auto.from_pretrained(str(folder), trust_remote_code=False)


@pytest.mark.parametrize("seconds, limit, n_chunks", [(2, None, 1), (31, None, 1), (31, 300, 2), (65, 60, 2)])
def test_processor_gives_100_placeholders_per_30s_chunk_up_to_the_limit(folder, seconds, limit, n_chunks):
    proc = processor(folder, **({} if limit is None else {"time_duration_limit": limit}))
    assert type(proc).__name__ == "MERaLiONProcessor"
    assert (proc.speech_token, proc.feature_chunk_size) == (SPEECH_TOKEN, 30 * RATE)
    out = proc(text=prompt(proc), audios=[clip(seconds)], sampling_rate=RATE)
    assert set(out) == {"input_ids", "attention_mask", "input_features", "feature_attention_mask"}
    assert int((out["input_ids"] == proc.speech_token_index).sum()) == 100 * n_chunks
    assert tuple(out["input_features"].shape) == (n_chunks, 80, 3000)
    assert tuple(out["feature_attention_mask"].shape) == (n_chunks, 3000)
    if seconds == 2:
        assert int(out["feature_attention_mask"].sum()) == 200  # 100 frames a second, the rest is padding


def test_forward_with_labels_gives_a_finite_loss(folder, model):
    proc = processor(folder)
    inputs = proc(text=[prompt(proc)], audio=[clip(2)], sampling_rate=RATE)
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == proc.speech_token_index, -100)
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    assert torch.isfinite(out.loss) and out.logits.shape[:2] == inputs["input_ids"].shape


def manual_logits(model, input_ids, attention_mask, input_features, speech_id):
    """The layout composed from the submodules by hand, the adapter from its weights."""
    import torch.nn.functional as F

    states = model.ln_speech(model.speech_encoder(input_features).last_hidden_state)  # (n, 1500, d)
    ad = model.speech_audio_adapter
    n, frames, d = states.shape
    scale = model.config.speech_mlp_scale_factor
    stacked = states.reshape(n, frames // scale, d * scale)  # 15 frames side by side: 100 vectors per chunk
    x = F.silu(F.linear(stacked, ad.mlp_adapter[0].weight, ad.mlp_adapter[0].bias))
    gate = F.silu(F.linear(x, ad.gate_proj.weight, ad.gate_proj.bias))
    x = gate * F.linear(x, ad.pool_proj.weight, ad.pool_proj.bias)
    speech = F.linear(x, ad.out_proj.weight, ad.out_proj.bias).reshape(-1, model.config.text_config.hidden_size)
    speech = speech * model.config.text_config.hidden_size ** 0.5  # Gemma-2 scales every input embedding (transformers 4)
    embeds = model.text_decoder.get_input_embeddings()(input_ids).clone()
    embeds[input_ids == speech_id] = speech
    return model.text_decoder(inputs_embeds=embeds, attention_mask=attention_mask).logits


def test_forward_equals_the_layout_composed_by_hand_batched_and_alone(folder, model):
    proc = processor(folder, time_duration_limit=300)
    proc.tokenizer.padding_side = "left"
    texts, clips = [prompt(proc), prompt(proc, "What is said?")], [clip(2, seed=1), clip(31, seed=2)]
    batch = proc(text=texts, audios=clips, sampling_rate=RATE)
    assert tuple(batch["input_features"].shape) == (3, 80, 3000)
    with torch.no_grad():
        logits = model(**batch).logits
        by_hand = manual_logits(model, batch["input_ids"], batch["attention_mask"], batch["input_features"],
                                proc.speech_token_index)
        torch.testing.assert_close(logits, by_hand)
        for i in range(2):  # each row alone: the speech embeddings went to their own row, in chunk order
            alone = proc(text=[texts[i]], audios=[clips[i]], sampling_rate=RATE)
            torch.testing.assert_close(model(**alone).logits[0, -1], logits[i, -1], rtol=1e-4, atol=1e-4)
        other = proc(text=[texts[0]], audios=[clip(2, seed=3)], sampling_rate=RATE)
        assert not torch.allclose(model(**other).logits[0, -1], logits[0, -1])  # the audio is heard


def test_generate_returns_the_prompt_then_the_new_tokens(folder, model):
    proc = processor(folder)
    inputs = proc(text=[prompt(proc)], audios=[clip(2)], sampling_rate=RATE)
    n = inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        no_cache = model.generate(**inputs, max_new_tokens=4, do_sample=False, use_cache=False)
    assert n < out.shape[1] <= n + 4 and torch.equal(out[:, :n], inputs["input_ids"])
    assert torch.equal(out, no_cache)  # the cached steps read the audio merged at prefill
    assert isinstance(proc.batch_decode(out[:, n:], skip_special_tokens=True)[0], str)


def test_processor_survives_a_transformers5_save_and_128_mel_checkpoints_load(folder, tmp_path):
    proc = processor(folder, time_duration_limit=300)
    proc.save_pretrained(tmp_path / "resaved")  # one nested processor_config.json; the code file is copied
    again = processor(tmp_path / "resaved")
    assert (type(again).__name__, again.time_duration_limit) == ("MERaLiONProcessor", 300)
    v2 = save_tiny_meralion(tmp_path, n_mels=128)
    assert v2.name == "tiny-meralion-seed0-mel128"
    out = processor(v2)(text=[prompt(proc)], audios=[clip(1)], sampling_rate=RATE)
    assert tuple(out["input_features"].shape) == (1, 128, 3000)
