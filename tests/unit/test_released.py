"""04 on released audio-LLMs (speech_llm: hf:...): tiny random checkpoints saved in Qwen2-Audio's and MERaLiON's
layouts train through the same loop, save LoRA in peft's format, and answer as 04 predicted."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from paraqa_utils import audio, runs
from paraqa_utils.finetune import condition as finetune_cli
from paraqa_utils.finetune import released
from paraqa_utils.finetune.config import ConfigError, make_config
from paraqa_utils.testing.tiny_models import save_tiny_qwen2_audio

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def merged(fake_merged_run) -> Path:
    return fake_merged_run(4, 2)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Path:
    return save_tiny_qwen2_audio(tmp_path_factory.mktemp("released"))


@pytest.fixture(scope="module")
def meralion(tmp_path_factory) -> Path:
    from paraqa_utils.testing.tiny_meralion import save_tiny_meralion

    return save_tiny_meralion(tmp_path_factory.mktemp("released"))


@pytest.fixture(params=["qwen2_audio", "meralion"])
def ckpt(request) -> tuple[Path, bool]:
    """(checkpoint folder, trust_remote_code): Qwen2-Audio natively, MERaLiON through its own code."""
    if request.param == "qwen2_audio":
        return request.getfixturevalue("qwen"), False
    return request.getfixturevalue("meralion"), True


def released_model(folder: Path, trust: bool):
    """The checkpoint loaded as a researcher would: its config's class, or its own code's."""
    import transformers
    from transformers import AutoConfig, AutoModel, AutoProcessor

    arch = AutoConfig.from_pretrained(folder, trust_remote_code=trust).architectures[0]
    cls = getattr(transformers, arch, None) or AutoModel
    return (cls.from_pretrained(folder, dtype=torch.float32, trust_remote_code=trust).eval(),
            AutoProcessor.from_pretrained(folder, trust_remote_code=trust), released.FAMILIES[arch])


def cfg_for(run: Path, out: Path, spec: str, condition: str = "implicit", **kw):
    d = run / "03_explicit_merge"
    base = dict(condition=condition, train_file=str(d / f"train_{condition}.jsonl"), run_dir=str(run), out_dir=str(out),
                speech_llm=spec, train_mode="lora", lora_target_modules="q_proj,k_proj,v_proj,o_proj", n_steps=8,
                batch_size=4, max_train_examples=4, lr=0.02, schedule="constant", warmup_ratio=0.0, max_new_tokens=4, progress=False, base="none", device="cpu", dtype="float32",
                test_files={s: str(d / f"test_{s}.jsonl") for s in ("emotion", "cpqa_ref")})
    return make_config(**{**base, **kw})


def test_the_encoder_and_prompt_match_the_processor_and_the_released_forward(ckpt, merged, tmp_path):
    """Our parts (cached encoder states -> projector -> LM) give the released model's own logits, and our prompt ids
    are the processor's (audio token repeated as it repeats it)."""
    from paraqa_utils.finetune.model import setup
    from paraqa_utils.finetune.speech_data import collate, encode_records, prompt_format, user_content

    folder, trust = ckpt
    cfg = cfg_for(merged, tmp_path, f"hf:{folder}", train_mode="adapter+lora", trust_remote_code=trust)
    model, cache, _, _ = setup(cfg)
    enc = model.audio_encoder
    hf, proc, _ = released_model(folder, trust)
    fmt = prompt_format(model, cfg)
    for n in (481, 16000, 31999, 480000, 500000):  # the processor's count of audio tokens, to 30 s and past it
        got = proc(text=f"x{fmt.audio_token}", audio=[np.zeros(n, np.float32)], sampling_rate=16000, return_tensors="pt")
        assert enc.n_tokens(n) == int((got["input_ids"] == fmt.audio_fill_id).sum())
    rec = next(runs.read_jsonl(merged / "03_explicit_merge" / "train_implicit.jsonl"))
    (s,) = encode_records([rec], fmt, merged, cfg.stack_k, False, True, {})
    wave = audio.load_audio(s.audio_path, 16000)
    prompt_ids = s.input_ids[:len(s.labels) - s.n_label_tokens]
    text = fmt._render(user_content(rec["instruction"], rec.get("explicit_block")), None)[0].replace("<audio>", fmt.audio_token)
    ref = proc(text=text, audio=[wave], sampling_rate=16000, return_tensors="pt")
    assert prompt_ids == ref["input_ids"][0].tolist()
    # over max_seq_len: the answer's tail, then the start of the user text are cut; the audio span and the
    # template's tail stay (the processor's audio end marker sits between the span and the user text)
    n_answer = s.n_label_tokens
    short = dataclasses.replace(cfg, max_seq_len=len(s.input_ids) - (n_answer - 1) - 3)
    (cut,) = encode_records([rec], prompt_format(model, short), merged, cfg.stack_k, False, True, {})
    assert cut.truncated and len(cut.input_ids) == short.max_seq_len and cut.n_label_tokens == 1
    kept = cut.input_ids[:len(cut.input_ids) - 1]
    assert kept[:s.audio_start + s.n_audio] == prompt_ids[:s.audio_start + s.n_audio]
    tail = len(prompt_ids) - (s.audio_start + s.n_audio) - 3
    assert kept[-tail // 2:] == prompt_ids[-tail // 2:] and len(kept) == len(prompt_ids) - 3
    with torch.no_grad():
        want = hf(**ref).logits[0]
        t = collate([s], model.tokenizer.pad_token_id)
        n = len(prompt_ids)
        embeds = model.embed(t["input_ids"][:, :n], t["audio_mask"][:, :n], cache.get([s]))
        ours = model.llm(inputs_embeds=embeds).logits[0]
    assert torch.allclose(ours, want, atol=1e-4), (ours - want).abs().max()


def test_a_released_checkpoint_trains_saves_lora_and_answers_as_04_predicted(ckpt, merged, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from paraqa_utils.evaluate import condition_model
    from paraqa_utils.finetune.model import setup
    from paraqa_utils.finetune.speech_data import prompt_format

    folder_in, trust = ckpt
    cfg = cfg_for(merged, tmp_path, f"hf:{folder_in}", train_mode="adapter+lora", trust_remote_code=trust)
    summary = finetune_cli.run_condition(cfg)
    curve = [r["loss"] for r in runs.read_jsonl(tmp_path / "implicit" / "train_log.jsonl")]
    assert len(curve) == 8 and sum(curve[-2:]) / 2 < 0.8 * curve[0], curve  # the same 4 examples every step
    folder = tmp_path / "implicit"
    lora_cfg = json.loads((folder / "lora" / "adapter_config.json").read_text())
    assert lora_cfg["base_model_name_or_path"] == str(folder_in)
    preds = {p["item_id"]: p for p in runs.read_jsonl(folder / "predictions.jsonl")}
    assert len(preds) == summary["n_predictions"] > 0 and sum(p["n_tokens"] > 0 for p in preds.values()) >= 3
    # the released model, its projector and its LoRA loaded the way a researcher would: the same greedy answers
    hf, proc, fam = released_model(folder_in, trust)
    assert summary["released"]["projector"] == fam.projector
    released.part(hf, fam.projector).load_state_dict(load_file(str(folder / "adapter.safetensors")))
    hf = PeftModel.from_pretrained(hf, str(folder / "lora")).eval()
    m, _, _, _ = setup(cfg)
    fmt = prompt_format(m, cfg)
    items = {r["item_id"]: r for name in cfg.test_files for r in runs.read_jsonl(Path(cfg.test_files[name]))}
    for item_id, p in list(preds.items())[:3]:
        it = items[item_id]
        text = fmt._render(f"<audio>\n{it['question']}", None)[0].replace("<audio>", fmt.audio_token)
        inputs = proc(text=text, audio=[audio.load_audio(audio.resolve_audio(merged, it["audio_path"]), 16000)],
                      sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            out = hf.generate(**inputs, max_new_tokens=cfg.max_new_tokens, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        stop = set(fmt.stop_ids())
        new = new[:next((i for i, t in enumerate(new) if t in stop), len(new))]
        assert len(new) == p["n_tokens"] > 0, item_id
        assert proc.tokenizer.decode(new, skip_special_tokens=True).strip() == p["answer"], item_id
    del hf
    # `paraqa:` evaluation of the condition folder: 04's own predictions
    m = condition_model.ConditionModel.parse("c", f"paraqa:{folder}")
    rows = condition_model.answer(m, [{"id": i, "test_set": items[i]["test_set"], "question": items[i]["question"],
                                       "audio_path": str(audio.resolve_audio(merged, items[i]["audio_path"])),
                                       "question_type": items[i].get("question_type")} for i in preds],
                                  tmp_path / "eval_cache")
    assert {r["id"]: r["answer"] for r in rows} == {i: p["answer"] for i, p in preds.items()}


def test_a_killed_released_run_resumes_exactly(qwen, merged, tmp_path):
    """4 steps with checkpoints, then resumed to 8: the same curve as 8 steps in one go (LoRA alone, frozen projector)."""
    straight = cfg_for(merged, tmp_path / "a", f"hf:{qwen}", test_files={})
    finetune_cli.run_condition(straight)
    half = cfg_for(merged, tmp_path / "b", f"hf:{qwen}", test_files={}, n_steps=4, save_every_steps=2)
    finetune_cli.run_condition(half)
    resumed = finetune_cli.run_condition(dataclasses.replace(half, n_steps=8, resume=True))
    a = [r["loss"] for r in runs.read_jsonl(tmp_path / "a" / "implicit" / "train_log.jsonl")]
    b = [r["loss"] for r in runs.read_jsonl(tmp_path / "b" / "implicit" / "train_log.jsonl")]
    assert resumed["steps"] == 8 and b == pytest.approx(a, rel=1e-5)
    assert not (tmp_path / "b" / "implicit" / "adapter.safetensors").exists()  # lora: the projector stays the checkpoint's
    other = cfg_for(merged, tmp_path / "b", f"hf:{qwen}", test_files={}, n_steps=9, resume=True, lora_r=4)
    with pytest.raises(finetune_cli.training.ResumeRefused, match="lora"):
        finetune_cli.run_condition(other)


def test_bad_released_checkpoints_are_refused_by_name(qwen, meralion, merged, tmp_path):
    with pytest.raises(ConfigError, match="speech_llm"):
        make_config(speech_llm="qwen2-audio")
    with pytest.raises(ConfigError, match="only a released audio-LLM"):
        make_config(train_mode="lora")
    with pytest.raises(ConfigError, match="readouts"):
        make_config(speech_llm=f"hf:{qwen}", readouts="transcript")
    cfg = cfg_for(merged, tmp_path, f"hf:{qwen}", lora_target_modules="q_proj,qkv_proj,wq")
    with pytest.raises(released.ReleasedModelError, match=r"qkv_proj, wq match no linear layer.*it has .*q_proj"):
        released.build(cfg, torch.device("cpu"), torch.float32)
    # an architecture 04 cannot take apart: named, with the supported ones
    odd = tmp_path / "odd"
    odd.mkdir()
    conf = json.loads((qwen / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**conf, "architectures": ["WhisperForConditionalGeneration"]}))
    with pytest.raises(released.ReleasedModelError, match="WhisperForConditionalGeneration is not supported.*"
                                                           "MERaLiONForConditionalGeneration.*Qwen2Audio"):
        released.family_of(f"hf:{odd}", False)
    # MERaLiON's own code runs only when asked to
    with pytest.raises(released.ReleasedModelError, match="MERaLiONForConditionalGeneration runs the checkpoint's own "
                                                           "code.*trust_remote_code: true"):
        released.build(cfg_for(merged, tmp_path, f"hf:{meralion}"), torch.device("cpu"), torch.float32)
    with pytest.raises(released.ReleasedModelError, match="cannot read its config.json"):
        released.family_of(f"hf:{tmp_path / 'nothing'}", False)
    # a processor whose tokenizer lacks the audio token, and one without any
    import shutil

    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    from paraqa_utils.testing.tiny_models import tiny_tokenizer

    deaf = tmp_path / "deaf"
    shutil.copytree(qwen, deaf)
    for f in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        (deaf / f).unlink(missing_ok=True)
    Qwen2AudioProcessor(WhisperFeatureExtractor(feature_size=128), tiny_tokenizer()).save_pretrained(deaf)
    with pytest.raises(released.ReleasedModelError, match=r"audio token '<\|AUDIO\|>' is not a single token"):
        released.build(cfg_for(merged, tmp_path, f"hf:{deaf}"), torch.device("cpu"), torch.float32)

    class NoAudio:
        tokenizer = tiny_tokenizer()
    with pytest.raises(released.ReleasedModelError, match="no audio token"):
        released.audio_token_of(NoAudio(), "hf:x")


def test_the_stage_plans_released_conditions_without_a_base_and_with_the_same_explicit_block(qwen, merged, tmp_path):
    import shutil

    from paraqa_utils import finetune
    from paraqa_utils.finetune import conditions as finetune_stage

    run = tmp_path / "run"
    shutil.copytree(merged, run)
    stage = runs.Stage(run, "04_finetune")
    settings = make_config(speech_llm=f"hf:{qwen}", train_mode="lora", lora_target_modules="q_proj,v_proj", n_steps=1,
                           batch_size=2, max_new_tokens=2, max_test_items=1, progress=False, device="cpu",
                           dtype="float32")
    plan = finetune_stage.plan(stage, settings, "implicit,implicit_explicit", zero_shot=True)
    aligned = finetune.prepare_base(stage, settings)
    assert aligned.path == "" and "no base phase" in aligned.notes[0]
    plan = finetune.start_from(plan, aligned)
    summaries = {c: finetune.run_condition(cfg) for c, cfg in plan.items()}
    preds = finetune_stage.merge_predictions(stage, plan)
    finetune_stage.finish(stage, plan, summaries)
    for c, rows in preds.groupby("condition"):  # 03's explicit block, as our own stack gets it
        assert rows["prompt"].str.contains("valence").all() == plan[c].explicit
    m = runs.read_json(stage.dir / "metrics.json")
    assert m["conditions"]["zero_shot"]["steps"] == 0 and m["conditions"]["implicit"]["steps"] == 1
    assert m["n_predictions"] == 12 and summaries["implicit"]["speech_llm"] == f"hf:{qwen}"


def test_the_memory_check_counts_the_released_7_to_10b_shapes_and_says_how_to_fit_them(tmp_path):
    from paraqa_utils.finetune import memory
    from paraqa_utils.testing.released_shapes import save_shape_config

    qwen_lm, qwen_rest = memory.released_param_count(f"hf:{save_shape_config('qwen2-audio-7b', tmp_path)}")
    assert 8.3e9 < qwen_lm + qwen_rest < 8.5e9 and 7.7e9 < qwen_lm < 7.8e9  # Qwen2-Audio-7B: 8.4 B in all
    meralion = f"hf:{save_shape_config('meralion-2-10b', tmp_path)}"
    assert memory.released_param_count(meralion) is None  # its own code: counted only with trust_remote_code
    mer_lm, mer_rest = memory.released_param_count(meralion, trust_remote_code=True)
    assert 9.2e9 < mer_lm < 9.3e9 and 0.8e9 < mer_rest < 0.9e9  # Gemma-2-9B (tied head) + Whisper encoder + adapter
    assert memory.problem(qwen_lm, qwen_rest, 2, 1, False, free_gib=22.0) is None  # a 24 GB card holds Qwen2-Audio
    msg = memory.problem(mer_lm, mer_rest, 2, 1, False, free_gib=22.0)
    assert msg and "18.8 GiB per GPU" in msg and "fsdp=true with n_processes >= 2" in msg
    assert memory.problem(mer_lm, mer_rest, 2, 2, True, free_gib=22.0) is None


@pytest.mark.parametrize("sharding", ["fsdp", "zero2"])
def test_two_gloo_processes_follow_one_process_and_save_peft_lora(qwen, fake_merged_run, tmp_path, sharding):
    """A released checkpoint through 04's launcher: FSDP2, or DeepSpeed ZeRO-2, over 2 processes (LoRA + projector)
    matches 1 process with twice the accumulation; peft's lora/ and the predictions are written."""
    from paraqa_utils.finetune import launch as L
    from paraqa_utils.finetune import workers as W

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("needs torch.distributed with gloo")
    run = fake_merged_run(8, 2)
    common = dict(train_mode="adapter+lora", lora_dropout=0.0, n_steps=3, batch_size=2, max_train_examples=0,
                  max_test_items=2, torch_threads=1, test_files={"emotion": str(run / "03_explicit_merge" / "test_emotion.jsonl")})
    finetune_cli.run_condition(cfg_for(run, tmp_path / "one", f"hf:{qwen}", grad_accum=2, **common))
    zero2 = str(Path(__file__).resolve().parents[2] / "params" / "launch" / "zero2_bf16.json")
    shard = {"fsdp": True} if sharding == "fsdp" else {"deepspeed_config": zero2}
    launch = L.resolve(L.LaunchSettings(launcher="torchrun", n_processes=2, n_nodes=1, node_rank=0, main_address="",
                                        main_port=0, accelerate_config=""), device="cpu", n_cpus=2,
                       deepspeed=shard.get("deepspeed_config", ""))
    two = W.run_subprocess(cfg_for(run, tmp_path / "two", f"hf:{qwen}", **shard, **common), launch, lambda _: None)
    a = [r["loss"] for r in runs.read_jsonl(tmp_path / "one" / "implicit" / "train_log.jsonl")]
    b = [r["loss"] for r in runs.read_jsonl(tmp_path / "two" / "implicit" / "train_log.jsonl")]
    assert b == pytest.approx(a, rel=1e-4) and a[0] > a[-1]
    assert two["world_size"] == 2 and two["n_predictions"] == 2
    assert json.loads((tmp_path / "two" / "implicit" / "lora" / "adapter_config.json").read_text())["peft_type"] == "LORA"
