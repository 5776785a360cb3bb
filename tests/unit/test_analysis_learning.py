"""06's learning block, the Verdict sentences and the readable validity table, on hand-made run artifacts."""
import pandas as pd
import pytest

from paraqa_utils import analysis, runs
from paraqa_utils.analysis import learning as al
from paraqa_utils.analysis import verdict as av
from paraqa_utils.analysis.validity import validity_table


def test_loss_drop_compares_the_last_tenth_with_the_first():
    losses = [4.0, 4.0] + [2.0] * 16 + [1.0, 1.0]  # 20 steps: a tenth is 2 steps
    assert al.loss_drop(losses) == {"value": 0.75, "n": 20}
    assert al.loss_drop([3.0, 2.0, 1.5]) == {"value": 0.5, "n": 3}  # under 10 steps: a tenth is one step
    assert al.loss_drop([2.0, 3.0])["value"] == -0.5  # a loss that rose
    assert al.loss_drop([1.0]) == {"value": None, "n": 1} and al.loss_drop([]) == {"value": None, "n": 0}


def test_the_step_the_loss_target_was_first_met():
    # a tenth = 2 steps, first tenth mean 4.0: the bar is 2.8; the window (2.0, 2.0) ending at step 4 meets it
    assert al.first_step_meeting_bar([4.0, 4.0, 2.0, 2.0] + [1.0] * 16) == 4
    assert al.first_step_meeting_bar([4.0, 4.0, 3.5, 3.0] + [3.0] * 16) is None  # 3.0 > 2.8: never
    assert al.first_step_meeting_bar([4.0]) is None


def fake_run(runs_root, name="learn"):
    """03 mixtures (pqa_star has no emotion examples), 04 logs (baseline drops by 75 %, pqa_star stays flat),
    05 classification and WER; the emotion test set has 4 classes (chance UA 0.25)."""
    run = runs.make_run_dir("t", name)
    st3 = runs.Stage(run, "03_explicit_merge")
    st3.write_metrics(conditions={"baseline": {"n_examples": 30, "asr": 10, "emotion": 10, "gender": 10},
                                  "pqa_star": {"n_examples": 13, "asr": 5, "emotion": 0, "gender": 5, "pqa_star": 3}})
    runs.write_jsonl(st3.dir / "test_emotion.jsonl", [{"item_id": f"e{i}", "label": lab}
                                                      for i, lab in enumerate(["sad", "happy", "angry", "neutral", "sad"])])
    st3.finish()
    st4 = runs.Stage(run, "04_finetune")
    st4.write_metrics(conditions={"zero_shot": {}, "baseline": {}, "pqa_star": {}})
    base = [4.0, 4.0] + [2.0] * 16 + [1.0, 1.0]
    runs.write_jsonl(st4.dir / "baseline" / "train_log.jsonl", [{"step": i + 1, "loss": v} for i, v in enumerate(base)])
    runs.write_jsonl(st4.dir / "pqa_star" / "train_log.jsonl", [{"step": i + 1, "loss": 2.0} for i in range(20)])
    st4.finish()
    st5 = runs.Stage(run, "05_judge")
    cls = [{"condition": c, "test_set": t, "wa": wa, "ua": ua, "macro_f1": 0.1, "n": 8}
           for c, t, wa, ua in (("zero_shot", "emotion", 0.25, 0.25), ("zero_shot", "gender", 0.5, 0.5),
                                ("baseline", "emotion", 0.5, 0.5), ("baseline", "gender", 0.9, 0.9),
                                ("pqa_star", "emotion", 0.1, 0.1), ("pqa_star", "gender", 0.5, 0.5))]
    st5.write_metrics(classification=cls, asr_wer={"zero_shot": {"value": 0.9, "n": 4},
                                                   "baseline": {"value": 0.3, "n": 4},
                                                   "pqa_star": {"value": 0.95, "n": 4}})
    st5.finish()
    return run


def test_learning_block_on_fake_train_logs(runs_root):
    run = fake_run(runs_root)
    block = analysis.write_learning(runs.Stage(run, "06_analysis"), analysis.Inputs(runs.Stage(run, "06_analysis")))
    conds = block["conditions"]
    assert list(conds) == ["zero_shot", "baseline", "pqa_star"]
    assert block["emotion_ua_chance"] == {"value": 0.25, "n_classes": 4}
    b = conds["baseline"]
    assert b["loss_drop"] == {"value": 0.75, "n": 20} and b["asr_wer"] == {"value": 0.3, "n": 4}
    assert b["emotion_ua"] == {"value": 0.5, "n": 8} and b["gender_accuracy"] == {"value": 0.9, "n": 8}
    assert b["not_trained_for"] == [] and b["learned"] is True
    assert b["checks"]["emotion_ua"] == {"ok": True, "value": 0.5, "needs": 0.4}  # chance 0.25 + 0.15
    assert b["checks"]["asr_wer"] == {"ok": True, "value": 0.3, "needs": 0.9}  # zero_shot's WER
    z = conds["zero_shot"]
    assert z["loss_drop"] == {"value": None, "n": 0} and z["learned"] is None
    assert z["not_trained_for"] == ["asr", "emotion", "gender"] and z["asr_wer"]["status"] == "not trained for it"


