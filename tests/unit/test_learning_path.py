"""The data -> model -> training -> prediction path carries the audio and the explicit labels, or this fails.

Tiny random models, real code path (`finetune.run_condition`): clips of two tone patterns are mapped to two
answers. A model that hears them learns the mapping; the same model given silence at test time cannot tell the
items apart; an explicit block is the only cue when the audio is silent, and reaches the prompt only for explicit
conditions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from paraqa_utils import finetune, runs

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SR = 16000
ANSWERS = {"low": 180.0, "high": 1400.0}  # tone pattern -> answer; both words are in the tiny tokenizer's corpus


def tone(path: Path, hz: float, seconds: float, phase: float, level: float) -> str:
    t = np.arange(int(SR * seconds)) / SR
    pulses = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)  # 3 bursts a second: a pattern, not a constant
    sf.write(path, (level * pulses * np.sin(2 * np.pi * hz * t + phase)).astype(np.float32), SR)
    return path.name


def silence(path: Path, seconds: float) -> str:
    sf.write(path, np.zeros(int(SR * seconds), np.float32), SR)
    return path.name


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A run folder with tone clips, their silent twins, train files and three test sets."""
    run = tmp_path_factory.mktemp("run")
    audio = run / "clips"
    audio.mkdir()
    rng = np.random.default_rng(0)
    train, tones, silent, silent_train = [], [], [], []
    for i in range(16):
        label = ("low", "high")[i % 2]
        clip = tone(audio / f"tr{i}.wav", ANSWERS[label], rng.uniform(0.8, 1.6), rng.uniform(0, 6), rng.uniform(.2, .6))
        mute = silence(audio / f"trs{i}.wav", rng.uniform(0.8, 1.6))
        base = {"condition": "c", "task": "tone", "instruction": "Which tone is it?", "target": label}
        train.append({**base, "example_id": f"tr{i}", "clip_id": f"tr{i}", "audio_path": f"clips/{clip}"})
        silent_train.append({**base, "example_id": f"trs{i}", "clip_id": f"trs{i}", "audio_path": f"clips/{mute}",
                             "explicit_block": f"cue: {label}"})
    for i in range(8):
        label = ("low", "high")[i % 2]
        item = {"question_type": "tone", "question": "Which tone is it?", "reference": label,
                "label": label, "explicit_block": f"cue: {label}"}
        clip = tone(audio / f"te{i}.wav", ANSWERS[label], rng.uniform(0.8, 1.6), rng.uniform(0, 6), rng.uniform(.2, .6))
        tones.append({**item, "test_set": "tones", "item_id": f"te{i}", "clip_id": f"te{i}", "audio_path": f"clips/{clip}"})
        mute = silence(audio / f"tes{i}.wav", rng.uniform(0.8, 1.6))
        silent.append({**item, "test_set": "silent", "item_id": f"tes{i}", "clip_id": f"tes{i}", "audio_path": f"clips/{mute}"})
    for name, rows in {"train_tones": train, "train_silent_cued": silent_train, "test_tones": tones,
                       "test_silent": silent}.items():
        runs.write_jsonl(run / f"{name}.jsonl", rows)
    return run


def train_and_predict(run: Path, out: Path, tiny: tuple[str, str], train: str, tests: list[str],
                      explicit: bool = False) -> tuple[dict, dict[str, list[dict]]]:
    cfg = finetune.make_config(
        condition="c", train_file=str(run / f"{train}.jsonl"), run_dir=str(run), out_dir=str(out), explicit=explicit,
        test_files={t: str(run / f"test_{t}.jsonl") for t in tests}, whisper_model=tiny[0], llm_model=tiny[1],
        train_mode="adapter+lora", n_steps=40, batch_size=4, lr=0.02, warmup_ratio=0.0, schedule="constant",
        max_new_tokens=2, max_test_items=0, resume=False, progress=False, torch_threads=1, group_by_length=False)
    summary = finetune.run_condition(cfg)
    preds = list(runs.read_jsonl(out / "c" / "predictions.jsonl"))
    return summary, {t: [p for p in preds if p["test_set"] == t] for t in tests}


def accuracy(preds: list[dict], run: Path, name: str) -> float:
    gold = {r["item_id"]: r["label"] for r in runs.read_jsonl(run / f"test_{name}.jsonl")}
    return float(np.mean([p["answer"].strip().lower().startswith(gold[p["item_id"]]) for p in preds]))


def test_tones_are_learned_and_silence_cannot_be_told_apart(data, tmp_path, tiny_checkpoints):
    summary, preds = train_and_predict(data, tmp_path, tiny_checkpoints, "train_tones", ["tones", "silent"])
    assert summary["final_loss"] < 0.5 * summary["first_loss"], summary
    assert accuracy(preds["tones"], data, "tones") >= 0.875, preds["tones"]
    # identical (silent) inputs get one answer, whatever it is: at most half of a balanced set can be right
    assert len({p["answer"] for p in preds["silent"]}) == 1 and accuracy(preds["silent"], data, "silent") <= 0.5


def test_the_explicit_block_reaches_the_prompt_only_for_explicit_conditions(data, tmp_path, tiny_checkpoints):
    _, seen = train_and_predict(data, tmp_path / "explicit", tiny_checkpoints, "train_silent_cued", ["silent"],
                                explicit=True)
    assert all("cue: " in p["prompt"] for p in seen["silent"])
    assert accuracy(seen["silent"], data, "silent") >= 0.875, seen["silent"]  # the labels in the prompt get used
    _, plain = train_and_predict(data, tmp_path / "plain", tiny_checkpoints, "train_silent_cued", ["silent"],
                                 explicit=False)
    assert not any("cue: " in p["prompt"] for p in plain["silent"])
    assert accuracy(plain["silent"], data, "silent") <= 0.5
