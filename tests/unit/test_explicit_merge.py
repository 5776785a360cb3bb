"""Explicit labels, conditions, test sets, leakage guards and exports on hand-made run artifacts."""
import json

import pytest

from paraqa_utils import explicit_merge, params, runs
from paraqa_utils.explicit_merge import labels as em
from paraqa_utils.explicit_merge import exports
from paraqa_utils.explicit_merge import mixtures

EMOS = ["neutral", "happy", "sad", "angry", "fearful", "surprised"]


def merge_cfg(**values):
    """Stage 03's settings: the notebook's defaults (numbers, gender on, annotator labels, seed 0, no caps) + values."""
    return params.stage_config(explicit_merge.MergeConfig, "03_explicit_merge", values)


def seg(i, emo, gender, spk, sid, text, t0=0.0):
    return {"start_s": t0, "end_s": t0 + 2.0, "speaker": spk, "gender": gender, "emotion": emo,
            "valence": 0.1 + 0.1 * (i % 8), "arousal": 0.5, "dominance": 0.4, "text": text, "sentence_id": sid}


@pytest.fixture()
def run(runs_root):
    return make_upstream(runs.make_run_dir("t", "merge"))


def make_upstream(run_dir):
    """Finished 00/01/02 stages: 12 train clips, 4 test clips, disjoint speakers and sentences."""
    clips, anns, qas = [], [], []
    for i in range(16):
        split = "test" if i >= 12 else "train"
        spk = f"{split}_v{i % 2}"
        g = "female" if i % 2 else "male"
        s = [seg(i, EMOS[i % 6], g, spk, f"s{i}a", f"Sentence number {i} is here."),
             seg(i + 1, EMOS[(i + 1) % 6], g, spk, f"s{i}b", f"Then comes line {i} again.", 2.5)]
        clips.append({"clip_id": f"c{i:02d}", "audio_path": f"00_corpus/audio/c{i:02d}.wav", "duration_s": 5.0,
                      "split": split, "segments": s})
        ann_segs = [{k: v for k, v in x.items() if k not in ("text", "speaker", "sentence_id")} | {"emotion_conf": 0.7}
                    for x in s]
        anns.append({"clip_id": f"c{i:02d}", "split": split, "audio_path": f"00_corpus/audio/c{i:02d}.wav",
                     "words": [{"w": "Sentence", "start_s": 0.1, "end_s": 0.5}], "segments": ann_segs,
                     "kept": i != 3, "dominant_emotion": EMOS[i % 6]})
        for kind in ("pqa_star", "cpqa"):
            qas.append({"qa_id": f"{kind}-{i}", "clip_id": f"c{i:02d}", "kind": kind, "question_type": "CE",
                        "question": f"Why does the speaker sound that way in clip {i}?", "answer": "Because."})
    qas.append({"qa_id": "orphan", "clip_id": "gone", "kind": "cpqa", "question_type": "C", "question": "q",
                "answer": "a"})
    for name, files in (("00_corpus", {"clips.jsonl": clips}), ("01_annotate", {"annotations.jsonl": anns}),
                        ("02_synthesize", {"qa_pqa_star.jsonl": [q for q in qas if q["kind"] == "pqa_star"],
                                           "qa_cpqa.jsonl": [q for q in qas if q["kind"] == "cpqa"]})):
        st = runs.Stage(run_dir, name)
        for fname, recs in files.items():
            runs.write_jsonl(st.dir / fname, recs)
        st.finish()
    return run_dir


