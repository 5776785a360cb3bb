"""04_finetune end to end on tiny random models and a fake finished 03 stage: training, resume, bad input, the stage."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from paraqa_utils import finetune, runs
from paraqa_utils.finetune import condition as finetune_cli
from paraqa_utils.finetune import conditions as finetune_stage
from paraqa_utils.finetune import speech_llm
from paraqa_utils.finetune import training
from paraqa_utils.finetune.config import ConfigError, FinetuneConfig, make_config
from paraqa_utils.params import load_profile
from paraqa_utils.testing.tiny_models import save_tiny_models

PRED_FIELDS = {"item_id", "condition", "test_set", "question_type", "prompt", "answer", "n_tokens", "seconds"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def _tiny(tiny_checkpoints):
    global WHISPER, LLM
    WHISPER, LLM = tiny_checkpoints


WHISPER = LLM = ""


@pytest.fixture(scope="module")
def merged(fake_merged_run) -> Path:
    return fake_merged_run(4, 2)


def tiny_cfg(run: Path, out: Path, condition: str = "baseline", **kw) -> FinetuneConfig:
    d = run / "03_explicit_merge"
    base = dict(condition=condition, train_file=str(d / f"train_{condition}.jsonl"), run_dir=str(run), out_dir=str(out),
                whisper_model=WHISPER, llm_model=LLM, n_steps=2, batch_size=2, max_new_tokens=3, progress=False,
                test_files={s: str(d / f"test_{s}.jsonl") for s in ("emotion", "gender")})
    return make_config(**{**base, **kw})


def log(out: Path, condition: str = "baseline") -> list[dict]:
    return list(runs.read_jsonl(out / condition / "train_log.jsonl"))


def test_config_refuses_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="did you mean 'lora_r'"):
        FinetuneConfig.from_dict({"lora_rank": 4})
    with pytest.raises(ConfigError, match="train_mode"):
        make_config(train_mode="full")
    with pytest.raises(ConfigError, match="batch_size"):
        make_config(batch_size="4")


def test_cli_reports_a_bad_config_in_one_line_without_training(tmp_path, capsys):
    cfg = tmp_path / "config.yaml"
    assert finetune_cli.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    cfg.write_text("lora_rank: 4\n")
    assert finetune_cli.main(["--config", str(cfg)]) == 2
    assert "did you mean 'lora_r'" in capsys.readouterr().err
    cfg.write_text("- a list\n")
    assert finetune_cli.main(["--config", str(cfg)]) == 2
    assert "not a mapping" in capsys.readouterr().err
    cfg.write_text("n_steps: 1\n")
    assert finetune_cli.main(["--config", str(cfg), "--set", "batch_size"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("profile", ["smoke", "demo", "full"])
def test_shipped_profiles_make_valid_configs(profile):
    from paraqa_utils.finetune.launch import LaunchSettings, resolve
    from paraqa_utils.params import stage_config

    block = dict(load_profile(profile)["04_finetune"])
    for k in ("conditions", "zero_shot"):  # notebook-only keys (which conditions to run)
        block.pop(k, None)
    launch_keys = {f.name for f in dataclasses.fields(LaunchSettings)}
    cfg = FinetuneConfig.from_dict({k: v for k, v in block.items() if k not in launch_keys})
    settings = stage_config(LaunchSettings, "04_finetune", {k: v for k, v in block.items() if k in launch_keys})
    # every shipped profile launches on this CPU machine (full's auto is torchrun only where GPUs are visible)
    assert resolve(settings, "cpu").launcher == "inprocess", cfg.condition


def test_schedule_warms_up_then_decays():
    f = training.lr_factor("cosine", warmup_steps=2, total_steps=10)
    assert f(0) < f(1) < f(2) == 1.0 and f(9) < 0.05
    g = training.lr_factor("linear", 0, 10)
    assert g(5) == pytest.approx(0.5)


@pytest.mark.parametrize("mode,ratio", [("adapter", 0.75), ("adapter+lora", 0.25)])
def test_tiny_overfit_loss_decreases(merged, tmp_path, mode, ratio):
    """Two examples, 25 steps: the adapter alone (audio positions only) and with LoRA both fit them."""
    cfg = tiny_cfg(merged, tmp_path, train_mode=mode, n_steps=25, lr=0.02, warmup_ratio=0.0,
                   max_train_examples=2, batch_size=2, schedule="constant", test_files={})
    s = finetune.run_condition(cfg)
    curve = [r["loss"] for r in log(tmp_path)]
    assert len(curve) == 25 and s["steps"] == 25
    assert sum(curve[-3:]) / 3 < ratio * curve[0], curve
    assert (tmp_path / "baseline" / "lora" / "adapter_config.json").exists() == (mode == "adapter+lora")
    assert (tmp_path / "baseline" / "adapter.safetensors").exists()
    saved = finetune.load_config(tmp_path / "baseline" / "config.yaml")
    assert saved == cfg  # the resolved config is saved next to the weights and loads back


def test_resume_continues_exactly(merged, tmp_path, monkeypatch):
    cfg = tiny_cfg(merged, tmp_path / "a", n_steps=4, save_every_steps=2, test_files={}, lr=0.01)
    kept = tmp_path / "step2"
    real_save = training.save_checkpoint

    def save_and_keep(folder, model, optimizer, scheduler, step, *a, **kw):
        real_save(folder, model, optimizer, scheduler, step, *a, **kw)
        if step == 2:
            shutil.copytree(folder, kept)  # what a kill after step 2 would have left behind
    monkeypatch.setattr(training, "save_checkpoint", save_and_keep)
    finetune.run_condition(cfg)
    monkeypatch.undo()
    again = dataclasses.replace(cfg, out_dir=str(tmp_path / "b"), resume_from=str(kept))
    s = finetune.run_condition(again)
    assert s["steps"] == 4 and s["steps_this_run"] == 2
    assert [r["loss"] for r in log(tmp_path / "b")] == [r["loss"] for r in log(tmp_path / "a")][2:]
    # a finished condition with the same config and data is not redone
    assert finetune.run_condition(cfg)["seconds"] == runs.read_json(tmp_path / "a" / "baseline" / "summary.json")["seconds"]
    # restarting from step 2 where steps 3-4 were already logged (a kill between checkpoints): each step once
    finetune.run_condition(dataclasses.replace(cfg, resume_from=str(kept), max_new_tokens=4))
    assert [r["step"] for r in log(tmp_path / "a")] == [1, 2, 3, 4]
    with pytest.raises(training.ResumeRefused, match="beyond this run's 1 steps"):
        finetune.run_condition(dataclasses.replace(cfg, n_steps=1))  # its own checkpoint is at step 4
    with pytest.raises(training.ResumeRefused, match="lr: checkpoint has 0.01"):
        finetune.run_condition(dataclasses.replace(cfg, lr=0.1))


def test_resume_refuses_another_conditions_or_models_checkpoint(merged, tmp_path):
    finetune.run_condition(tiny_cfg(merged, tmp_path, test_files={}))
    ckpt = tmp_path / "_cache" / "checkpoints" / "baseline"
    with pytest.raises(training.ResumeRefused, match="condition: checkpoint has 'baseline'"):
        finetune.run_condition(tiny_cfg(merged, tmp_path, "explicit", resume_from=str(ckpt), test_files={}))
    with pytest.raises(training.ResumeRefused, match="llm_model"):
        other_llm = str(save_tiny_models(tmp_path / "other", seed=1)[1])
        finetune.run_condition(tiny_cfg(merged, tmp_path / "x", resume_from=str(ckpt), test_files={}, llm_model=other_llm))
    with pytest.raises(training.ResumeRefused, match="train_mode"):
        finetune.run_condition(tiny_cfg(merged, tmp_path / "y", resume_from=str(ckpt), test_files={},
                                        train_mode="adapter+lora"))


def test_missing_audio_and_overlong_samples_are_skipped_or_cut_and_counted(merged, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(merged, run)
    victim = run / "00_corpus" / "audio" / "clip001.wav"
    victim.unlink()
    s = finetune.run_condition(tiny_cfg(run, tmp_path / "out", max_seq_len=50,
                                        test_files={"gender": str(run / "03_explicit_merge" / "test_gender.jsonl")}))
    assert s["train_n_missing_audio"] == 3  # clip001's asr, emotion and gender examples
    assert s["train_n_truncated"] > 0 and s["n_train_examples"] == 12 - 3 - s["train_n_skipped_too_long"]
    assert s["n_predictions"] == 2 and s["test_n_missing_audio"] == 0


def test_nan_loss_stops_with_step_and_batch_ids(merged, tmp_path, monkeypatch):
    real = speech_llm.SpeechLLM.forward

    def nan_forward(self, *a, **kw):
        loss, n = real(self, *a, **kw)
        return loss * float("nan"), n
    monkeypatch.setattr(speech_llm.SpeechLLM, "forward", nan_forward)
    with pytest.raises(training.NonFiniteLoss, match=r"at step 1 .*example ids: \['baseline:"):
        finetune.run_condition(tiny_cfg(merged, tmp_path, test_files={}))


def test_out_of_memory_names_the_batch_size_and_the_fix(merged, tmp_path, monkeypatch):
    def oom(self, *a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(speech_llm.SpeechLLM, "forward", oom)
    with pytest.raises(training.OutOfMemory, match=r"batch_size=2 .*raise grad_accum"):
        finetune.run_condition(tiny_cfg(merged, tmp_path, test_files={}))


def test_stage_trains_every_condition_and_predicts_with_a_zero_shot_floor(merged, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(merged, run)
    stage = runs.Stage(run, "04_finetune")
    base = make_config(whisper_model=WHISPER, llm_model=LLM, n_steps=1, batch_size=2, max_new_tokens=2,
                          max_test_items=1, progress=False)
    plan = finetune_stage.plan(stage, base, "all", zero_shot=True)
    assert list(plan) == ["zero_shot", "baseline", "pqa_star", "implicit", "implicit_explicit", "explicit"]
    summaries = {c: finetune.run_condition(cfg) for c, cfg in plan.items()}
    finetune_stage.plot_loss_curves(finetune_stage.loss_curves(stage, plan), stage.dir / "fig_loss.png")
    preds = finetune_stage.merge_predictions(stage, plan)
    finetune_stage.finish(stage, plan, summaries)
    assert set(preds.columns) >= PRED_FIELDS
    assert preds.groupby("condition").size().to_dict() == {c: 4 for c in plan}  # 4 test sets x 1 item
    for c, rows in preds.groupby("condition"):
        assert rows["prompt"].str.contains("valence").all() == plan[c].explicit  # labels only where explicit
    m = runs.read_json(stage.dir / "metrics.json")
    assert m["implemented"] and m["n_predictions"] == 24 and m["conditions"]["zero_shot"]["steps"] == 0
    assert m["conditions"]["implicit"]["steps"] == 1 and m["conditions"]["implicit"]["final_loss"] > 0
    assert m["conditions"]["explicit"]["encoder_cache_hit_rate"] == 1.0  # clips were encoded once, earlier
    rec = runs.read_json(stage.dir / "stage.json")
    assert rec["status"] == "done" and "baseline/adapter.safetensors" in rec["outputs"]
    assert "predictions.jsonl" in rec["outputs"] and "baseline/config.yaml" in rec["outputs"]
    assert not any(k.startswith("_cache") for k in rec["outputs"])
    # the saved config is what the CLI runs (a later session on GPUs uses the same file)
    assert finetune_cli.main(["--config", str(stage.dir / "explicit" / "config.yaml"), "--set", "resume=false",
                          "--set", "n_steps=1"]) == 0


def test_stage_fails_instead_of_finishing_empty_when_03_left_nothing(tmp_path):
    up = runs.Stage(tmp_path, "03_explicit_merge")
    up.finish(implemented=False)
    stage = runs.Stage(tmp_path, "04_finetune")
    with pytest.raises(ConfigError, match="recorded no conditions.json.*--only 03_explicit_merge"):
        finetune_stage.plan(stage, make_config(), "all")
    with pytest.raises(ConfigError, match="nothing to do"):
        finetune_stage.finish(stage, {}, {})
    assert json.loads((stage.dir / "stage.json").read_text())["status"] == "running"


def test_notebook_tables_handle_empty_and_filled_predictions():
    import pandas as pd

    empty = pd.DataFrame()
    assert finetune.prediction_counts(empty).empty and list(finetune.prediction_examples(empty).columns)[0] == "condition"
    preds = pd.DataFrame([{"condition": c, "test_set": t, "prompt": "p", "answer": "a", "n_tokens": 1}
                          for c in ("zero_shot", "baseline") for t in ("emotion", "gender", "gender")])
    counts = finetune.prediction_counts(preds)
    assert counts.loc["baseline", "gender"] == 2 and counts.loc["zero_shot", "emotion"] == 1
    assert len(finetune.prediction_examples(preds, n=1)) == 2
    table = finetune.summary_table({"baseline": {"steps": 3, "final_loss": 1.5, "extra": 9}})
    assert table.loc["baseline", "steps"] == 3 and "extra" not in table.columns and "seconds" in table.columns


def test_a_condition_whose_loss_turns_nan_is_recorded_and_the_others_run(monkeypatch):
    seen = []

    def fake_run(cfg):
        seen.append(cfg.condition)
        if cfg.condition == "baseline":
            raise training.NonFiniteLoss("loss is nan at step 3 (epoch 0, micro-batch 1/1); example ids: ['b:1']")
        return {"condition": cfg.condition, "steps": 2}

    monkeypatch.setattr(finetune_stage, "run_condition", fake_run)
    plan = {c: make_config(condition=c) for c in ("zero_shot", "baseline", "implicit")}
    out = finetune_stage.run_plan(plan)
    assert seen == ["zero_shot", "baseline", "implicit"] and out["implicit"]["steps"] == 2
    assert "at step 3" in out["baseline"]["failed"] and "['b:1']" in out["baseline"]["failed"]


def test_a_stage_killed_after_some_conditions_resumes_without_retraining_them(merged, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(merged, run)
    stage = runs.Stage(run, "04_finetune")
    base = make_config(whisper_model=WHISPER, llm_model=LLM, n_steps=1, batch_size=2, max_new_tokens=2,
                       max_test_items=1, progress=False)
    plan = finetune_stage.plan(stage, base, "baseline,implicit,explicit", zero_shot=False)
    trained: list[str] = []
    real_train = training.train

    def train_then_die(model, samples, cache, settings, *a, **kw):
        if a[2]["condition"] == "explicit":
            raise KeyboardInterrupt  # the kill arrives while the third condition trains
        trained.append(a[2]["condition"])
        return real_train(model, samples, cache, settings, *a, **kw)

    monkeypatch.setattr(training, "train", train_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune_stage.run_plan(plan)
    assert trained == ["baseline", "implicit"]
    before = {c: (stage.dir / c / "summary.json").read_text() for c in trained}
    monkeypatch.setattr(training, "train", real_train)
    trained.clear()

    def count(model, samples, cache, settings, *a, **kw):
        trained.append(a[2]["condition"])
        return real_train(model, samples, cache, settings, *a, **kw)

    monkeypatch.setattr(training, "train", count)
    summaries = finetune_stage.run_plan(plan)  # the resumed stage: only the unfinished condition trains
    assert trained == ["explicit"] and set(summaries) == {"baseline", "implicit", "explicit"}
    assert {c: (stage.dir / c / "summary.json").read_text() for c in before} == before  # finished work untouched
