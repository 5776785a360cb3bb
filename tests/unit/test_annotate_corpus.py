"""A tiny espeak-ng emotional corpus written as a finished 00_corpus stage (for stage-01 tests and the bench)."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from paraqa_utils import runs

# Prosody presets per emotion (espeak-ng pitch 0-99, words/min, amplitude) and the V/A/D we claim for them.
PRESETS = {
    "neutral": dict(p=45, s=165, a=100, vad=(0.45, 0.40, 0.50)),
    "happy": dict(p=75, s=190, a=140, vad=(0.80, 0.70, 0.60)),
    "sad": dict(p=25, s=115, a=60, vad=(0.20, 0.25, 0.30)),
    "angry": dict(p=50, s=215, a=170, vad=(0.15, 0.85, 0.80)),
    "fearful": dict(p=90, s=230, a=80, vad=(0.20, 0.75, 0.20)),
    "surprised": dict(p=95, s=160, a=150, vad=(0.65, 0.80, 0.50)),
}
SENTENCES = [
    "The meeting moved to Friday afternoon.", "I found the keys under the sofa.",
    "She finally answered my message.", "We missed the last train home.",
    "The results came back this morning.", "He painted the whole kitchen blue.",
    "They cancelled the concert again.", "My brother bought a new car.",
    "The letter arrived two days late.", "Our team won the final match.",
]
VOICES = {"female": "en-us+f3", "male": "en-us+m3"}
SR = 16000


def synth(text: str, emotion: str, gender: str, out: Path) -> float:
    """One espeak-ng utterance at 16 kHz mono; returns its duration."""
    pr = PRESETS[emotion]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", VOICES[gender], "-p", str(pr["p"]), "-s", str(pr["s"]),
                        "-a", str(pr["a"]), "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(["sox", "-V1", str(raw), "-r", str(SR), "-c", "1", "-b", "16", str(out)], check=True)
    return sf.info(str(out)).duration


def _segment(text: str, emotion: str, gender: str, start: float, dur: float, rng) -> dict:
    v, a, d = (float(np.clip(x + rng.normal(0, 0.03), 0, 1)) for x in PRESETS[emotion]["vad"])
    return {"start_s": round(start, 3), "end_s": round(start + dur, 3), "speaker": f"spk_{gender}",
            "gender": gender, "emotion": emotion, "valence": round(v, 3), "arousal": round(a, 3),
            "dominance": round(d, 3), "text": text, "congruence": None}


def make_fake_corpus(run_dir: Path, n_per_split: dict[str, int] | None = None,
                     emotions: tuple[str, ...] = tuple(PRESETS), bad_clips: bool = True, mixed_clip: bool = True,
                     seed: int = 0) -> list[dict]:
    """Write `00_corpus/clips.jsonl` + audio into `run_dir` and finish the stage.

    n_per_split: clips per emotion per split. `bad_clips` adds a corrupt and a silent test clip; `mixed_clip`
    adds a test clip whose two sentences carry different emotions (0.5 s pause between them).
    """
    n_per_split = n_per_split or {"train": 4, "dev": 1, "test": 2}
    rng = np.random.default_rng(seed)
    stage = runs.Stage(run_dir, "00_corpus")
    audio_dir = stage.dir / "audio"
    audio_dir.mkdir(exist_ok=True)
    clips, k = [], 0
    for split, n in n_per_split.items():
        for emotion in emotions:
            for _ in range(n):
                gender = ("female", "male")[k % 2]
                text = SENTENCES[k % len(SENTENCES)]
                cid = f"fake_{k:04d}"
                path = audio_dir / f"{cid}.wav"
                dur = synth(text, emotion, gender, path)
                clips.append({"clip_id": cid, "audio_path": f"00_corpus/audio/{cid}.wav", "duration_s": round(dur, 3),
                              "sample_rate_hz": SR, "split": split, "source": "synthetic",
                              "segments": [_segment(text, emotion, gender, 0.0, dur, rng)]})
                k += 1
    if mixed_clip:
        cid, parts, segs, t = "fake_mixed", [], [], 0.0
        for j, emo in enumerate(("happy", "sad") if {"happy", "sad"} <= set(emotions) else emotions[:2]):
            tmp = audio_dir / f".part{j}.wav"
            dur = synth(SENTENCES[j], emo, "female", tmp)
            parts += [sf.read(str(tmp), dtype="float32")[0], np.zeros(SR // 2, np.float32)]
            segs.append(_segment(SENTENCES[j], emo, "female", t, dur, rng))
            t += dur + 0.5
            tmp.unlink()
        audio = np.concatenate(parts[:-1])
        sf.write(str(audio_dir / f"{cid}.wav"), audio, SR)
        clips.append({"clip_id": cid, "audio_path": f"00_corpus/audio/{cid}.wav", "duration_s": len(audio) / SR,
                      "sample_rate_hz": SR, "split": "test", "source": "synthetic", "segments": segs})
    if bad_clips:
        (audio_dir / "fake_corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" + bytes(64))
        sf.write(str(audio_dir / "fake_silent.wav"), np.zeros(3 * SR, np.float32), SR)
        for cid in ("fake_corrupt", "fake_silent"):
            clips.append({"clip_id": cid, "audio_path": f"00_corpus/audio/{cid}.wav", "duration_s": 3.0,
                          "sample_rate_hz": SR, "split": "test", "source": "synthetic",
                          "segments": [_segment("Nothing here.", "neutral", "male", 0.0, 3.0, rng)]})
    runs.write_jsonl(stage.dir / "clips.jsonl", clips)
    stage.write_metrics(n_clips=len(clips))
    stage.finish()
    return clips


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_fake_corpus_is_a_finished_stage_with_distinct_prosody(tmp_path):
    from paraqa_utils.annotate.features import egemaps_llds
    from paraqa_utils.audio import load_audio

    clips = make_fake_corpus(tmp_path, {"train": 2}, emotions=("sad", "fearful"), bad_clips=False,
                             mixed_clip=False)
    stage = runs.Stage(tmp_path, "01_annotate")
    path = stage.input("00_corpus/clips.jsonl")  # hash-checked like the real stage's output
    assert len(list(runs.read_jsonl(path))) == 4
    f0 = {}
    for c in clips:
        llds, names = egemaps_llds(load_audio(tmp_path / c["audio_path"]))
        x = llds[:, names.index("F0semitoneFrom27.5Hz_sma3nz")]
        f0[(c["segments"][0]["emotion"], c["segments"][0]["gender"])] = np.median(x[x > 0])
    for gender in ("female", "male"):  # same voice, different preset: several semitones apart
        assert f0[("fearful", gender)] > f0[("sad", gender)] + 3, f0
