"""The one audio reader: resolving manifest paths, mono/resampling, exact lengths, streamed reads, content hashes."""
import hashlib

import numpy as np
import pytest
import soundfile as sf

from paraqa_utils import audio


def test_resolve_audio_is_run_local_for_relative_paths(tmp_path):
    assert audio.resolve_audio(tmp_path, "00_corpus/audio/c1.wav") == tmp_path / "00_corpus/audio/c1.wav"
    assert audio.resolve_audio(tmp_path, "/abs/corpus/x.wav").as_posix() == "/abs/corpus/x.wav"


def test_stereo_44k_becomes_mono_16k_of_the_length_the_header_predicts(tmp_path):
    t = np.arange(44100) / 44100
    left, right = np.sin(2 * np.pi * 440 * t) * 0.5, np.zeros_like(t)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1), 44100)
    y = audio.load_audio(tmp_path / "st.wav")
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == audio.n_samples(tmp_path / "st.wav") == 16000
    assert 0.2 < np.abs(y).max() < 0.3  # the average of a 0.5 tone and silence
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 16000 / len(y) - 440) < 3  # the tone survives resampling
    assert audio.info(tmp_path / "st.wav") == {"frames": 44100, "sample_rate_hz": 44100, "channels": 2,
                                               "duration_s": 1.0}


def test_long_files_are_read_in_blocks_identically(tmp_path, monkeypatch):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 50_000).astype(np.float32)
    sf.write(tmp_path / "long.wav", x, 16000, subtype="FLOAT")
    whole = audio.load_audio(tmp_path / "long.wav")
    monkeypatch.setattr(audio, "_BLOCK_FRAMES", 1000)  # 50 blocks
    assert np.array_equal(audio.load_audio(tmp_path / "long.wav"), whole) and np.allclose(whole, x)


def test_clipping_is_on_for_analysis_and_off_for_tts_pieces(tmp_path):
    x = np.array([0.0, 1.5, -1.5, 0.25], np.float32)
    sf.write(tmp_path / "loud.wav", x, 16000, subtype="FLOAT")
    assert audio.load_audio(tmp_path / "loud.wav").max() < 1.0
    assert np.array_equal(audio.load_audio(tmp_path / "loud.wav", clip=False), x)


def test_bad_audio_is_refused_with_the_reason(tmp_path):
    with pytest.raises(audio.AudioError, match="missing"):
        audio.load_audio(tmp_path / "nope.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(40))
    with pytest.raises(audio.AudioError, match="unreadable"):
        audio.info(tmp_path / "bad.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(audio.AudioError, match="no samples"):
        audio.load_audio(tmp_path / "empty.wav")
    assert audio.load_audio(tmp_path / "empty.wav", check=False).size == 0


def test_content_hash_is_the_sha256_of_the_bytes_and_follows_edits(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, np.zeros(3000, np.float32), 16000)
    assert audio.content_hash(p, 64) == hashlib.sha256(p.read_bytes()).hexdigest()
    before = audio.content_hash(p)
    sf.write(p, np.ones(3000, np.float32) * 0.1, 16000)
    assert audio.content_hash(p) != before and len(before) == 24


def test_excerpt_and_level():
    y = np.ones(16000, np.float32) * 0.1
    assert len(audio.excerpt(y, 0.25, 0.5)) == 4000 and len(audio.excerpt(y, 0.9, 5.0)) == 1600
    assert audio.rms_dbfs(y) == pytest.approx(-20.0, abs=1e-4)
    assert audio.rms_dbfs(np.zeros(10, np.float32)) == float("-inf")
