"""04's base phase on tiny random models: built once and reused by key, every condition starts from it (probe loss),
the read-outs, bad bases refused or rebuilt, the leakage guard, and an alignment that learns what only audio carries."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from paraqa_utils import runs
from paraqa_utils.finetune import base_data, base_store, condition, readout
from paraqa_utils.finetune import model as speech_model
from paraqa_utils.finetune import conditions as stage04
from paraqa_utils.finetune.config import ConfigError, make_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WHISPER = LLM = ""


@pytest.fixture(scope="module", autouse=True)
def _tiny(tiny_checkpoints):
    global WHISPER, LLM
    WHISPER, LLM = tiny_checkpoints


@pytest.fixture()
def cache_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PARAQA_CACHE", str(tmp_path / "machine_cache"))
    return tmp_path / "machine_cache"


@pytest.fixture()
def run(fake_merged_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(fake_merged_run(4, 2), dst)
    return dst


def settings(**kw):
    return make_config(**{**dict(whisper_model=WHISPER, llm_model=LLM, train_mode="adapter+lora", n_steps=2,
                                 batch_size=2, max_new_tokens=3, max_test_items=1, progress=False,
                                 readouts="transcript,labels", base="auto", base_steps=6, base_lr=0.02), **kw})


def test_base_is_built_once_and_every_condition_starts_where_it_ended(run, cache_root):
    stage = runs.Stage(run, "04_finetune")
    aligned = stage04.prepare_base(stage, settings())
    assert aligned.built and Path(aligned.path).parent == cache_root / "bases"
    man = aligned.manifest
    assert man["leakage"]["clean"] and man["leakage"]["n_clips"] == 4
    assert set(man["tasks"]) == {"transcribe", "describe", "gender", "emotion"}
    assert man["label_classes"]["gender"] == ["female", "male"] and man["train"]["steps"] == 6
    assert (stage.dir / "base" / "manifest.json").exists() and (stage.dir / "base" / "fig_base_loss.png").exists()
    # the same inputs reuse it; another knob is another key
    again = stage04.prepare_base(stage, settings())
    assert not again.built and again.key == aligned.key
    plan = stage04.start_from(stage04.plan(stage, settings(), "baseline", zero_shot=True), aligned)
    summaries = stage04.run_plan(plan)
    for c in ("zero_shot", "baseline"):
        b = summaries[c]["base"]
        assert b["key"] == aligned.key and b["probe_rel_diff"] < base_store.PROBE_TOLERANCE
    # the untrained stack is somewhere else entirely: the probe tells them apart
    cfg = dataclasses.replace(plan["baseline"], base_path="", readouts="transcript")
    model, cache, reads, _ = speech_model.setup(cfg)
    rows = [r for r in runs.read_jsonl(stage.dir / "base" / "base_train.jsonl")
            if r["example_id"] in set(man["probe"]["example_ids"])]
    speech_model.prepare_readouts(reads, cache, rows, run)
    from paraqa_utils.finetune.speech_data import encode_records, prompt_format

    samples = encode_records(rows, prompt_format(model.tokenizer, cfg), run, cfg.stack_k, False, True, {}, reads)
    untrained = base_store.probe_loss(model, samples, cache)
    assert abs(untrained - man["probe"]["loss"]) / man["probe"]["loss"] > 10 * base_store.PROBE_TOLERANCE
    stage04.merge_predictions(stage, plan)
    stage04.finish(stage, plan, summaries, aligned=aligned)
    m = runs.read_json(stage.dir / "metrics.json")
    assert m["base"]["key"] == aligned.key and m["conditions"]["baseline"]["base"]["key"] == aligned.key
    # the condition folder is self-contained: heads and classes beside the adapter
    assert (stage.dir / "baseline" / speech_model.READOUT_WEIGHTS).exists()
    preds = list(runs.read_jsonl(stage.dir / "baseline" / "predictions.jsonl"))
    assert all("transcript_readout" in p for p in preds)
    other = stage04.prepare_base(stage, settings(base_lr=0.001))
    assert other.key != aligned.key and other.built


def test_a_condition_that_skips_the_base_weights_is_caught(run, cache_root, monkeypatch):
    stage = runs.Stage(run, "04_finetune")
    aligned = stage04.prepare_base(stage, settings())
    plan = stage04.start_from(stage04.plan(stage, settings(), "baseline", zero_shot=False), aligned)
    monkeypatch.setattr(base_store, "load_into", lambda model, folder: base_store.read_manifest(folder))  # loads nothing
    with pytest.raises(base_store.BaseError, match="does not start from the base"):
        condition.run_condition(plan["baseline"])


def test_a_user_base_from_other_settings_or_layout_is_refused(run, cache_root, tmp_path):
    stage = runs.Stage(run, "04_finetune")
    aligned = stage04.prepare_base(stage, settings())
    mine = tmp_path / "my_base"
    shutil.copytree(aligned.path, mine)
    with pytest.raises(base_store.BaseError, match="base_lr: base has 0.02, this run 0.001"):
        stage04.prepare_base(stage, settings(base=str(mine), base_lr=0.001))
    used = stage04.prepare_base(stage, settings(base=str(mine)))
    assert used.path == str(mine) and not used.built
    # a base without a manifest is checked by its tensors: one missing, one unknown
    from safetensors.torch import load_file, save_file

    t = load_file(str(mine / base_store.WEIGHTS))
    t.pop("adapter.proj.0.weight")
    t["adapter.extra"] = torch.zeros(2)
    save_file(t, str(mine / base_store.WEIGHTS))
    (mine / base_store.MANIFEST).unlink()
    plain = tmp_path / "plain"
    shutil.copytree(mine, plain)
    bare = stage04.prepare_base(stage, settings(base=str(plain), readouts="transcript"))
    assert "only its tensor layout is checked" in " ".join(bare.notes)
    cfg = dataclasses.replace(stage04.plan(stage, settings(readouts="transcript"), "baseline", False)["baseline"],
                              base_path=str(plain))
    with pytest.raises(base_store.BaseError, match=r"missing tensors \['adapter.proj.0.weight'\].*unexpected tensors "
                                             r"\['adapter.extra'"):
        condition.run_condition(cfg)
    with pytest.raises(base_store.BaseError, match="no base.safetensors"):
        stage04.prepare_base(stage, settings(base=str(tmp_path / "nowhere")))


def test_a_corrupt_cached_base_is_rebuilt_with_a_note(run, cache_root):
    stage = runs.Stage(run, "04_finetune")
    aligned = stage04.prepare_base(stage, settings())
    w = Path(aligned.path) / base_store.WEIGHTS
    w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])  # a kill mid-write
    again = stage04.prepare_base(stage, settings())
    assert again.built and again.key == aligned.key
    assert any("rebuilt" in n and "sha256" in n for n in again.notes)
    assert base_store.intact(Path(again.path)) is None


def test_the_leakage_guard_refuses_held_out_speakers_and_sentences():
    seg = lambda spk, sent: {"speaker": spk, "sentence_id": sent, "text": "x", "gender": "male", "emotion": "sad",
                             "start_s": 0.0, "end_s": 1.0}
    clips = {"a": {"clip_id": "a", "split": "train", "audio_path": "a.wav", "segments": [seg("v1", "s1")]},
             "b": {"clip_id": "b", "split": "test", "audio_path": "b.wav", "segments": [seg("v1", "s2")]},
             "c": {"clip_id": "c", "split": "dev", "audio_path": "c.wav", "segments": [seg("v3", "s1")]}}
    rows = base_data.examples(clips, {})
    assert {r["clip_id"] for r in rows} == {"a"}  # test and dev clips never become examples
    leak = base_data.leakage(rows, clips)
    assert not leak["clean"] and leak["n_held_out_speakers"] == 1 and leak["n_held_out_sentences"] == 1
    clean = {**clips, "b": {**clips["b"], "segments": [seg("v2", "s2")]}, "c": {**clips["c"], "segments": [seg("v3", "s3")]}}
    assert base_data.leakage(base_data.examples(clean, {}), clean)["clean"]


def test_readout_names_and_labels_without_a_base_are_refused():
    with pytest.raises(ConfigError, match="known read-outs"):
        make_config(readouts="transcript,pitch")
    cfg = settings(readouts="labels")
    with pytest.raises(ConfigError, match="heads are fitted by the base phase"):
        speech_model.setup(cfg)


def test_collapse_loop_keeps_one_copy_of_a_runaway_repeat():
    assert readout.collapse_loop([5, 1, 2, 3, 1, 2, 3, 1, 2]) == [5, 1, 2, 3]
    assert readout.collapse_loop([1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5]
    assert readout.collapse_loop([7, 7]) == [7, 7]  # shorter than a block: left alone


# ------------------------------------------------------------------------------------------------ learns audio
def _tone_run(root: Path, n_per_class: int = 8) -> Path:
    """Clips that differ only in their sound (a low or a high tone, as two 'voices'); every prompt is the same."""
    rng = np.random.default_rng(0)
    clips = []
    for split, n in (("train", n_per_class), ("test", 6)):
        for i in range(2 * n):
            high = i % 2 == 1
            dur = float(rng.uniform(1.0, 2.0))
            t = np.arange(int(16000 * dur)) / 16000
            f = (700.0 if high else 180.0) * float(rng.uniform(0.95, 1.05))
            wav = (float(rng.uniform(0.05, 0.2)) * np.sin(2 * np.pi * f * t)).astype(np.float32)
            cid = f"{split}{i:02d}"
            path = root / "00_corpus" / "audio" / f"{cid}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wav, 16000)
            spk = f"{'hi' if high else 'lo'}-{split}-{i % 3}"
            clips.append({"clip_id": cid, "split": split, "audio_path": str(path.relative_to(root)),
                          "has_emotion_labels": True, "duration_s": dur,
                          "segments": [{"start_s": 0.0, "end_s": dur, "speaker": spk, "sentence_id": f"{split}{i}",
                                        "text": "", "gender": "female" if high else "male",
                                        "emotion": "happy" if high else "sad"}]})
    stage = runs.Stage(root, "00_corpus")
    runs.write_jsonl(stage.dir / "clips.jsonl", clips)
    stage.finish()
    return root


def _nll(model, sample, cache) -> float:
    """The whole answer's negative log-likelihood (the two answers differ in length: no per-token mean)."""
    return base_store.probe_loss(model, [sample], cache) * sample.n_label_tokens