def test_verbalise_modes():
    segs = [{"start_s": 0, "end_s": 2.0, "emotion": "sad", "gender": "female", "valence": 0.2, "arousal": 0.9,
             "dominance": 0.5},
            {"start_s": 2.0, "end_s": 4.2, "emotion": "sad", "gender": "female", "valence": 0.3, "arousal": 0.8,
             "dominance": 0.5}]
    cats = em.verbalise(segs, "categories")
    assert cats.splitlines()[1:] == ["[0.0-4.2 s] female, sad"]  # equal runs merge
    nums = em.verbalise(segs, "numbers", include_gender=False)
    assert "[0.0-2.0 s] sad (valence 0.20, arousal 0.90, dominance 0.50)" in nums and "female" not in nums
    words = em.verbalise(segs, "words", bins={d: [0.25, 0.6] for d in em.DIMS})
    assert "(valence low, arousal high, dominance mid)" in words
    with pytest.raises(em.MergeError, match="unknown"):
        em.verbalise(segs, "emoji")


def test_template_banks_are_diverse():
    bank = em.load_bank(em.TEMPLATES_FILE)
    for task in ("asr", "emotion_q", "gender_q"):
        assert len(set(bank[task])) >= 20, task


def test_conditions_tests_and_guards(run):
    st = runs.Stage(run, "03_explicit_merge")
    clips, anns, qa_by_clip, dropped = mixtures.load_inputs(st)
    assert dropped["qa_unknown_clip"] == 1
    paths, counts, bins = mixtures.build_conditions(st, merge_cfg(conditions=list(em.CONDITIONS), max_cpqa=5), clips,
                                                    anns, qa_by_clip)
    assert counts["baseline"] == {"asr": 12, "emotion": 11, "gender": 11}  # clip 3 was dropped by condensation
    assert counts["pqa_star"] == {**counts["baseline"], "pqa_star": 12}
    assert counts["implicit"] == {**counts["pqa_star"], "cpqa": 5}  # the cap holds
    recs = {c: list(runs.read_jsonl(p)) for c, p in paths.items()}
    assert all(r["explicit_block"] is None for r in recs["implicit"])
    assert all(r["explicit_block"].startswith("Detected voice cues") for r in recs["implicit_explicit"])
    assert {r["clip_id"] for r in recs["baseline"]} <= {f"c{i:02d}" for i in range(12)}
    conds = json.loads((st.dir / "conditions.json").read_text())
    assert conds["explicit"]["explicit"] and not conds["baseline"]["explicit"]
    tests = mixtures.build_test_sets(clips, anns, qa_by_clip, em.load_bank(em.REFERENCE_FILE),
                                em.load_bank(em.TEMPLATES_FILE), 0, "numbers", bins, True)
    assert len(tests["emotion"]) == 4 and len(tests["gender"]) == 4 and len(tests["cpqa_llm"]) == 4
    types = {it["question_type"] for it in tests["cpqa_ref"]}
    assert types == {"C", "CE", "CG"}
    words = em.load_bank(em.TEMPLATES_FILE)["words"]
    rep = mixtures.leakage_report(paths, tests, clips, anns, "numbers", bins, True, words)
    assert rep["ok"], rep["problems"]
    # each guard trips when its leak is planted
    leaky = dict(tests)
    leaky["emotion"] = [dict(tests["emotion"][0], question=f"Is the speaker {tests['emotion'][0]['label']}?")]
    assert "in the question" in " ".join(mixtures.leakage_report(paths, leaky, clips, anns, "numbers", bins, True,
                                                                  words)["problems"])
    forged = dict(tests)
    forged["gender"] = [dict(tests["gender"][0], explicit_block="Detected voice cues:\n[0.0-5.0 s] female, happy")]
    assert "not built from the annotator" in " ".join(
        mixtures.leakage_report(paths, forged, clips, anns, "numbers", bins, True, words)["problems"])
    with open(paths["baseline"], "a") as f:
        f.write(json.dumps({**recs["baseline"][0], "clip_id": "c13"}) + "\n")
    assert "test clip c13 in training" in " ".join(
        mixtures.leakage_report(paths, tests, clips, anns, "numbers", bins, True, words)["problems"])
    # a human-written set: blocks from 01's annotation of the same clip, none for a clip 01 never saw
    human = [{"item_id": "cpqa_human:0", "clip_id": "c12", "question": "Why?", "label": None},
             {"item_id": "cpqa_human:1", "clip_id": "outside_7", "question": "How?", "label": None}]
    assert mixtures.attach_explicit_blocks(human, anns, "numbers", bins, True) == {
        "items": 2, "with_explicit_block": 1, "without_explicit_block": 1}
    assert human[0]["explicit_block"] == em.verbalise(anns["c12"]["segments"], "numbers", bins, True)
    assert human[0]["explicit_block"].startswith("Detected voice cues") and human[1]["explicit_block"] is None
    recs["baseline"] = list(runs.read_jsonl(paths["baseline"]))[:-1]  # without the planted c13 row
    runs.write_jsonl(paths["baseline"], recs["baseline"])
    rep = mixtures.leakage_report(paths, {**tests, "cpqa_human": human}, clips, anns, "numbers", bins, True, words)
    assert rep["ok"], rep["problems"]
    on_train = [dict(human[0], item_id="cpqa_human:2", clip_id="c00")]  # a human item on a training clip
    mixtures.attach_explicit_blocks(on_train, anns, "numbers", bins, True)
    assert "test clip c00 in training" in " ".join(mixtures.leakage_report(
        paths, {**tests, "cpqa_human": on_train}, clips, anns, "numbers", bins, True, words)["problems"])


