"""python -m paraqa_utils.evaluate: test-set loaders (JSONL, CSV, Hugging Face flat/nested, decoded arrays, bytes,
DatasetDict), an OpenAI-compatible audio endpoint on a loopback fake that checks the audio arrives intact, errors
recorded per item, a resumed run that repeats no call, and the table/EVAL.md."""
from __future__ import annotations

import dataclasses

import base64
import csv
import io

import numpy as np
import pytest
import soundfile as sf

from paraqa_utils import runs
from paraqa_utils.evaluate import endpoint, testsets
from paraqa_utils.evaluate.__main__ import main
from tests.unit.test_llm_fakes import FakeLLMServer

RATE = 16000


def tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture()
def clips(tmp_path):
    paths = {}
    for name, sec, f in (("a", 1.0, 220.0), ("b", 1.5, 440.0), ("long", 35.0, 330.0)):
        paths[name] = tmp_path / f"{name}.wav"
        sf.write(paths[name], tone(sec, f), RATE, subtype="PCM_16")
    return paths


def heard(body) -> np.ndarray:
    part = next(p for p in body["messages"][0]["content"] if p["type"] == "input_audio")
    audio, rate = sf.read(io.BytesIO(base64.b64decode(part["input_audio"]["data"])), dtype="float32")
    assert rate == RATE and part["input_audio"]["format"] == "wav"
    return audio


def make_listener(clips, log):
    originals = {n: sf.read(p, dtype="float32")[0] for n, p in clips.items()}

    def reply(body):
        audio = heard(body)
        question = next(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text")
        match = next((n for n, o in originals.items() if len(o) >= len(audio) and np.allclose(o[:len(audio)], audio,
                                                                                              atol=1e-4)), None)
        log.append((match, len(audio) / RATE, question))
        return f"The speaker sounds calm; I heard clip {match}."
    return reply


def test_jsonl_csv_and_a_hugging_face_folder_map_onto_our_fields(tmp_path, clips):
    rows = [{"audio_path": "a.wav", "question": "How does she feel?", "reference": "Calm.", "question_type": "CE"}]
    runs.write_jsonl(tmp_path / "set.jsonl", rows)
    with open(tmp_path / "set.csv", "w", newline="") as f:
        csv.DictWriter(f, fieldnames=list(rows[0])).writeheader()
        csv.DictWriter(f, fieldnames=list(rows[0])).writerows(rows)
    seen: list[str] = []
    for spec in ("set.jsonl", "set.csv"):
        (name, (items, rejects)), = testsets.load(str(tmp_path / spec), tmp_path / "cache", echo=seen.append).items()
        assert items[0]["audio_path"] == str(clips["a"]) and items[0]["reference"] == "Calm." and not rejects
    assert "mapping {'audio': 'audio_path'" in seen[0] and "columns audio_path, question" in seen[0]
    import datasets

    wav = open(clips["b"], "rb").read()
    nested = datasets.Dataset.from_list([
        {"context": {"array": tone(1.0, 220.0).tolist(), "sampling_rate": RATE, "path": None, "bytes": None},
         "instruction": "What is said?", "answer": "Hello.", "other_attributes": {"question_type": "C"}},
        {"context": {"array": None, "sampling_rate": None, "path": None, "bytes": wav},
         "instruction": "Who speaks?", "answer": "A man.", "other_attributes": {"question_type": "CG"}},
        {"context": {"array": None, "sampling_rate": None, "path": None, "bytes": None},
         "instruction": "Broken?", "answer": "x", "other_attributes": {"question_type": "C"}}])
    datasets.DatasetDict({"test": nested, "dev": nested}).save_to_disk(str(tmp_path / "cpqa"))
    with pytest.raises(testsets.TestSetError, match="choose a split with @SPLIT: it has test, dev"):
        testsets.load(f"hf:{tmp_path / 'cpqa'}", tmp_path / "cache")
    (name, (items, rejects)), = testsets.load(f"hf:{tmp_path / 'cpqa'}@test", tmp_path / "cache", echo=seen.append).items()
    assert [it["question_type"] for it in items] == ["C", "CG"] and [it["reference"] for it in items] == ["Hello.", "A man."]
    assert np.allclose(sf.read(items[0]["audio_path"], dtype="float32")[0], tone(1.0, 220.0), atol=1e-4)  # array -> WAV
    assert np.allclose(sf.read(items[1]["audio_path"], dtype="float32")[0], sf.read(clips["b"], dtype="float32")[0])
    assert len(rejects) == 1 and "neither a path, bytes nor an array" in rejects[0]["reason"]
    with pytest.raises(testsets.TestSetError, match="cannot map question.*available columns: context, .*instruction"):
        testsets.load(f"hf:{tmp_path / 'cpqa'}@test", tmp_path / "cache", {"question": "prompt_text"})


def audiobench_folder(path, clips, layout: str, qtype: bool) -> str:
    """Clips a and b in AudioBench's flat (`context` audio, `instruction`, `answer` strings) or nested ({text, audio}
    each) layout, saved with `save_to_disk`; audio built as a {bytes, path} struct, then cast to undecoded Audio
    (no torchcodec needed); question types in `question_type` (flat) or `other_attributes.question_type` (nested)."""
    import datasets
    from datasets import Features, Value

    def features(audio):
        if layout == "flat":
            out = {"context": audio, "instruction": Value("string"), "answer": Value("string")}
        else:
            out = {c: {"text": Value("string"), "audio": audio} for c in ("context", "instruction", "answer")}
        if qtype:
            out.update({"question_type": Value("string")} if layout == "flat"
                       else {"other_attributes": {"question_type": Value("string")}})
        return Features(out)
    rows = []
    for n, q, r, t in (("a", "How does she sound?", "Calm.", "CE"), ("b", "Who is speaking?", "A man.", "CG")):
        audio = {"bytes": clips[n].read_bytes(), "path": f"{n}.wav"}
        row = ({"context": audio, "instruction": q, "answer": r} if layout == "flat" else
               {"context": {"text": None, "audio": audio}, "instruction": {"text": q, "audio": None},
                "answer": {"text": r, "audio": None}})
        if qtype:
            row.update({"question_type": t} if layout == "flat" else {"other_attributes": {"question_type": t}})
        rows.append(row)
    struct = {"bytes": Value("binary"), "path": Value("string")}
    ds = datasets.Dataset.from_list(rows, features=features(struct)).cast(features(datasets.Audio(decode=False)))
    ds.save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize("layout,qtype", [("flat", False), ("flat", True), ("nested", False), ("nested", True)])
def test_audiobench_flat_and_nested_folders_map_load_and_answer_through_the_command(tmp_path, clips, capsys,
                                                                                    layout, qtype):
    folder = audiobench_folder(tmp_path / f"ab_{layout}", clips, layout, qtype)
    seen: list[str] = []
    (name, (items, rejects)), = testsets.load("hf:" + folder, tmp_path / "cache", echo=seen.append).items()
    picked = ({"audio": "context", "question": "instruction", "reference": "answer"} if layout == "flat" else
              {"audio": "context.audio", "question": "instruction.text", "reference": "answer.text"})
    if qtype:
        picked["question_type"] = "question_type" if layout == "flat" else "other_attributes.question_type"
    assert f"mapping {picked}" in seen[0] and not rejects and name == f"ab_{layout}"
    assert [(it["question"], it["reference"]) for it in items] == [("How does she sound?", "Calm."),
                                                                    ("Who is speaking?", "A man.")]
    for it, n in zip(items, "ab"):  # the WAV written from the undecoded bytes holds the source samples
        assert np.array_equal(sf.read(it["audio_path"], dtype="int16")[0], sf.read(clips[n], dtype="int16")[0])
    assert [it["question_type"] for it in items] == (["CE", "CG"] if qtype else [None, None])
    log: list = []
    out = tmp_path / "eval"
    with FakeLLMServer(make_listener(clips, log)) as srv:
        assert main(["--test-set", "hf:" + folder, "--model", f"fake=openai:m@{srv.base_url}", "--out", str(out)]) == 0
    assert f"mapping {picked}" in capsys.readouterr().out  # the command prints the mapping it used
    assert sorted(log) == [("a", 1.0, "How does she sound?"), ("b", 1.5, "Who is speaking?")]
    res = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert [(r["question_type"], r["n_items"]) for r in res] == ([("CE", "1"), ("CG", "1")] if qtype else [("-", "2")])
    if layout == "nested":  # --map still overrides; naming a struct takes its child of the field's kind
        (_, (items, _)), = testsets.load("hf:" + folder, tmp_path / "cache", {"question": "answer",
                                                                             "reference": "instruction.text"},
                                         echo=seen.append).items()
        assert "'question': 'answer.text', 'reference': 'instruction.text'" in seen[-1]
        assert [(it["question"], it["reference"]) for it in items] == [("Calm.", "How does she sound?"),
                                                                        ("A man.", "Who is speaking?")]
        import datasets  # a hub copy decodes its nested Audio (torchcodec): the loader reads it undecoded

        ds = datasets.load_from_disk(folder)
        feats = ds.features.copy()
        feats["context"]["audio"] = datasets.Audio()
        ds.cast(feats).save_to_disk(str(tmp_path / "decoding"))
        (_, (items, _)), = testsets.load(f"hf:{tmp_path / 'decoding'}", tmp_path / "cache", echo=seen.append).items()
        assert [it["question"] for it in items] == ["How does she sound?", "Who is speaking?"]


def test_an_audio_endpoint_hears_the_clip_intact_and_errors_are_recorded_per_item(tmp_path, clips):
    items = [{"id": n, "test_set": "t", "audio_path": str(clips[n]), "question": f"Q {n}?", "reference": "R",
              "question_type": "C", "explicit_block": "Detected voice cues: sad"} for n in ("a", "b", "long")]
    items.append({**items[0], "id": "gone", "audio_path": str(tmp_path / "missing.wav")})
    items.append({**items[0], "id": "down", "question": "Q FAIL?"})
    log: list = []
    with FakeLLMServer(make_listener(clips, log), faults={"Q FAIL?": ["500"] * 9}) as srv:
        m = endpoint.EndpointModel.parse("fake", f"openai:fake-audio@{srv.base_url}#max_audio_s=30")
        rows = {r["id"]: r for r in endpoint.answer(m, items, tmp_path / "cache")}
    assert rows["a"]["answer"].endswith("clip a.") and rows["b"]["answer"].endswith("clip b.")
    assert ("long", 30.0, "Q long?") in log and rows["long"]["audio_policy"] == "first_30s"  # AudioBench's policy
    assert all("Detected voice cues" not in q for _, _, q in log)  # no explicit labels unless asked for
    assert rows["gone"]["error"].startswith("audio:") and rows["down"]["error"].startswith("endpoint:")
    assert rows["a"]["error"] is None and rows["a"]["audio_policy"] == "whole"
    windows = endpoint.EndpointModel.parse("w", f"openai:x@{srv.base_url}#long_audio=windows")
    parts, policy = endpoint.pieces(tone(35.0, 330.0), windows)
    assert policy == "windows_30s" and [len(p) / RATE for p in parts] == [30.0, 5.0]
    with pytest.raises(endpoint.ModelSpecError, match="long_audio='middle'"):
        endpoint.EndpointModel.parse("w", "openai:x@http://h#long_audio=middle")


def test_the_command_answers_judges_tabulates_and_resumes_without_repeating_calls(tmp_path, clips):
    runs.write_jsonl(tmp_path / "set.jsonl", [
        {"id": "1", "audio_path": "a.wav", "question": "How does the speaker sound?",
         "reference": "The speaker sounds calm.", "question_type": "CE"},
        {"id": "2", "audio_path": "b.wav", "question": "How does the speaker sound?", "reference": "",
         "question_type": "CE"},
        {"id": "3", "audio_path": "a.wav", "question": "", "reference": "x"}])
    log: list = []
    out = tmp_path / "eval"
    with FakeLLMServer(make_listener(clips, log)) as srv:
        args = ["--test-set", str(tmp_path / "set.jsonl"), "--model", f"fake=openai:m@{srv.base_url}",
                "--judge", "offline", "--out", str(out)]
        assert main(args) == 0
        first = srv.n_answered
        assert main(args) == 0 and srv.n_answered == first == 2  # the rerun asked nothing
    res = list(csv.DictReader(open(out / "results.csv")))
    assert len(res) == 1 and res[0]["model"] == "fake" and res[0]["n_items"] == "2" and res[0]["n_judged"] == "1"
    assert float(res[0]["score"]) > 50  # "sounds calm" against "sounds calm": the offline judge's high grade
    assert [r["reason"] for r in runs.read_jsonl(out / "rejects.jsonl")] == ["empty question"]
    assert (out / "fig_results.png").stat().st_size > 5000 and "offline" in (out / "EVAL.md").read_text()
    preds = list(runs.read_jsonl(out / "predictions.jsonl"))
    assert {p["id"] for p in preds} == {"set:1", "set:2"} and all(p["audio_policy"] == "whole" for p in preds)
    assert main(["--test-set", str(tmp_path / "nope.jsonl"), "--model", "x=openai:m@http://h", "--out", str(out)]) == 2


@pytest.mark.parametrize("readouts", ["", "transcript,labels"])
def test_a_trained_condition_folder_answers_as_04_did(tmp_path, tiny_checkpoints, readouts, monkeypatch):
    """Train a tiny adapter+LoRA condition with 04's code, then load its folder as a model: its answers to the
    same test items equal the ones 04 wrote (the saved weights, not a fresh init, are what answers). With read-outs
    the condition starts from an aligned base, and its folder alone (heads included) answers the same."""
    import shutil

    from paraqa_utils.evaluate import condition_model
    from paraqa_utils.finetune import make_config, run_condition
    from paraqa_utils.testing.fake_stages import make_fake_merge

    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    run = tmp_path / "run"
    make_fake_merge(run, n_train_clips=4, n_test_clips=2)
    d = run / "03_explicit_merge"
    cfg = make_config(condition="implicit", train_file=str(d / "train_implicit.jsonl"), run_dir=str(run),
                      out_dir=str(tmp_path / "04"), whisper_model=tiny_checkpoints[0], llm_model=tiny_checkpoints[1],
                      train_mode="adapter+lora", n_steps=3, batch_size=2, lr=0.05, max_new_tokens=4,
                      torch_threads=1, progress=False, test_files={"emotion": str(d / "test_emotion.jsonl")},
                      readouts=readouts, base_steps=2)
    if readouts:
        from paraqa_utils.finetune import prepare_base

        monkeypatch.setenv("PARAQA_CACHE", str(tmp_path / "machine"))
        aligned = prepare_base(runs.Stage(run, "04_finetune"), cfg)
        cfg = dataclasses.replace(cfg, base_path=aligned.path)
    run_condition(cfg)
    if readouts:
        shutil.rmtree(tmp_path / "machine" / "bases")  # the folder must answer without the base it started from
    ref = {p["item_id"]: p["answer"] for p in runs.read_jsonl(tmp_path / "04" / "implicit" / "predictions.jsonl")}
    (name, (items, _)), = testsets.load(f"run:{run}:emotion", tmp_path / "cache", echo=lambda _: None).items()
    m = condition_model.ConditionModel.parse("implicit", f"paraqa:{tmp_path / '04' / 'implicit'}")
    rows = condition_model.answer(m, items, tmp_path / "cache" / "m")
    assert {r["id"]: r["answer"] for r in rows} == ref and len(ref) == 2
    assert not any(r["explicit"] for r in rows)  # implicit was trained without labels: none in its prompts
    with pytest.raises(condition_model.ConditionModelError, match="not a trained condition folder"):
        condition_model.ConditionModel.parse("x", f"paraqa:{tmp_path}")


def test_a_tiny_qwen2_audio_answers_through_its_processor_and_generate(tmp_path, clips):
    from paraqa_utils.evaluate import hf_model
    from paraqa_utils.testing.tiny_models import save_tiny_qwen2_audio

    folder = save_tiny_qwen2_audio(tmp_path / "models")
    m = hf_model.HfAudioLLM.parse("qwen", f"hf:{folder}#max_new_tokens=4")
    proc, model = hf_model.load(m)
    prompt = hf_model.chat_text(proc, "How does the speaker feel?")
    assert prompt.count("<|AUDIO|>") == 1 and "How does the speaker feel?" in prompt
    items = [{"id": n, "test_set": "t", "audio_path": str(clips[n]), "question": "Q?", "question_type": "C"}
             for n in ("a", "long")] + [{"id": "gone", "test_set": "t", "audio_path": str(tmp_path / "x.wav"),
                                        "question": "Q?"}]
    rows = {r["id"]: r for r in hf_model.answer(m, items)}
    assert rows["a"]["error"] is None and rows["a"]["answer"] and rows["a"]["audio_policy"] == "whole"
    assert rows["long"]["audio_policy"] == "first_30s" and rows["gone"]["error"].startswith("audio:")
    with pytest.raises(endpoint.ModelSpecError, match="could not load"):
        hf_model.load(hf_model.HfAudioLLM.parse("x", f"hf:{tmp_path / 'nothing'}"))


def test_hf_batched_greedy_answers_equal_one_at_a_time_answers(tmp_path, clips):
    """Left-padded batches of clips of 1, 1.5 and 35 s (two 30 s windows, split across batches of 2) and questions of
    different lengths answer exactly as one piece at a time; a long clip's windows are joined in order; an unreadable
    clip is its own item's error."""
    from paraqa_utils.evaluate import hf_model
    from paraqa_utils.testing.tiny_models import save_tiny_qwen2_audio

    folder = save_tiny_qwen2_audio(tmp_path / "models")
    long = sf.read(clips["long"], dtype="float32")[0]
    for n, part in (("w0", long[:30 * RATE]), ("w1", long[30 * RATE:])):
        sf.write(tmp_path / f"{n}.wav", part, RATE, subtype="PCM_16")
    items = [{"id": n, "test_set": "t", "audio_path": str(tmp_path / f"{n}.wav"), "question": q}
             for n, q in (("a", "How?"), ("gone", "Q?"), ("long", "What does the speaker say, and how?"),
                          ("b", "Who speaks here?"), ("w0", "What does the speaker say, and how?"),
                          ("w1", "What does the speaker say, and how?"))]
    answers = {}
    for bs in (1, 2, 8):
        m = hf_model.HfAudioLLM.parse("q", f"hf:{folder}#max_new_tokens=6,long_audio=windows,batch_size={bs}")
        assert m.batch_size == bs
        answers[bs] = {r["id"]: (r["answer"], r["error"], r["audio_policy"]) for r in hf_model.answer(m, items)}
    assert answers[1] == answers[2] == answers[8]
    one = {k: v[0] for k, v in answers[1].items()}
    assert len({one["a"], one["b"], one["w0"], one["w1"]}) == 4  # the answers tell the clips apart
    assert one["long"] == f"{one['w0']} {one['w1']}" and answers[1]["long"][2] == "windows_30s"
    assert answers[8]["gone"][1].startswith("audio:") and all(answers[8][k][1] is None for k in one if k != "gone")
    assert hf_model.HfAudioLLM.parse("d", f"hf:{folder}").batch_size == 8


def test_external_models_in_a_run_join_04s_predictions_and_05_judges_them(tmp_path, tiny_checkpoints):
    import shutil

    from paraqa_utils import finetune
    from paraqa_utils.evaluate import in_run
    from paraqa_utils.judge.llm_judge import load_items
    from paraqa_utils.testing.fake_stages import make_fake_merge

    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    run = tmp_path / "run"
    make_fake_merge(run, n_train_clips=2, n_test_clips=2)
    stage = runs.Stage(run, "04_finetune")
    base = finetune.make_config(whisper_model=tiny_checkpoints[0], llm_model=tiny_checkpoints[1], max_new_tokens=2,
                                max_test_items=0, torch_threads=1, progress=False)
    plan = finetune.plan(stage, base, "baseline", zero_shot=True)
    plan.pop("baseline")  # the untrained floor is enough here: no training
    summaries = finetune.run_plan(plan)
    questions: list[str] = []

    def reply(body):
        questions.append(next(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text"))
        return "The speaker sounds happy."
    with FakeLLMServer(reply) as srv:
        with pytest.raises(endpoint.ModelSpecError, match="name of a trained condition"):
            in_run.external_predictions(stage, {"zero_shot": f"openai:m@{srv.base_url}"}, plan)
        external = in_run.external_predictions(stage, {"gpt": f"openai:m@{srv.base_url}"}, plan)
    n_items = sum(1 for f in plan["zero_shot"].test_files.values() for _ in open(f))
    assert external["gpt"]["n_items"] == n_items == len(questions) and external["gpt"]["n_failed"] == 0
    assert not any("Detected voice cues" in q for q in questions)  # plain prompts: no labels for an external model
    finetune.merge_predictions(stage, plan, external)
    finetune.finish(stage, plan, summaries, None, external)
    items = load_items(runs.Stage(run, "05_judge"))
    by = {c: sum(it["condition"] == c for it in items) for c in ("zero_shot", "gpt")}
    assert by == {"zero_shot": n_items, "gpt": n_items}
    assert all(it["answer"] == "The speaker sounds happy." for it in items if it["condition"] == "gpt")
    assert runs.read_json(stage.dir / "metrics.json")["external_models"]["gpt"]["kind"] == "openai-audio-endpoint"


def test_base64_audio_is_not_counted_as_prompt_tokens():
    from paraqa_utils.llm.client import text_chars

    audio = {"type": "input_audio", "input_audio": {"data": "A" * 200_000, "format": "wav"}}
    assert text_chars([{"type": "text", "text": "How does she feel?"}, audio]) == len("How does she feel?")
    assert text_chars("plain text") == 10


def test_a_set_whose_every_item_is_refused_is_an_error_before_any_model_is_called(tmp_path, clips, capsys):
    """Exit 2 naming the set and its first five reasons; rejects.jsonl still holds every refusal. With several sets,
    one wholly refused set is the error (a silently empty set hid a wrong mapping); a partly refused one answers."""
    runs.write_jsonl(tmp_path / "bad.jsonl", [{"id": str(k), "audio_path": "a.wav", "question": "", "reference": "r"}
                                              for k in range(7)])
    runs.write_jsonl(tmp_path / "good.jsonl", [{"id": "1", "audio_path": "a.wav", "question": "How?", "reference": "r"},
                                               {"id": "2", "audio_path": "a.wav", "question": " ", "reference": "r"}])
    for specs in (["bad"], ["good", "bad"]):
        out = tmp_path / "_".join(specs)
        with FakeLLMServer(lambda body: "x") as srv:
            args = [a for s in specs for a in ("--test-set", str(tmp_path / f"{s}.jsonl"))]
            assert main(args + ["--model", f"m=openai:m@{srv.base_url}", "--out", str(out)]) == 2
            assert srv.n_requests == 0
        err = capsys.readouterr().err
        assert "test set bad (" in err and "all 7 items refused" in err and "test set good" not in err
        assert all(f"bad:{k}: empty question" in err for k in range(5)) and "bad:5" not in err
        assert [r["id"] for r in runs.read_jsonl(out / "rejects.jsonl")] == ["good:2"] * (specs[0] == "good") + [
            f"bad:{k}" for k in range(7)]
        assert not (out / "results.csv").exists()
    with FakeLLMServer(lambda body: "x") as srv:  # the partly refused set alone: its other item is answered
        assert main(["--test-set", str(tmp_path / "good.jsonl"), "--model", f"m=openai:m@{srv.base_url}",
                     "--out", str(tmp_path / "good")]) == 0
        assert srv.n_answered == 1


def test_06s_main_table_puts_an_external_model_beside_the_trained_conditions():
    import pandas as pd

    from paraqa_utils.analysis.tables import item_scores, main_table

    rows = [{"judge": "offline/facets_v2", "condition": c, "test_set": "cpqa_ref", "question_type": "CE",
             "item_id": f"i{k}", "score_100": s, "parse_ok": True, "probe": None}
            for c, scores in (("baseline", [20, 40, 20, 40]), ("gpt", [60, 80, 60, 100])) for k, s in enumerate(scores)]
    table = main_table(item_scores(pd.DataFrame(rows)), n_resamples=200).set_index("condition")
    assert set(table.index) == {"baseline", "gpt"} and table.loc["gpt", "micro"] == 75.0
    assert table.loc["gpt", "rel_improvement_pct"] == pytest.approx(150.0) and table.loc["gpt", "n_paired"] == 4


def test_model_spec_options_are_typed_by_the_model_and_unknown_ones_refused():
    m = endpoint.EndpointModel.parse("w", "openai:x@http://h#max_audio_s=20,explicit=yes,max_tokens=9")
    assert (m.max_audio_s, m.explicit, m.max_tokens) == (20.0, True, 9)
    with pytest.raises(endpoint.ModelSpecError, match="max_audio_s='abc' is not a float"):
        endpoint.EndpointModel.parse("w", "openai:x@http://h#max_audio_s=abc")
    with pytest.raises(endpoint.ModelSpecError, match="unknown option 'temperature'"):
        endpoint.EndpointModel.parse("w", "openai:x@http://h#temperature=1")


def test_a_remote_code_audio_llm_answers_only_when_trusted_and_batches_as_one_at_a_time(tmp_path, clips):
    """MERaLiON's layout (its own code, `speech_token`, `audios=`): refused without trust_remote_code, naming it;
    with it, batched greedy answers equal one-at-a-time ones."""
    from paraqa_utils.evaluate import hf_model
    from paraqa_utils.evaluate.endpoint import ModelSpecError
    from paraqa_utils.testing.tiny_meralion import save_tiny_meralion

    folder = save_tiny_meralion(tmp_path / "models")
    with pytest.raises(ModelSpecError, match=r"runs its own model code.*#trust_remote_code=true"):
        hf_model.load(hf_model.HfAudioLLM.parse("m", f"hf:{folder}"))
    items = [{"id": n, "test_set": "t", "audio_path": str(clips[c]), "question": q}
             for n, c, q in (("a", "a", "How?"), ("b", "b", "Who speaks here, and how do they sound?"))]
    got = {}
    for bs in (1, 2):
        m = hf_model.HfAudioLLM.parse("m", f"hf:{folder}#trust_remote_code=true,max_new_tokens=5,batch_size={bs}")
        got[bs] = {r["id"]: (r["answer"], r["error"]) for r in hf_model.answer(m, items)}
    assert got[1] == got[2] and all(err is None for _, err in got[1].values())
    proc, _ = hf_model.load(m)
    assert proc.speech_token in hf_model.chat_text(proc, "How?")