@pytest.mark.parametrize("readouts", ["labels", ""])
def test_the_alignment_learns_a_signal_only_the_audio_carries(tmp_path, cache_root, readouts):
    root = _tone_run(tmp_path / "tones")
    stage = runs.Stage(root, "04_finetune")
    cfg = settings(readouts=readouts, base_steps=200, base_lr=0.01, batch_size=4)  # ~5 s on tiny models
    aligned = stage04.prepare_base(stage, cfg)
    rows = [r for r in runs.read_jsonl(stage.dir / "base" / "base_train.jsonl")]
    assert {r["task"] for r in rows} == {"gender", "emotion"}  # no text: the answer is in the sound alone
    clips = {c["clip_id"]: c for c in runs.read_jsonl(root / "00_corpus" / "clips.jsonl")}
    test = [c for c in clips.values() if c["split"] == "test"]
    test_rows = base_data.examples({c["clip_id"]: {**c, "split": "train"} for c in test}, {})
    test_rows = [r for r in test_rows if r["task"] == "gender"]
    model, cache, reads, _ = speech_model.setup(dataclasses.replace(cfg, base_path=aligned.path, run_dir=str(root),
                                                                 out_dir=str(stage.dir)))
    base_store.load_into(model, Path(aligned.path))
    from paraqa_utils.finetune.speech_data import PromptFormat, encode_records

    fmt = PromptFormat(model.tokenizer, cfg.max_seq_len)
    right = 0
    for r in test_rows:
        truth = clips[r["clip_id"]]["segments"][0]["gender"]
        swap = "male" if truth == "female" else "female"
        wrong = {**r, "target": f"{base_data.NOUN[swap]}: the speaker is {swap}.", "example_id": r["example_id"] + ":w"}
        a, b = encode_records([r, wrong], fmt, root, cfg.stack_k, False, True, {}, reads)
        right += _nll(model, a, cache) < _nll(model, b, cache)
    assert right / len(test_rows) >= 0.85, (right, len(test_rows))
    manifest = json.loads((Path(aligned.path) / base_store.MANIFEST).read_text())
    assert manifest["train"]["final_loss"] < manifest["train"]["first_loss"]