def test_a_human_set_gets_blocks_for_annotated_clips_and_says_how_many_lack_one(run, tmp_path, capsys):
    st = runs.Stage(run, "03_explicit_merge")
    _, anns, _, _ = mixtures.load_inputs(st)
    bins = em.label_bins(anns.values())
    human = tmp_path / "human.jsonl"
    runs.write_jsonl(human, [{"clip_id": "c12", "audio_path": "c12.wav", "question": "Why?", "answer": "Tired."},
                             {"audio_path": "elsewhere/x7.wav", "question": "How?", "answer": "Fast."}])
    items, counts = mixtures.human_test_set(human, tmp_path, anns, "numbers", bins, True)
    assert counts == {"items": 2, "with_explicit_block": 1, "without_explicit_block": 1}
    assert items[0]["explicit_block"] == em.verbalise(anns["c12"]["segments"], "numbers", bins, True)
    assert items[1]["clip_id"] == "x7" and items[1]["explicit_block"] is None
    assert "1 of 2 items are on clips 01 did not annotate" in capsys.readouterr().out


def test_empty_condition_and_duplicates_are_errors(run):
    st = runs.Stage(run, "03_explicit_merge")
    clips, anns, qa_by_clip, _ = mixtures.load_inputs(st)
    only_test = {c: a for c, a in anns.items() if a["split"] == "test"}
    with pytest.raises(em.MergeError, match="condition 'baseline' is empty"):
        mixtures.build_conditions(st, merge_cfg(conditions=["baseline"]), clips, only_test, qa_by_clip)
    with pytest.raises(ValueError, match=r"unknown condition\(s\) \['s99'\]; known: baseline, pqa_star"):
        merge_cfg(conditions=["s99"])  # refused before any file is written
    with pytest.raises(em.MergeError, match="condition 'pqa_star' is empty"):  # a cap of 0 on every task
        mixtures.build_conditions(st, merge_cfg(conditions=["pqa_star"], max_asr=0, max_emotion=0, max_gender=0,
                                                max_pqa_star=0), clips, anns, qa_by_clip)
    with pytest.raises(em.MergeError, match="duplicate clip_id 'x'"):
        mixtures.index_by_clip([{"clip_id": "x"}, {"clip_id": "x"}], "annotations.jsonl")


