"""python -m paraqa_utils.evaluate: test-set loaders (JSONL, CSV, Hugging Face flat/nested, decoded arrays, bytes,
DatasetDict), an OpenAI-compatible audio endpoint on a loopback fake that checks the audio arrives intact, errors
recorded per item, a resumed run that repeats no call, and the table/EVAL.md."""
from __future__ import annotations

import base64
import csv
import io
import json

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
