"""The package functions notebooks 00-02 call in place of inline logic: build, tables, figures, examples, prompts."""
import json

import matplotlib
import numpy as np
import pandas as pd
import soundfile as sf

from paraqa_utils import annotate, corpus, params, runs, synthesize
from tests.unit.test_synthesize import SAD, bow_embed, make_annotation, qa

matplotlib.use("Agg")


def test_build_loads_a_real_corpus_without_recording_a_tts_model(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    line = dict(audio_path=str(tmp_path / "a.wav"), clip_id="one", split="test",
                segments=[dict(start_s=0.0, end_s=1.0, speaker="s1", emotion="happy", valence=0.9)])
    (tmp_path / "m.jsonl").write_text(json.dumps(line) + "\n")
    stage = runs.Stage(tmp_path / "run", "00_corpus")
    cfg = params.stage_config(corpus.CorpusConfig, "00_corpus",
                              {"source": "manifest", "corpus_path": str(tmp_path / "m.jsonl"), "n_clips": 0})
    clips, rejects, wall_s = corpus.build(stage, cfg, progress=False)
    assert [c["clip_id"] for c in clips] == ["one"] and rejects == [] and wall_s >= 0
    assert stage.record["models"] == {}
    seg = corpus.segment_table(clips)
    counts = corpus.count_table(seg)
    assert counts.loc[("All", ""), "All"] == 1 and corpus.clips_per_split(clips) == {"test": 1}


def test_build_synthetic_records_the_tts_model(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("paraqa_utils.corpus.stage.build_synthetic",
                        lambda stage_dir, cfg, progress: seen.update(dir=stage_dir) or ([], []))
    stage = runs.Stage(tmp_path / "run", "00_corpus")
    clips, rejects, _ = corpus.build(stage, params.stage_config(corpus.CorpusConfig, "00_corpus", {}), progress=False)
    assert seen["dir"] == stage.dir and (clips, rejects) == ([], [])
    tts = stage.record["models"]["tts"]
    assert tts["id"] == "espeak-ng+flite" and tts["scripts"] == corpus.SCRIPTS_FILE.name
    assert tts["scripts_sha256"] == runs.sha256_file(corpus.SCRIPTS_FILE)


def test_figures_are_written_and_examples_shown(tmp_path, capsys):
    features = pd.DataFrame(dict(emotion=["sad", "angry", None], gender=["female", "male", "male"],
                                 f0_median_hz=[180.0, 140.0, 120.0], rms_db=[-30.0, -15.0, -20.0]))
    corpus.plot_f0_rms(features, tmp_path / "f0.png")
    segments = pd.DataFrame(dict(valence=[0.2, 0.8], arousal=[0.3, 0.9], emotion=["sad", "happy"]))
    corpus.plot_valence_arousal(segments, tmp_path / "va.png")
    assert (tmp_path / "f0.png").stat().st_size > 0 and (tmp_path / "va.png").stat().st_size > 0
    sf.write(tmp_path / "c.wav", np.zeros(1600, np.float32), 16000)
    clip = dict(clip_id="c1", split="test", duration_s=0.1, audio_path="c.wav",
                segments=[dict(speaker="s", emotion="sad", tts={"engine": "x"})])
    assert corpus.show_examples(tmp_path, [clip], n=1) == [clip]
    assert "c1 test 0.1 s" in capsys.readouterr().out


def test_annotate_tables_and_example():
    clips = [dict(clip_id="a", split="train", duration_s=2.0), dict(clip_id="b", split="train", duration_s=3.0)]
    assert annotate.clip_summary(clips).loc["train"].to_dict() == {"n_clips": 2, "audio_s": 5.0}
    recs = [dict(clip_id="x", kept=False, dominant_emotion=None, gender=None, annotated_transcript=""),
            dict(clip_id="y", kept=True, dominant_emotion="sad", gender="female", annotated_transcript="[0.0-1.0 s] hi")]
    assert annotate.example_text(recs) == "y sad female\n[0.0-1.0 s] hi"
    assert annotate.example_text(recs[:1]).startswith("x None None")
    table = annotate.recogniser_table({"recognisers": {"emotion": {"n_train": 3}, "gender": {"n_train": 4}}})
    assert table.loc["gender", "n_train"] == 4


def test_prompts_are_recorded_and_the_example_prompt_shown(tmp_path):
    stage = runs.Stage(tmp_path / "run", "02_synthesize")
    auto = params.stage_config(synthesize.SynthesizeConfig, "02_synthesize", {"kinds": ["pqa_star"]})
    fcfg = params.stage_config(synthesize.FilterConfig, "02_synthesize", {})
    large = synthesize.with_profile(auto, "http://localhost:8000/v1")  # a user's endpoint: the large profile
    prompts = synthesize.load_prompts(stage, large, fcfg)
    assert list(prompts) == ["pqa_star"] and prompts["pqa_star"].name == "pqa_star_v1.txt"
    assert list(stage.record["prompts"]) == ["pqa_star_v1.txt", "forbidden_references_v1.txt", "label_words_v1.txt"]
    assert synthesize.example_prompt([], large, prompts) == "no clips to ask about"
    shown = synthesize.example_prompt([SAD], large, prompts)
    assert shown.startswith("[prompt_profile: large]") and "1. " in shown
    small = synthesize.with_profile(auto, "")  # the embedded generator: the small profile
    prompts = synthesize.load_prompts(runs.Stage(tmp_path / "run2", "02_synthesize"), small, fcfg)
    shown = synthesize.example_prompt([SAD], small, prompts)
    assert prompts["pqa_star"].name == "small_pairs_v1.yaml" and shown.startswith("[prompt_profile: small]")
    assert "Spoken: " in shown and " s]" not in shown  # the stretch's words, no time codes
    preview = synthesize.clip_preview([SAD])
    assert list(preview.columns) == ["clip_id", "split", "dominant_emotion", "n_segments", "n_words"]


def test_filter_qas_records_the_embedder_and_tables_display(tmp_path):
    stage = runs.Stage(tmp_path / "run", "02_synthesize")
    fcfg = params.stage_config(synthesize.FilterConfig, "02_synthesize", {})
    ann = make_annotation("c1", [("The budget moved to Friday", "sad", "female", 0.2)])
    items = [qa("c1", "What does the speaker say about the budget?", "It moved to Friday."),
             qa("c1", "According to the transcript, what moved?", "The budget.", i=1)]
    kept, rejects, funnel = synthesize.filter_qas(stage, items, [ann], fcfg, embed=bow_embed)
    assert [q["qa_id"] for q in kept] == [items[0]["qa_id"]] and rejects[0]["filter"] == "references"
    assert stage.record["models"]["embedder"]["id"] == "all-MiniLM-L6-v2 (embedded)"
    assert synthesize.as_table(funnel).shape[0] == len(funnel)
    assert synthesize.as_table({"a": 1})["a"] == 1
    out = synthesize.summary({"cpqa": 1}, {"survival": {"cpqa": {"kept_of_requested": 0.5}}})
    assert out["kept_of_requested"] == {"cpqa": 0.5}
    assert synthesize.examples_table([dict(kept[0], reasoning="simple")], 1).shape[0] == 1