def test_exports_and_human_qa(run, tmp_path):
    src = tmp_path / "train_x.jsonl"
    runs.write_jsonl(src, [{"example_id": "e1", "clip_id": "c00", "audio_path": "00_corpus/audio/c00.wav",
                            "instruction": "Transcribe the audio.", "explicit_block": "Detected voice cues:\n[0-1 s] sad",
                            "target": "hello", "task": "asr"}])
    counts = exports.export_file(src, tmp_path / "exp", run, exports.FORMATS)
    assert counts == {"train_x": {"chat": 1, "llamafactory": 1, "swift": 1, "hf": 1}}
    tagged = json.loads((tmp_path / "exp/swift/train_x.jsonl").read_text())
    assert (tagged["id"], tagged["task"], tagged["clip_id"]) == ("e1", "asr", "c00")
    assert tagged["messages"][0]["content"].startswith("<audio>Detected voice cues")
    assert tagged["audios"][0].endswith("00_corpus/audio/c00.wav") and tagged["messages"][1]["content"] == "hello"
    from datasets import Dataset, load_from_disk
    assert load_from_disk(str(tmp_path / "exp/hf/train_x"))[0]["target"] == "hello"
    # a human-written set as a datasets folder and as JSONL
    Dataset.from_list([{"context": {"path": "a.wav"}, "instruction": "Why?", "answer": "Because."}]) \
        .save_to_disk(str(tmp_path / "human"))
    items = exports.load_human_qa(tmp_path / "human", audio_root=tmp_path)
    assert items[0]["audio_path"] == str(tmp_path / "a.wav") and items[0]["reference"] == "Because."
    (tmp_path / "test_empty.jsonl").write_text("")  # e.g. no test-split QA from the generator
    empty = exports.export_file(tmp_path / "test_empty.jsonl", tmp_path / "exp", run, exports.FORMATS)
    assert empty["test_empty_plain"]["hf"] == empty["test_empty_explicit"]["hf"] == 0
    runs.write_jsonl(tmp_path / "h.jsonl", [{"audio_path": "/x/b.wav", "question": "Q?"}])
    with pytest.raises(exports.ExportError, match="missing answer"):
        exports.load_human_qa(tmp_path / "h.jsonl")