def test_the_probe_table_finds_the_tone_in_the_encoder_and_reports_every_representation(tmp_path, cache_root):
    from paraqa_utils.evaluate import probe

    root = _tone_run(tmp_path / "tones")
    stage = runs.Stage(root, "04_finetune")
    cfg = settings(readouts="labels", base_steps=2)
    aligned = stage04.prepare_base(stage, cfg)
    zero = dataclasses.replace(cfg, condition="zero_shot", train_file="", base_path=aligned.path, run_dir=str(root),
                               out_dir=str(stage.dir), test_files={})
    condition.run_condition(zero)
    assert list(probe.condition_folders(root)) == ["zero_shot"]
    table = probe.probe_table(root, probe.condition_folders(root), max_train_clips=100)
    assert list(table["representation"]) == ["encoder", "encoder_mid", "adapter", "llm_mid", "llm_last"]
    assert (table["n_gender"] == 12).all() and (table["n_emotion"] == 12).all()
    enc = table.set_index("representation").loc["encoder"]
    assert enc["gender_accuracy"] >= 0.9 and enc["emotion_ua"] >= 0.9  # the tone is all there is to hear
    assert probe.main(["--run", str(tmp_path / "nowhere")]) == 2


def test_the_base_key_names_the_prompt_format_and_the_dtype_it_trains_in(monkeypatch):
    from paraqa_utils.finetune import speech_llm

    ours = base_store.inputs(settings(), {}, [], {}, {})
    theirs = base_store.inputs(settings(system_prompt=""), {}, [], {}, {})
    assert base_store.differing_keys(theirs, ours) == ["system_prompt"]
    assert base_store.key_of(theirs) != base_store.key_of(ours)
    # `auto` is another dtype on another CPU: the key holds what it resolved to, so the two never share a base
    monkeypatch.setattr(speech_llm, "cpu_has_native_bf16", lambda: False)
    f32 = base_store.inputs(settings(device="cpu"), {}, [], {}, {})
    monkeypatch.setattr(speech_llm, "cpu_has_native_bf16", lambda: True)
    bf16 = base_store.inputs(settings(device="cpu"), {}, [], {}, {})
    assert (f32["dtype"], bf16["dtype"]) == ("float32", "bfloat16") and base_store.key_of(f32) != base_store.key_of(bf16)
