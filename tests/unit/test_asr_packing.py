"""Packed faster-whisper ASR: a clip of a pack that gets no words is transcribed again alone."""
from __future__ import annotations

import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from paraqa_utils import text
from paraqa_utils.annotate import asr
from paraqa_utils.audio import SAMPLE_RATE_HZ, load_audio


class SkipsRepeats:
    """A stand-in model that, like the measured drop, returns words only for the first of two clips in a pack."""

    def __init__(self):
        self.calls = []

    def transcribe(self, audio, **kw):
        self.calls.append(len(audio) / SAMPLE_RATE_HZ)
        word = SimpleNamespace(word=" hello", start=0.1, end=0.4)
        return [SimpleNamespace(words=[word])], None


def test_a_clip_without_words_in_its_pack_is_retried_alone_and_counted():
    model, stats = SkipsRepeats(), {}
    clips = [np.zeros(SAMPLE_RATE_HZ, np.float32), np.zeros(SAMPLE_RATE_HZ, np.float32)]
    out = asr.transcribe_faster_whisper(model, clips, gap_s=1.0, stats=stats)
    assert [len(w) for w in out] == [1, 1] and stats == {"asr_retried_alone": 1}
    assert model.calls == [3.0, 1.0]  # the pack (1 s + 1 s gap + 1 s), then the second clip alone
    alone = asr.transcribe_faster_whisper(SkipsRepeats(), clips[:1], stats=(s2 := {}))
    assert len(alone[0]) == 1 and s2 == {}  # a pack of one is never retried


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_two_identical_sentences_in_one_pack_both_get_their_words(tmp_path):
    sentence = "The meeting has been moved to Friday afternoon"
    clips = []
    for i, voice in enumerate(("en-us+f2", "en-us+m3")):
        wav = tmp_path / f"same{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), sentence], check=True)
        clips.append(load_audio(wav))
    model, _ = asr.load_faster_whisper("", n_workers=1, cpu_threads=1)
    stats: dict[str, int] = {}
    out = asr.transcribe_faster_whisper(model, clips, "en", 1, 1.0, stats)
    for words, audio in zip(out, clips):
        hyp = " ".join(w["w"] for w in words)
        assert text.wer([sentence], [hyp]) <= 0.35, (hyp, stats)
        assert all(0 <= w["start_s"] <= w["end_s"] <= len(audio) / SAMPLE_RATE_HZ for w in words)
    print("retried alone:", stats.get("asr_retried_alone", 0))