def test_a_task_missing_from_the_mixture_is_not_trained_for_it_not_a_failure(runs_root):
    run = fake_run(runs_root, "not_trained")
    st = runs.Stage(run, "06_analysis")
    p = analysis.write_learning(st, analysis.Inputs(st))["conditions"]["pqa_star"]
    assert p["not_trained_for"] == ["emotion"]
    assert p["emotion_ua"] == {"value": 0.1, "n": 8, "status": "not trained for it"}
    assert p["checks"]["emotion_ua"]["ok"] is None and p["checks"]["emotion_ua"]["status"] == "not trained for it"
    assert [m for m, ch in p["checks"].items() if ch["ok"] is False] == ["loss_drop", "asr_wer", "gender_accuracy"]
    assert p["learned"] is False
    # the same condition with every other figure good learned: its missing emotion task is not held against it
    good = {**p, "loss_drop": {"value": 0.5, "n": 20}, "asr_wer": {"value": 0.2, "n": 4},
            "gender_accuracy": {"value": 0.95, "n": 8}}
    assert al.assess(good, {"asr_wer": {"value": 0.9}}, 0.25)["learned"] is True
    table = pd.read_csv(st.dir / "tab_learning.csv")
    row = table[(table.condition == "pqa_star") & (table.measure == "emotion_ua")].iloc[0]
    assert row["verdict"] == "not trained for it" and row["n"] == 8 and "unweighted accuracy" in row["scale"]


def main_table():
    return pd.DataFrame([
        {"judge": "j", "condition": "baseline", "micro": 40.0},
        {"judge": "j", "condition": "implicit", "micro": 48.0, "rel_improvement_pct": 20.0, "ci_low": 5.0,
         "ci_high": 35.0, "note": ""},
        {"judge": "j", "condition": "pqa_star", "micro": 41.0, "rel_improvement_pct": 3.0, "ci_low": -4.0,
         "ci_high": 9.0, "note": ""},
        {"judge": "j", "condition": "explicit", "micro": 34.0, "rel_improvement_pct": -15.0, "ci_low": -25.0,
         "ci_high": -5.0, "note": ""},
        {"judge": "j", "condition": "zero_shot", "micro": 30.0, "rel_improvement_pct": float("nan"),
         "ci_low": None, "ci_high": None, "note": "fewer than 2 paired items: no confidence interval"}])


def passing_validation():
    return {"parse_fail_rate": {"j": 0.0}, "n_judgments": {"j": 40},
            "reference_swap": {"j": {"n": 10, "mean_original": 70.0, "mean_swapped": 10.0,
                                     "share_swapped_lower": 0.9, "share_swapped_at_most_1_of_5": 0.8}},
            "ranking_vs_ua": {"j": {"kendall_tau": 0.8, "judge_order": ["baseline", "pqa_star"],
                                    "ua_order": ["baseline", "pqa_star"]}},
            "verdict": {"passed": True, "definition": "A judge passes when (the definition).",
                        "judges": {"j": {"passed": True, "failed": [], "checks": {}}}}}


def test_verdict_sentences_for_a_passing_judge(runs_root):
    run = fake_run(runs_root, "pass")
    st = runs.Stage(run, "06_analysis")
    learning = analysis.write_learning(st, analysis.Inputs(st))
    v = analysis.build_verdict(learning, main_table(), passing_validation(), "baseline", "cpqa_ref")
    assert v["judge_passed"] is True and v["learned"] == {"baseline": True, "pqa_star": False}
    assert {e["condition"]: e["held"] for e in v["effects"]} == {"implicit": True, "pqa_star": False,
                                                                 "explicit": True, "zero_shot": False}
    s = v["sentences"]
    assert s[0].startswith("Conditions that learned: `baseline`. Conditions that did not: `pqa_star`.")
    assert s[1].startswith("`baseline` learned (loss target first met at step 4 of 20): training loss fell by 75% (met: needs a fall of at least 30%); "
                           "ASR WER 0.30 (met: needs below zero_shot's 0.90)")
    assert "emotion UA 0.50 (met: needs at least 0.40: chance 0.25 + 0.15)" in s[1]
    assert s[2].startswith("`pqa_star` did not learn: training loss fell by 0% (not met")
    assert s[2].endswith("; not trained for emotion, so not judged on it.")
    assert s[3].startswith("The explicit method was not tested: no emotion answers mapped to labels")
    assert s[4] == "The judge passed its validity checks (`j`)."
    assert s[5] == ("Passed means (defined once, in `paraqa_utils/judge/validity.py`): A judge passes when "
                    "(the definition).")
    assert s[6].startswith("The Speech-LLM cannot be judged to hear or not: `baseline` reaches ASR WER 0.30")
    assert "held: `implicit` +20.0 % (CI +5.0 to +35.0 %), `explicit` -15.0 % (CI -25.0 to -5.0 %, a drop)" in s[7]
    assert "Did not hold: `pqa_star` +3.0 % (CI -4.0 to +9.0 %, includes 0), `zero_shot` (no gain: fewer" in s[7]
    assert all("not evidence" not in x for x in s)


