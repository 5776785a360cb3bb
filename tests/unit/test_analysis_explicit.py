"""06's explicit-method check: an explicit condition's emotion UA against the annotator's own on the same items,
and its paired-bootstrap UA gain over the baseline, on hand-made run artifacts."""
import pandas as pd
import pytest

from paraqa_utils import analysis, runs, stats
from paraqa_utils.analysis import explicit as ax
from paraqa_utils.analysis import verdict as av

LABELS = ["sad", "happy", "angry", "neutral"] * 6  # 24 emotion items, 4 classes


def annotator(i):
    """The annotator is right on 3 of every 4 clips (wrong on item 3, 7, ...: 'sad' instead of 'neutral')."""
    return "sad" if i % 4 == 3 else LABELS[i]


def fake_run(runs_root, answers):
    """01 annotations (two segments per clip, the longer one carries the annotator's label), 03 conditions and the
    emotion test set, 05's label mapping for the conditions in `answers` (condition -> item index -> label)."""
    run = runs.make_run_dir("t", "explicit")
    st1 = runs.Stage(run, "01_annotate")
    runs.write_jsonl(st1.dir / "annotations.jsonl", [
        {"clip_id": f"c{i}", "segments": [{"start_s": 0.0, "end_s": 1.0, "emotion": "happy" if i % 2 else "angry"},
                                          {"start_s": 1.0, "end_s": 4.0, "emotion": annotator(i)}]}
        for i in range(len(LABELS))])
    st1.finish()
    st3 = runs.Stage(run, "03_explicit_merge")
    runs.write_json(st3.dir / "conditions.json", {"baseline": {"explicit": False}, "explicit": {"explicit": True},
                                                  "implicit_explicit": {"explicit": True}, "implicit": {"explicit": False}})
    runs.write_jsonl(st3.dir / "test_emotion.jsonl", [{"item_id": f"emotion:c{i}", "clip_id": f"c{i}", "label": lab}
                                                      for i, lab in enumerate(LABELS)])
    st3.write_metrics(conditions={})
    st3.finish()
    st5 = runs.Stage(run, "05_judge")
    rows = [{"item_id": f"emotion:c{i}", "condition": c, "test_set": "emotion", "label": LABELS[i], "mapped": pick(i)}
            for c, pick in answers.items() for i in range(len(LABELS))]
    pd.DataFrame(rows).to_csv(st5.dir / "label_mapping.csv", index=False)
    st5.write_metrics(classification=[])
    st5.finish()
    return runs.Stage(run, "06_analysis")


def test_paired_bootstrap_ua_is_a_ci_of_the_ua_difference():
    y = LABELS
    better = stats.paired_bootstrap_ua(y, ["sad"] * len(y), y, n_resamples=500)
    assert better["diff"] == pytest.approx(0.75) and better["n_items"] == 24
    assert 0 < better["ci_low"] <= 0.75 <= better["ci_high"]
    same = stats.paired_bootstrap_ua(y, [annotator(i) for i in range(24)], [annotator(i) for i in range(24)])
    assert same["diff"] == 0 and same["ci_low"] == same["ci_high"] == 0
    assert stats.paired_bootstrap_ua(["sad"], ["sad"], [None])["ci_low"] is None
    with pytest.raises(ValueError, match="same items"):
        stats.paired_bootstrap_ua(y, y[:3], y)


def test_an_explicit_condition_that_copies_its_labels_meets_the_bar_and_one_that_ignores_them_does_not(runs_root):
    st = fake_run(runs_root, {"baseline": lambda i: "sad", "explicit": annotator,
                              "implicit_explicit": lambda i: "happy", "implicit": annotator})
    block = analysis.write_learning(st, analysis.Inputs(st), "baseline", 500, 0)["explicit_method"]
    assert list(block["conditions"]) == ["explicit", "implicit_explicit"]  # only conditions whose prompts carry labels
    e = block["conditions"]["explicit"]
    assert e["n"] == 24 and e["annotator_ua"] == pytest.approx(0.75) and e["emotion_ua"] == pytest.approx(0.75)
    assert e["share_of_annotator"] == pytest.approx(1.0) and e["meets_annotator_bar"] is True
    assert e["vs_baseline"]["diff"] == pytest.approx(0.5) and e["vs_baseline"]["excludes_zero"] is True
    ie = block["conditions"]["implicit_explicit"]
    assert ie["emotion_ua"] == pytest.approx(0.25) and ie["meets_annotator_bar"] is False
    assert ie["vs_baseline"]["excludes_zero"] is False  # constant 'happy' vs constant 'sad': no UA gain
    table = pd.read_csv(st.dir / "tab_explicit.csv")
    assert list(table["condition"]) == ["explicit", "implicit_explicit"] and list(table["meets_bar"]) == [True, False]
    text = " ".join(ax.explicit_sentences(block))
    assert "`explicit`: emotion UA 0.75 against the annotator's own 0.75 on the same 24 items, 1.00x (meets" in text
    assert "the labels are not fully used" in text and "excludes 0" in text


def test_the_verdict_says_whether_the_explicit_method_works(runs_root):
    st = fake_run(runs_root, {"baseline": lambda i: "sad", "explicit": annotator})
    learning = analysis.write_learning(st, analysis.Inputs(st))
    v = av.build_verdict(learning, pd.DataFrame(), None, "baseline", "cpqa_ref")
    assert v["explicit_method_works"] == {"explicit": True}
    assert any(s.startswith("The explicit method in `explicit`") for s in v["sentences"])


def test_without_a_baseline_answer_there_is_nothing_to_compare(runs_root):
    st = fake_run(runs_root, {"explicit": annotator})
    block = ax.explicit_method(analysis.Inputs(st))
    assert block["conditions"]["explicit"]["n"] == 0
    assert "no emotion item answered by both" in " ".join(ax.explicit_sentences(block))
