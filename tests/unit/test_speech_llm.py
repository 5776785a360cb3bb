"""The Speech-LLM's pieces on tiny random models: windowing, the audio span, answer-only labels, truncation, generation."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from paraqa_utils import audio
from paraqa_utils.finetune import speech_data
from paraqa_utils.finetune import speech_llm
from paraqa_utils.finetune.speech_data import Encoded, PromptFormat, PromptTooLong, collate
from paraqa_utils.finetune.speech_llm import AUDIO_PLACEHOLDER, IGNORE_INDEX, SpeechLLM, n_audio_tokens

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stack(tiny_checkpoints) -> SpeechLLM:
    whisper_dir, llm_dir = tiny_checkpoints
    enc = speech_llm.load_audio_encoder(whisper_dir, 15, CPU, torch.float32)
    llm, tok, _ = speech_llm.load_llm(llm_dir, CPU, torch.float32)
    torch.manual_seed(0)
    return SpeechLLM(enc, llm, tok, 15).eval()


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> str:
    """2.05 s of noise at 22.05 kHz: exercises resampling and a non-whole last chunk."""
    path = tmp_path_factory.mktemp("audio") / "a.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, int(2.05 * 22050)).astype(np.float32), 22050)
    return str(path)


def test_window_arithmetic_matches_the_paper():
    assert speech_llm.window_samples(15) == 30 * 16000  # 1500 frames / 15 = 100 positions per 30 s
    assert n_audio_tokens(30 * 16000, 15) == 100 and n_audio_tokens(60 * 16000, 15) == 200
    assert n_audio_tokens(1, 15) == 1 and n_audio_tokens(0, 15) == 1 and n_audio_tokens(4801, 15) == 2


def test_short_window_matches_hf_encoder_and_long_audio_is_windowed(stack):
    enc = stack.audio_encoder
    full = np.random.default_rng(1).normal(0, 0.1, 30 * 16000).astype(np.float32)
    feats = enc.feature_extractor(full, sampling_rate=16000, return_tensors="pt").input_features
    hf = enc.encoder(feats).last_hidden_state[0]  # HF's own forward (demands exactly 3000 frames)
    ours = enc.encode_many([full])[0]
    torch.testing.assert_close(ours, hf, atol=1e-5, rtol=1e-4)
    waves = [full[:16000], np.concatenate([full, full, full[:5 * 16000]])]  # 1 s, and 65 s (three windows)
    states = enc.encode_many(waves)
    assert [s.shape[0] for s in states] == [15 * n_audio_tokens(len(w), 15) for w in waves] == [15 * 4, 15 * 217]
    # the first 30 s window of the long clip is encoded exactly like the 30 s clip alone
    torch.testing.assert_close(states[1][:1500], ours, atol=1e-5, rtol=1e-4)


def _encode(stack, wav, content="How does the speaker feel?", target="The speaker sounds happy.", max_seq_len=512,
            block=None):
    n = n_audio_tokens(audio.n_samples(wav), 15)
    fmt = PromptFormat(stack.tokenizer, max_seq_len)
    return fmt.encode("ex1", wav, audio.content_hash(wav), n, speech_data.user_content(content, block), target)


def test_placeholder_expands_to_exactly_the_adapter_outputs(stack, wav):
    enc = _encode(stack, wav)
    states = speech_data.EncoderCache(stack.audio_encoder, None).get([enc])
    batch = collate([enc], stack.tokenizer.pad_token_id)
    assert int(batch["audio_mask"].sum()) == enc.n_audio == stack.adapter(states[0]).shape[0] == 7  # 2.05 s / 0.3 s
    pos = batch["audio_mask"][0].nonzero().flatten().tolist()
    assert pos == list(range(enc.audio_start, enc.audio_start + enc.n_audio))  # one contiguous span
    stack.embed(batch["input_ids"], batch["audio_mask"], states)
    with pytest.raises(AssertionError, match="audio positions"):
        stack.embed(batch["input_ids"], batch["audio_mask"], [states[0][:-15]])  # one adapter output short


def test_labels_cover_the_answer_only(stack, wav):
    enc = _encode(stack, wav)
    tok = stack.tokenizer
    answer = [t for t in enc.labels if t != IGNORE_INDEX]
    first = next(i for i, t in enumerate(enc.labels) if t != IGNORE_INDEX)
    assert all(t == IGNORE_INDEX for t in enc.labels[:first]) and enc.labels[first:] == enc.input_ids[first:]
    assert tok.decode(answer) == "The speaker sounds happy.<|im_end|>\n"  # the end-of-turn marker is learnt too
    assert tok.decode(enc.input_ids[:first]).endswith("How does the speaker feel?<|im_end|>\n<|im_start|>assistant\n")
    assert PromptFormat(tok, 512).stop_ids() == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_truncation_cuts_text_never_audio(stack, wav):
    full = _encode(stack, wav, block="[0.0-2.0 s] happy (valence 0.80, arousal 0.60)")
    short = _encode(stack, wav, block="[0.0-2.0 s] happy (valence 0.80, arousal 0.60)", max_seq_len=len(full.input_ids) - 40)
    assert not full.truncated and short.truncated and len(short.input_ids) == len(full.input_ids) - 40
    assert (short.audio_start, short.n_audio) == (full.audio_start, full.n_audio)
    span = slice(full.audio_start, full.audio_start + full.n_audio)
    assert short.input_ids[:span.stop] == full.input_ids[:span.stop]  # template head + audio untouched
    assert short.n_label_tokens >= 1
    prompt_text = stack.tokenizer.decode([t for t, l in zip(short.input_ids, short.labels) if l == IGNORE_INDEX][span.stop:])
    assert "How does the speaker feel?" in prompt_text and "valence" not in prompt_text  # labels went, question stayed
    with pytest.raises(PromptTooLong):
        _encode(stack, wav, max_seq_len=full.audio_start + full.n_audio)


def test_loss_is_answer_token_cross_entropy(stack, wav):
    enc = _encode(stack, wav)
    other = _encode(stack, wav, content="Is the speaker male or female?", target="Female.")
    states = speech_data.EncoderCache(stack.audio_encoder, None).get([enc, other])
    b = collate([enc, other], stack.tokenizer.pad_token_id)
    loss_sum, n = stack(b["input_ids"], b["attention_mask"], b["labels"], b["audio_mask"], states)
    logits = stack.llm(inputs_embeds=stack.embed(b["input_ids"], b["audio_mask"], states),
                       attention_mask=b["attention_mask"]).logits
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), b["labels"][:, 1:].reshape(-1),
                                            ignore_index=IGNORE_INDEX, reduction="sum")
    assert int(n) == enc.n_label_tokens + other.n_label_tokens
    torch.testing.assert_close(loss_sum, ref, atol=1e-4, rtol=1e-5)


def test_batched_left_padded_generation_equals_one_by_one(stack, wav):
    fmt = PromptFormat(stack.tokenizer, 512)
    n = n_audio_tokens(audio.n_samples(wav), 15)
    items = [fmt.encode(f"q{i}", wav, audio.content_hash(wav), n, speech_data.user_content(q, None))
             for i, q in enumerate(["Why?", "What is said in the recording, and how does the speaker feel?"])]
    cache = speech_data.EncoderCache(stack.audio_encoder, None)
    pad, stop = stack.tokenizer.pad_token_id, fmt.stop_ids()

    def gen(batch: list[Encoded]) -> list[list[int]]:
        t = collate(batch, pad, pad_left=True)
        out = stack.generate(t["input_ids"], t["attention_mask"], t["audio_mask"], cache.get(batch), 6, stop, pad)
        return [[x for x in row if x != pad] for row in out.tolist()]

    assert gen(items) == gen(items[:1]) + gen(items[1:])


def test_encoder_cache_counts_hits_and_survives_a_new_process(stack, wav, tmp_path):
    enc = _encode(stack, wav)
    cache = speech_data.EncoderCache(stack.audio_encoder, tmp_path)
    a = cache.get([enc, enc])[0]
    assert cache.stats()["encoder_cache_misses"] == 2 and len(list(tmp_path.glob("*.pt"))) == 1
    fresh = speech_data.EncoderCache(stack.audio_encoder, tmp_path)  # memory empty: served from disk
    torch.testing.assert_close(fresh.get([enc])[0], a)
    assert fresh.stats()["encoder_cache_hits"] == 1
    off = speech_data.EncoderCache(stack.audio_encoder, tmp_path, enabled=False)
    off.get([enc, enc])
    assert off.stats()["encoder_cache_hits"] == 0


def test_length_grouped_batches_cover_every_sample_once():
    lengths = list(np.random.default_rng(0).integers(10, 500, 103))
    batches = speech_data.length_grouped_batches(lengths, 8, seed=3, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert batches == speech_data.length_grouped_batches(lengths, 8, seed=3, epoch=1)
    assert batches != speech_data.length_grouped_batches(lengths, 8, seed=3, epoch=2)
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    plain = speech_data.length_grouped_batches(lengths, 8, seed=3, epoch=1, group_by_length=False)
    assert spread < 0.5 * np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain])


def test_user_turn_order():
    assert speech_data.user_content("Why?", "[0-1 s] sad") == f"{AUDIO_PLACEHOLDER}\n[0-1 s] sad\nWhy?"
    assert speech_data.user_content("Why?", None) == f"{AUDIO_PLACEHOLDER}\nWhy?"


def test_system_prompt_replaces_the_template_default(stack, wav):
    n = n_audio_tokens(audio.n_samples(wav), 15)
    content = speech_data.user_content("How does the speaker feel?", None)
    got = {s: PromptFormat(stack.tokenizer, 512, s).encode("ex", wav, "k", n, content, "Calm.")
           for s in ("template", "", "Answer about the audio.")}
    text = {s: stack.tokenizer.decode(e.input_ids) for s, e in got.items()}
    own = stack.tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert own.split("<|im_start|>user")[0] == text["template"].split("<|im_start|>user")[0]  # the template's own head
    assert text[""].startswith("<|im_start|>system\n<|im_end|>")  # an empty system turn
    assert text["Answer about the audio."].startswith("<|im_start|>system\nAnswer about the audio.<|im_end|>")
    for e in got.values():  # the audio span, the question and the answer are the same whatever the system turn
        assert stack.tokenizer.decode([t for t in e.labels if t != IGNORE_INDEX]) == "Calm.<|im_end|>\n"
        assert e.n_audio == n and "How does the speaker feel?" in stack.tokenizer.decode(e.input_ids)


def test_auto_dtype_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch):
    monkeypatch.setattr(speech_llm, "cpu_has_native_bf16", lambda: True)
    assert speech_llm.resolve_dtype("auto", CPU) == torch.bfloat16
    monkeypatch.setattr(speech_llm, "cpu_has_native_bf16", lambda: False)
    assert speech_llm.resolve_dtype("auto", CPU) == torch.float32
    assert speech_llm.resolve_dtype("float32", CPU) == torch.float32


def test_a_bf16_stack_trains_float32_weights_under_autocast_and_agrees_with_float32(tiny_checkpoints, wav):
    whisper_dir, llm_dir = tiny_checkpoints
    enc = speech_llm.load_audio_encoder(whisper_dir, 15, CPU, torch.float32)
    losses, grads = {}, {}
    for dt in (torch.float32, torch.bfloat16):
        llm, tok, _ = speech_llm.load_llm(llm_dir, CPU, dt)
        llm = speech_llm.apply_lora(llm, 4, 8, 0.0, ["q_proj", "v_proj"])
        torch.manual_seed(0)
        model = SpeechLLM(enc, llm, tok, 15)
        with torch.no_grad():  # LoRA B starts at 0: move it so that the LoRA path carries signal
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
        assert (model.autocast_dtype is not None) == (dt == torch.bfloat16)
        lora = [m for m in llm.modules() if hasattr(m, "cast_input_dtype_enabled")]
        assert lora and all(m.cast_input_dtype_enabled == (dt == torch.float32) for m in lora)
        e = PromptFormat(tok, 512).encode("ex1", wav, audio.content_hash(wav), n_audio_tokens(audio.n_samples(wav), 15),
                                          speech_data.user_content("How does the speaker feel?", None), "Happy.")
        b = collate([e], tok.pad_token_id)
        loss, n = model(b["input_ids"], b["attention_mask"], b["labels"], b["audio_mask"],
                        speech_data.EncoderCache(enc, None).get([e]))
        (loss / n).backward()
        trainable = {k: p for k, p in model.named_parameters() if p.requires_grad}
        assert all(p.dtype == torch.float32 and p.grad is not None and torch.isfinite(p.grad).all()
                   for p in trainable.values())  # master weights and their gradients stay float32
        losses[dt] = float(loss / n)
        grads[dt] = trainable["adapter.proj.2.weight"].grad.flatten()
    assert abs(losses[torch.bfloat16] - losses[torch.float32]) / losses[torch.float32] < 0.02
    assert torch.nn.functional.cosine_similarity(grads[torch.bfloat16], grads[torch.float32], dim=0) > 0.95


def test_answer_position_logits_equal_the_lms_own_forward(stack, wav, monkeypatch):
    assert stack.llm.config.model_type in speech_llm.PLAIN_HEADS  # the tiny LM takes the answer-positions path
    batch = [_encode(stack, wav), _encode(stack, wav, content="Is the speaker male or female?", target="Female.")]
    states = speech_data.EncoderCache(stack.audio_encoder, None).get(batch)
    b = collate(batch, stack.tokenizer.pad_token_id)
    ours = stack(b["input_ids"], b["attention_mask"], b["labels"], b["audio_mask"], states)
    monkeypatch.setattr(speech_llm, "PLAIN_HEADS", frozenset())  # through the LM's own forward instead
    theirs = stack(b["input_ids"], b["attention_mask"], b["labels"], b["audio_mask"], states)
    assert int(ours[1]) == int(theirs[1]) == sum(e.n_label_tokens for e in batch)
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-4, rtol=1e-5)
