import json

import pytest

from paraqa_utils import runs


def test_run_dir_is_never_overwritten(runs_root):
    a = runs.make_run_dir("smoke", "r1")
    (a / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="never overwritten"):
        runs.make_run_dir("smoke", "r1")
    assert (a / "keep.txt").read_text() == "precious"
    auto = runs.make_run_dir("demo")
    assert auto.parent == runs_root and auto.name.split("_")[1] == "demo"


def finished(run_dir, name, files):
    st = runs.Stage(run_dir, name)
    for rel, text in files.items():
        (st.dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (st.dir / rel).write_text(text)
    st.write_metrics(n=len(files))
    return st.finish()


def test_stage_records_outputs_and_checks_inputs(runs_root):
    run = runs.make_run_dir("t", "r")
    rec = finished(run, "00_corpus", {"clips.jsonl": "a\n", "audio/x.wav": "w", "_cache/tmp": "c"})
    assert set(rec["outputs"]) == {"clips.jsonl", "audio/x.wav", "metrics.json"}  # cache not hashed
    assert rec["status"] == "done" and rec["duration_s"] >= 0
    nxt = runs.Stage(run, "01_annotate")
    assert nxt.input("00_corpus/clips.jsonl").read_text() == "a\n"
    assert nxt.record["inputs"]["00_corpus/clips.jsonl"] == runs.sha256_file(run / "00_corpus/clips.jsonl")
    assert nxt.upstream_metrics("00_corpus") == {"n": 3}


def test_tampered_upstream_is_refused_with_both_hashes(runs_root):
    run = runs.make_run_dir("t", "r")
    rec = finished(run, "00_corpus", {"clips.jsonl": "a\n"})
    (run / "00_corpus/clips.jsonl").write_text("b\n")
    with pytest.raises(runs.UpstreamError) as exc:
        runs.Stage(run, "01_annotate").input("00_corpus/clips.jsonl")
    assert rec["outputs"]["clips.jsonl"] in str(exc.value)
    assert runs.sha256_file(run / "00_corpus/clips.jsonl") in str(exc.value)


def test_unfinished_missing_and_backward_reads_are_errors(runs_root):
    run = runs.make_run_dir("t", "r")
    with pytest.raises(runs.UpstreamError, match="has not run"):
        runs.Stage(run, "01_annotate").input("00_corpus/clips.jsonl")
    runs.Stage(run, "00_corpus")  # opened, never finished
    with pytest.raises(runs.UpstreamError, match="'running'.*--resume r --only 00_corpus"):
        runs.Stage(run, "01_annotate").input("00_corpus/clips.jsonl")
    finished(run, "00_corpus", {"clips.jsonl": "a"})
    with pytest.raises(runs.UpstreamError, match="recorded no artifact 'nope.jsonl'"):
        runs.Stage(run, "01_annotate").input("00_corpus/nope.jsonl")
    with pytest.raises(runs.UpstreamError, match="only read earlier stages"):
        runs.Stage(run, "00_corpus").input("01_annotate/x")


def test_jsonl_roundtrip_and_torn_last_line(tmp_path):
    p = tmp_path / "a.jsonl"
    assert runs.write_jsonl(p, [{"a": 1}, {"b": float("nan")}]) == 2
    assert list(runs.read_jsonl(p)) == [{"a": 1}, {"b": None}]
    runs.append_jsonl(p, {"c": 3})
    with open(p, "a") as f:
        f.write('{"d": 4, "tor')  # a kill mid-append
    assert [list(r)[0] for r in runs.read_jsonl(p)] == ["a", "b", "c"]
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(json.JSONDecodeError):
        list(runs.read_jsonl(tmp_path / "bad.jsonl"))


def test_write_json_is_strict_and_handles_numpy(tmp_path):
    import numpy as np
    runs.write_json(tmp_path / "m.json", {"x": np.float32(0.5), "y": np.arange(3), "z": float("inf")})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 0.5, "y": [0, 1, 2], "z": None}
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind
