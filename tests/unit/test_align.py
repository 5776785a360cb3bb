"""CTC forced alignment: our Viterbi on emissions with a known path, and a tiny random Wav2Vec2ForCTC checkpoint
saved in the transformers layout (model, vocab.json tokenizer, feature extractor) through the real code path."""
from __future__ import annotations

import json

import numpy as np
import pytest

from paraqa_utils.annotate import align


def emissions(path: list[int], vocab: int = 4, p: float = 0.9) -> np.ndarray:
    lp = np.full((len(path), vocab), np.log((1 - p) / (vocab - 1)))
    lp[np.arange(len(path)), path] = np.log(p)
    return lp


def test_viterbi_recovers_a_known_path_with_repeated_tokens():
    #        blank x3   a a  _  b b  _  b b  _ _ _   c c c   _ _ _
    path = [0, 0, 0, 1, 1, 0, 2, 2, 0, 2, 2, 0, 0, 0, 3, 3, 3, 0, 0, 0]
    assert align.ctc_align(emissions(path), [1, 2, 2, 3], blank=0) == [(3, 4), (6, 7), (9, 10), (14, 16)]


def test_viterbi_needs_a_blank_between_equal_tokens_and_enough_frames():
    assert align.ctc_align(emissions([2, 0, 2]), [2, 2], blank=0) == [(0, 0), (2, 2)]
    with pytest.raises(align.AlignError, match="2 frames cannot hold 2 tokens"):
        align.ctc_align(emissions([2, 2]), [2, 2], blank=0)  # "bb" needs b, blank, b
    assert align.ctc_align(emissions([0, 1]), [], blank=0) == []


def save_ctc(path, head=True):
    import torch
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Model, Wav2Vec2Processor)

    path.mkdir(parents=True)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate("ABCDEHIOTY")}}
    (path / "vocab.json").write_text(json.dumps(vocab))
    tok = Wav2Vec2CTCTokenizer(str(path / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(path)
    conf = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=16, conv_dim=(16,) * 4, conv_kernel=(10, 3, 3, 3), conv_stride=(5, 4, 4, 4),
                          num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, pad_token_id=0)
    torch.manual_seed(0)
    (Wav2Vec2ForCTC if head else Wav2Vec2Model)(conf).save_pretrained(path)
    return str(path)


def test_a_ctc_checkpoint_retimes_words_in_order_and_inside_the_clip(tmp_path):
    a = align.CtcAligner(save_ctc(tmp_path / "ctc"))
    assert a.blank == 0 and a.upper and a.stride == 320
    audio = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    words = [{"w": "hi", "start_s": 0.0, "end_s": 0.3}, {"w": "42", "start_s": 0.3, "end_s": 0.5},
             {"w": "toy.", "start_s": 0.5, "end_s": 0.9}]
    out = align.CtcAligner.align(a, audio, words)
    assert [w["w"] for w in out] == ["hi", "42", "toy."]
    assert out[1] == words[1]  # no character of "42" is in the vocabulary: its ASR times stay
    assert set(out[0]) == set(words[0]) and (out[0]["start_s"], out[2]["end_s"]) != (0.0, 0.9)  # re-timed, same keys
    assert 0 <= out[0]["start_s"] < out[0]["end_s"] <= out[2]["start_s"] < out[2]["end_s"] <= 1.0


def test_a_checkpoint_without_a_ctc_head_is_refused(tmp_path):
    with pytest.raises(align.AlignError, match="CTC head would be random"):
        align.CtcAligner(save_ctc(tmp_path / "bare", head=False))


def test_align_clips_caches_and_keeps_asr_times_where_alignment_cannot_fit(tmp_path):
    import soundfile as sf

    a = align.CtcAligner(save_ctc(tmp_path / "ctc"))
    sf.write(tmp_path / "long.wav", np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32), 16000)
    sf.write(tmp_path / "short.wav", np.random.default_rng(2).normal(0, 0.1, 1600).astype(np.float32), 16000)
    clips = [{"clip_id": "long", "audio_file": str(tmp_path / "long.wav")},
             {"clip_id": "short", "audio_file": str(tmp_path / "short.wav")}]
    many = [{"w": "abcdehioty" * 2, "start_s": 0.0, "end_s": 0.1}]  # 20 letters: more than 0.1 s has frames
    words = {"long": [{"w": "hi", "start_s": 0.0, "end_s": 0.2}], "short": many}
    out, errors = align.align_clips(a, clips, words, tmp_path / "cache")
    assert list(out) == ["long"] and list(errors) == ["short"] and "frames cannot hold" in errors["short"]
    again, _ = align.align_clips(a, clips[:1], words, tmp_path / "cache")
    assert again == out and len(list((tmp_path / "cache").glob("long-*.json"))) == 1