def test_stage_steps_write_test_sets_gate_leaks_and_export(run, tmp_path):
    """What notebook 03 calls, end to end on the hand-made run: the same files and figures the steps promise."""
    st = runs.Stage(run, "03_explicit_merge")
    clips, anns, qa_by_clip, _ = explicit_merge.load_inputs(st)
    shown = explicit_merge.block_examples(anns, True)
    assert [ln for ln in shown.splitlines() if ln.startswith("---")] == [f"--- {m}" for m in em.MODES]
    with pytest.raises(em.MergeError, match="no annotated clip in the training split"):
        explicit_merge.block_examples({c: a for c, a in anns.items() if a["split"] == "test"}, True)
    cfg = merge_cfg(conditions=["baseline", "implicit"])
    paths, counts, bins = explicit_merge.build_conditions(st, cfg, clips, anns, qa_by_clip)
    mix = explicit_merge.mixture_table(counts)
    assert mix.loc["baseline", "total"] == 34 and mix.loc["baseline", "cpqa"] == 0
    tests, test_paths, human_blocks, skipped = explicit_merge.write_test_sets(st, cfg, clips, anns, qa_by_clip, bins)
    assert human_blocks == {} and set(test_paths) == set(mixtures.TEST_SETS) and skipped == {"asr_no_text": 0}
    assert [it["item_id"] for it in runs.read_jsonl(test_paths["asr"])] == [it["item_id"] for it in tests["asr"]]
    assert [r["item_id"] for r in runs.read_jsonl(test_paths["emotion"])] == [it["item_id"] for it in tests["emotion"]]
    types = explicit_merge.types_per_test_set(tests)
    assert types.loc[("emotion", "emotion"), "items"] == 4
    human = tmp_path / "human.jsonl"
    runs.write_jsonl(human, [{"clip_id": "c12", "audio_path": "c12.wav", "question": "Why?", "answer": "Tired."}])
    with_human = merge_cfg(conditions=["baseline", "implicit"], human_qa_path=str(human))
    tests, test_paths, human_blocks, skipped = explicit_merge.write_test_sets(st, with_human, clips, anns, qa_by_clip,
                                                                              bins)
    assert human_blocks == {"items": 1, "with_explicit_block": 1, "without_explicit_block": 0}
    assert test_paths["cpqa_human"].name == "test_cpqa_human.jsonl" and len(tests["cpqa_human"]) == 1
    assert list(runs.read_jsonl(test_paths["cpqa_human"]))[0]["audio_path"] == "c12.wav"  # no audio root: as given
    leak = explicit_merge.check_leakage(st, cfg, paths, tests, clips, anns, bins)
    assert leak["ok"] and json.loads((st.dir / "leakage.json").read_text()) == leak
    with open(paths["baseline"], "a") as f:
        f.write(json.dumps({**next(runs.read_jsonl(paths["baseline"])), "clip_id": "c13"}) + "\n")
    with pytest.raises(em.MergeError, match="leakage guard tripped:\nbaseline: test clip c13 in training"):
        explicit_merge.check_leakage(st, cfg, paths, tests, clips, anns, bins)
    assert not json.loads((st.dir / "leakage.json").read_text())["ok"]  # written before the stage fails
    got = explicit_merge.write_exports(st, {"implicit": paths["implicit"]}, {"gender": test_paths["gender"]},
                                       ["chat", "llamafactory"])
    n_implicit = sum(counts["implicit"].values())
    assert got == {"train_implicit": {"chat": n_implicit, "llamafactory": n_implicit},
                   "test_gender_plain": {"chat": 4, "llamafactory": 4}, "test_gender_explicit": {"chat": 4, "llamafactory": 4}}
    info = json.loads((st.dir / "exports/llamafactory/dataset_info.json").read_text())
    assert set(info) == {"train_implicit", "test_gender_plain", "test_gender_explicit"}
    plain = [json.loads(x) for x in open(st.dir / "exports/llamafactory/test_gender_plain.jsonl")]
    labelled = [json.loads(x) for x in open(st.dir / "exports/llamafactory/test_gender_explicit.jsonl")]
    assert not any("Detected voice cues" in r["messages"][0]["content"] for r in plain)  # no labels leak
    assert all("Detected voice cues" in r["messages"][0]["content"] for r in labelled)
    assert [r["id"] for r in plain] == [it["item_id"] for it in tests["gender"]] and all(r["clip_id"] for r in plain)
    assert sum(1 for _ in open(st.dir / "exports/chat/train_implicit.jsonl")) == n_implicit
    explicit_merge.write_exports(st, {}, {"gender": test_paths["gender"]}, ["chat"])
    assert set(json.loads((st.dir / "exports/llamafactory/dataset_info.json").read_text())) == set(info)  # untouched
    m = explicit_merge.mixture_metrics(counts, tests)
    assert m["conditions"]["baseline"] == {"n_examples": 34, **counts["baseline"]}
    assert m["test_sets"]["cpqa_human"] == 1 and sum(m["cpqa_ref_types"].values()) == len(tests["cpqa_ref"])
    m = explicit_merge.merge_metrics(with_human, counts, tests, {"qa_unknown_clip": 1}, leak, human_blocks, skipped)
    assert list(m) == ["conditions", "test_sets", "cpqa_ref_types", "dropped_inputs", "test_skipped", "leakage_ok",
                       "explicit_mode", "explicit_gender", "template_label_source", "cpqa_human_explicit_blocks"]
    assert m["test_skipped"] == {"asr_no_text": 0} and m["test_sets"]["asr"] == 4
    assert m["dropped_inputs"] == {"qa_unknown_clip": 1} and m["leakage_ok"] is True
    assert (m["explicit_mode"], m["explicit_gender"], m["template_label_source"]) == ("numbers", True, "annotator")
    assert m["cpqa_human_explicit_blocks"] == human_blocks


