"""A small finished 03_explicit_merge stage made of espeak-ng clips (tests, benchmarks, trying 04 without 00-03)."""
from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

from paraqa_utils import runs

CONDITIONS = {"baseline": False, "pqa_star": False, "implicit": False, "implicit_explicit": True, "explicit": True}
_TASKS = {"baseline": ("asr", "emotion", "gender"), "explicit": ("asr", "emotion", "gender"),
          "pqa_star": ("asr", "emotion", "gender", "pqa_star"),
          "implicit": ("asr", "emotion", "gender", "pqa_star", "cpqa"),
          "implicit_explicit": ("asr", "emotion", "gender", "pqa_star", "cpqa")}
# (emotion, espeak pitch 0-99, words per minute): crude prosody, enough for plumbing, not for emotion claims
_EMOTIONS = [("happy", 80, 190), ("sad", 25, 120), ("angry", 55, 210), ("neutral", 50, 160)]
_SENTENCES = ["the meeting moved to friday", "i left my keys at home", "the train is late again",
              "we won the match last night", "my sister is coming to visit", "the report is due tomorrow"]
_N_TRAIN_SENTENCES = 4  # the first four are the train split's, the others the test split's


def _write_corpus(run_dir: Path, clips: list[dict[str, Any]]) -> None:
    """00_corpus/clips.jsonl in the corpus stage's record format (one segment per clip), finished."""
    import soundfile as sf

    stage = runs.Stage(run_dir, "00_corpus")
    rows = []
    for c in clips:
        dur = sf.info(str(run_dir / c["audio_path"])).duration
        seg = {"start_s": 0.0, "end_s": round(dur, 3), "speaker": c["speaker"], "gender": c["gender"],
               "emotion": c["emotion"], "text": c["text"], "sentence_id": c["sentence_id"]}
        rows.append({"clip_id": c["clip_id"], "audio_path": c["audio_path"], "duration_s": round(dur, 3),
                     "split": c["split"], "source": "fake", "has_emotion_labels": True, "segments": [seg]})
    runs.write_jsonl(stage.dir / "clips.jsonl", rows)
    stage.write_metrics(fake=True, n_clips=len(rows))
    stage.finish()


def _render(text: str, path: Path, voice: str, pitch: int, wpm: int, tts: bool = True) -> None:
    if not tts:  # a machine without espeak-ng (a bare GPU box): a pitch-coded tone of speech-like length
        import numpy as np
        import soundfile as sf

        t = np.arange(int(22050 * len(text.split()) * 60 / wpm)) / 22050
        sf.write(path, (0.1 * np.sin(2 * np.pi * (80 + pitch) * t)).astype(np.float32), 22050)
        return
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is missing: apt-get install -y espeak-ng (or pass tts=False for tones)")
    # espeak-ng writes 22.05 kHz WAV: the resampling path to 16 kHz is exercised on purpose
    subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(wpm), "-w", str(path), text],
                   check=True, capture_output=True)


def make_fake_merge(run_dir: Path, n_train_clips: int = 6, n_test_clips: int = 3, seed: int = 0,
                    long_clip_s: float = 0.0, tts: bool = True) -> Path:
    """Write clips + train_<condition>.jsonl ×5 + test_<set>.jsonl ×4 + conditions.json and finish the stage.

    `long_clip_s` > 0 adds one test clip of about that length (several 30 s encoder windows).
    """
    rng = random.Random(seed)
    run_dir = Path(run_dir)
    audio = run_dir / "00_corpus" / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    clips: list[dict[str, Any]] = []
    for i in range(n_train_clips + n_test_clips):
        emotion, pitch, wpm = _EMOTIONS[i % len(_EMOTIONS)]
        gender = ("female", "male")[i % 2]
        train = i < n_train_clips
        # the splits share no voice and no sentence, as in the real corpus (the base's leakage check needs it)
        sentence = i % _N_TRAIN_SENTENCES if train else _N_TRAIN_SENTENCES + i % (len(_SENTENCES) - _N_TRAIN_SENTENCES)
        text = _SENTENCES[sentence]
        voice = f"{'f' if gender == 'female' else 'm'}{1 + (i // 2) % 2 if train else 3}"
        path = audio / f"clip{i:03d}.wav"
        _render(text, path, f"en-us+{voice}", pitch, wpm, tts)
        clips.append({"clip_id": f"clip{i:03d}", "audio_path": str(path.relative_to(run_dir)), "text": text,
                      "speaker": voice, "sentence_id": f"s{sentence}",
                      "emotion": emotion, "gender": gender, "split": "train" if train else "test",
                      "block": f"[0.0-2.0 s] {emotion} (valence {rng.random():.2f}, arousal {rng.random():.2f}), {gender}"})
    if long_clip_s > 0:
        path = audio / "clip_long.wav"
        n_words = int(long_clip_s * 2.6)  # ~160 words per minute
        _render(" ".join((_SENTENCES * 50)[i] for i in range(n_words // 5)), path, "en-us", 50, 160, tts)
        clips.append({**clips[-1], "clip_id": "clip_long", "audio_path": str(path.relative_to(run_dir))})
    _write_corpus(run_dir, clips)
    stage = runs.Stage(run_dir, "03_explicit_merge")

    def example(c: dict[str, Any], cond: str, task: str) -> dict[str, Any]:
        q, a = {"asr": ("Transcribe the speech.", c["text"]),
                "emotion": ("How does the speaker feel?", f"The speaker sounds {c['emotion']}."),
                "gender": ("Is the speaker male or female?", f"The speaker is {c['gender']}."),
                "pqa_star": ("What tone does the speaker use?", f"A {c['emotion']} tone."),
                "cpqa": (f"Why might the speaker sound {c['emotion']} here?",
                         f"Because {c['text']}, which makes them {c['emotion']}.")}[task]
        return {"example_id": f"{cond}:{task}:{c['clip_id']}", "condition": cond, "task": task,
                "clip_id": c["clip_id"], "audio_path": c["audio_path"], "instruction": q,
                "explicit_block": c["block"] if CONDITIONS[cond] else None, "target": a}

    train = [c for c in clips if c["split"] == "train"]
    for cond in CONDITIONS:
        runs.write_jsonl(stage.dir / f"train_{cond}.jsonl", [example(c, cond, t) for c in train for t in _TASKS[cond]])
    runs.write_json(stage.dir / "conditions.json",
                    {c: {"train_file": f"train_{c}.jsonl", "explicit": e} for c, e in CONDITIONS.items()})
    test = [c for c in clips if c["split"] == "test"]
    sets = {
        "cpqa_ref": [("C", "What is said about the plan?", "{text}", None),
                     ("CE", "Why does the speaker sound {emotion}?", "Because {text}.", None)],
        "cpqa_llm": [("CG", "What does the speaker say, and who is speaking?", "A {gender} voice: {text}.", None)],
        "emotion": [("emotion", "How does the speaker feel?", "{emotion}", "{emotion}")],
        "gender": [("gender", "Is the speaker male or female?", "{gender}", "{gender}")]}
    for name, templates in sets.items():
        runs.write_jsonl(stage.dir / f"test_{name}.jsonl", [
            {"item_id": f"{name}:{c['clip_id']}:{k}", "test_set": name, "question_type": qt, "clip_id": c["clip_id"],
             "audio_path": c["audio_path"], "question": q.format(**c), "reference": r.format(**c),
             "label": lab.format(**c) if lab else None, "explicit_block": c["block"]}
            for c in test for k, (qt, q, r, lab) in enumerate(templates)])
    stage.write_metrics(fake=True, n_clips=len(clips))
    stage.finish()
    return stage.dir