def test_verdict_sentences_for_a_failing_or_missing_judge():
    failing = {**passing_validation(), "verdict": {"passed": False, "definition": "D.", "judges": {
        "j": {"passed": False, "failed": ["reference_swap: swapped references scored 70.0 against 70.0"]}}}}
    v = av.build_verdict({"conditions": {}}, main_table(), failing, "baseline", "cpqa_ref")
    assert v["judge_passed"] is False
    assert v["sentences"][0].startswith("No trained condition to judge")
    assert v["sentences"][1] == "The explicit method was not tested: no explicit condition."
    assert v["sentences"][2] == ("The judge did not pass its validity checks (`j`: reference_swap: swapped references "
                                 "scored 70.0 against 70.0), so the judge scores below are not evidence.")
    for missing in ({}, None):
        v = av.build_verdict({"conditions": {}}, pd.DataFrame(), missing, "baseline", "cpqa_ref")
        assert v["judge_passed"] is False and "the judge scores below are not evidence" in v["sentences"][2]
        assert v["sentences"][-1].startswith("No judge scores of another condition beside `baseline`")


def test_validity_table_is_readable_with_scale_and_n():
    tab = validity_table(passing_validation()).set_index(["judge", "measure"])
    assert list(tab.columns) == ["value", "scale", "n"]
    assert tab.loc[("j", "passed its validity checks"), "value"] == "yes"
    assert tab.loc[("j", "replies without a usable rating"), ["value", "scale", "n"]].tolist() == [0.0, "share 0-1", 40]
    assert tab.loc[("j", "known-good answer, scored with another item's reference"), ["value", "scale", "n"]
                   ].tolist() == [10.0, "judge score 0-100", 10]
    assert tab.loc[("j", "ranking of conditions vs UA (Kendall tau)"), "n"] == 2
    assert tab.loc[("j", "passed its validity checks"), "n"] == ""  # blank, never 'nan'


def test_report_opens_with_the_verdict_right_after_its_title(runs_root):
    st = runs.Stage(runs.make_run_dir("t", "rep"), "06_analysis")
    md, html = analysis.write_report(st, [("Verdict", "It learned.\n\nThe judge passed."), ("Stages", "(empty)")], [])
    lines = md.read_text().splitlines()
    assert lines[0].startswith("# ParaQA run") and lines[2] == "## Verdict" and lines[4] == "It learned."
    assert lines.index("## Stages") > lines.index("The judge passed.") and "profile" in md.read_text()
    assert html.read_text().index("<h2>Verdict</h2>") < html.read_text().index("profile")


@pytest.mark.parametrize("drop", [0.29, 0.3])
def test_the_loss_bar_is_inclusive(drop):
    row = {"loss_drop": {"value": drop, "n": 10}, **{m: {"value": None, "n": 0, "status": al.NOT_TRAINED}
                                                     for m in al.METRICS}}
    assert al.assess(row, None, None)["learned"] is (drop >= al.MIN_LOSS_DROP)


def test_the_hearing_verdict_names_the_figures_and_the_bar():
    from paraqa_utils.analysis.verdict import hearing, hearing_sentence

    fig = lambda v: {"value": v, "n": 40}  # noqa: E731
    learning = {"conditions": {
        "zero_shot": {"asr_wer": fig(0.24), "gender_accuracy": fig(0.9), "emotion_ua": fig(0.3)},
        "baseline": {"asr_wer": fig(0.3), "gender_accuracy": fig(0.95), "emotion_ua": fig(0.36)}},
        "explicit_method": {"conditions": {"explicit": {"annotator_ua": 0.57}}}}
    h = hearing(learning)
    assert h["hears"] is True  # 0.36 >= 0.6 x 0.57 = 0.342
    text = hearing_sentence(h)
    assert text.startswith("The Speech-LLM hears: `baseline` reaches ASR WER 0.30, gender accuracy 0.95, emotion UA 0.36")
    assert "(`zero_shot`): ASR WER 0.24" in text
    learning["conditions"]["baseline"]["emotion_ua"] = fig(0.33)
    assert hearing(learning)["hears"] is False
    del learning["explicit_method"]
    assert hearing(learning)["hears"] is None and "no annotator UA" in hearing_sentence(hearing(learning))