def test_test_sets_follow_the_settings(run):
    """max_test_clips, the explicit mode and gender reach the test sets; the leakage check uses the same ones."""
    st = runs.Stage(run, "03_explicit_merge")
    clips, anns, qa_by_clip, _ = explicit_merge.load_inputs(st)
    cfg = merge_cfg(conditions=["baseline"], explicit_mode="categories", explicit_gender=False, max_test_clips=2)
    paths, _, bins = explicit_merge.build_conditions(st, cfg, clips, anns, qa_by_clip)
    tests, _, _, _ = explicit_merge.write_test_sets(st, cfg, clips, anns, qa_by_clip, bins)
    assert len({it["clip_id"] for it in tests["emotion"]}) == 2 and len(tests["asr"]) == 2
    block = tests["emotion"][0]["explicit_block"]
    assert block == em.verbalise(anns[tests["emotion"][0]["clip_id"]]["segments"], "categories", bins, False)
    assert "valence" not in block and "male" not in block
    assert explicit_merge.check_leakage(st, cfg, paths, tests, clips, anns, bins)["ok"]
    with pytest.raises(em.MergeError, match="explicit block not built from the annotator"):  # other settings
        explicit_merge.check_leakage(st, merge_cfg(conditions=["baseline"]), paths, tests, clips, anns, bins)


def test_asr_test_set_uses_ground_truth_text_skips_clips_without_and_passes_the_guards(run):
    """test_asr: a template ASR instruction, the clip's segment texts joined as reference, no label; a test clip
    without text has no item and is counted; the leakage guards hold (test clips only, 01's explicit block)."""
    st = runs.Stage(run, "03_explicit_merge")
    clips, anns, qa_by_clip, _ = explicit_merge.load_inputs(st)
    clips["c14"]["segments"] = [{**s, "text": ""} for s in clips["c14"]["segments"]]  # a test clip without text
    cfg = merge_cfg(conditions=["baseline"])
    paths, _, bins = explicit_merge.build_conditions(st, cfg, clips, anns, qa_by_clip)
    tests, test_paths, _, skipped = explicit_merge.write_test_sets(st, cfg, clips, anns, qa_by_clip, bins)
    assert skipped == {"asr_no_text": 1} and test_paths["asr"].name == "test_asr.jsonl"
    by_clip = {it["clip_id"]: it for it in tests["asr"]}
    assert sorted(by_clip) == ["c12", "c13", "c15"]
    it = by_clip["c13"]
    assert it["reference"] == "Sentence number 13 is here. Then comes line 13 again."
    assert it["label"] is None and it["test_set"] == "asr" and it["item_id"] == "asr:c13"
    assert it["question"] in em.load_bank(em.TEMPLATES_FILE)["asr"]
    assert it["explicit_block"] == em.verbalise(anns["c13"]["segments"], "numbers", bins, True)
    assert explicit_merge.check_leakage(st, cfg, paths, tests, clips, anns, bins)["ok"]
    again, _, _, _ = explicit_merge.write_test_sets(st, cfg, clips, anns, qa_by_clip, bins)
    assert again["asr"] == tests["asr"]  # seeded: the same instruction per clip on a rerun


def test_a_literal_audio_tag_in_generated_text_is_left_out_with_its_reason(run, tmp_path):
    src = tmp_path / "test_x.jsonl"
    ok = {"item_id": "x:1", "test_set": "x", "clip_id": "c00", "audio_path": "a.wav", "question": "Why?",
          "reference": "Tired.", "explicit_block": "Detected voice cues:\n[0-1 s] sad"}
    runs.write_jsonl(src, [ok, {**ok, "item_id": "x:2", "question": "What does <audio> say?"}])
    rejects: list = []
    counts = exports.export_file(src, tmp_path / "exp", run, ["swift", "hf"], rejects)
    assert counts == {"test_x_plain": {"swift": 1, "hf": 1}, "test_x_explicit": {"swift": 1, "hf": 1}}
    assert [(r["id"], r["clip_id"]) for r in rejects] == [("x:2", "c00")] and "<audio> in its question" in rejects[0]["reason"]
    from datasets import load_from_disk
    row = load_from_disk(str(tmp_path / "exp/hf/test_x_plain"))[0]
    assert (row["id"], row["task"], row["prompt"]) == ("x:1", "x", "Why?")
