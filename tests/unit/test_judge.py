"""The judge on a fault-injecting loopback server: parsing, parse failures, resume, scorers and validation."""
import json

import numpy as np
import pandas as pd
import pytest

from paraqa_utils import judge, params, runs
from paraqa_utils.judge import llm_judge as lj
from paraqa_utils.judge import validation as jv
from paraqa_utils.llm import LLMClient
from tests.unit.test_llm_fakes import FakeLLMServer


def grader(body):
    """Rates 5 when the answer repeats the reference, 1 otherwise; obeys planted content in the answer."""
    text = body["messages"][0]["content"]
    ref = text.split("Reference answer: ")[1].split("\n")[0]
    ans = text.split("Assistant's answer: ")[1].split("\n")[0]
    if "NO-RATING" in ans:
        return "I think it is fine."
    if "TOO-HIGH" in ans:
        return json.dumps({"explanation": "great", "rating": 9})
    if "PLAIN-TEXT" in ans:
        return "The answer matches well. Rating: 4"
    return json.dumps({"explanation": "compared", "rating": 5 if ans == ref else 1})


def items(n=4):
    out = []
    for i in range(n):
        out.append({"item_id": f"i{i}", "condition": "c", "test_set": "cpqa_ref", "question_type": "CE",
                    "question": f"How does the speaker feel in part {i}?", "reference": f"She sounds sad {i}.",
                    "answer": f"She sounds sad {i}." if i % 2 == 0 else "He is happy."})
    return out


def judge_settings(**values):
    """Stage 05's settings: the notebook's defaults with these values."""
    return params.stage_config(judge.JudgeSettings, "05_judge", values)


def client(url, tmp_path, **kw):
    return LLMClient([url], model="fake-model", cache_dir=tmp_path / "cache", ledger_name="judge", progress=False,
                     backoff_base_s=0.01, **kw)


@pytest.mark.parametrize("text,data,top,expect", [
    ('{"rating": 3}', {"explanation": "x", "rating": 3}, 5, (3, "")),
    ("", {"explanation": "x", "rating": 7}, 5, (None, "rating 7 outside 0-5")),
    ("Looks right. Rating: 4", None, 5, (4, "parsed from text")),
    ("Score 1 for this", None, 1, (1, "parsed from text")),
    ("it scores 12 of 10", None, 5, (None, "rating 10 outside 0-5")),
    ("no number here", None, 5, (None, "no rating in reply")),
    ('{"rating": true}', {"rating": True}, 1, (None, "no rating in reply")),
])
def test_parse_rating(text, data, top, expect):
    assert lj.parse_rating(text, data, top) == expect


def test_rubric_files_fill_without_breaking_braces():
    for name in lj.RUBRICS:
        filled = lj.fill(lj.rubric_text(name), "Q?", "R.", "")
        asks = "Rating: N" if name in lj.FREE_TEXT_ZERO else '"rating"'  # free text (parity) or JSON
        assert "Q?" in filled and "R." in filled and "(no answer)" in filled and asks in filled
    with pytest.raises(ValueError, match="unknown rubric"):
        lj.rubric_text("rubric_v9")


def test_judge_scores_parse_failures_and_missing_references(tmp_path):
    its = items(4)
    its[1]["answer"] = "NO-RATING"
    its[3]["answer"] = "TOO-HIGH"
    its.append({**its[0], "item_id": "noref", "reference": ""})
    its.append({**its[0], "item_id": "plain", "answer": "PLAIN-TEXT"})
    with FakeLLMServer(grader) as srv:
        cfg = lj.JudgeConfig("fake/rubric_v1", "rubric_v1", client(srv.base_url, tmp_path, max_invalid_retries=0))
        rows = {r["item_id"]: r for r in lj.judge_items(cfg, its)}
        assert srv.n_answered == 5  # the item without a reference is never sent
    assert rows["i0"]["score"] == 5 and rows["i0"]["score_100"] == 100.0 and rows["i2"]["parse_ok"]
    assert rows["i1"]["score"] is None and not rows["i1"]["parse_ok"]  # never silently 0
    assert rows["i3"]["score"] is None and "outside" in rows["i3"]["parse_note"]
    assert rows["noref"]["parse_note"] == "missing reference" and rows["noref"]["score"] is None
    assert rows["plain"]["score"] == 4 and rows["plain"]["parse_note"] == "parsed from text"
    assert rows["i0"]["prompt_sha256"] == lj.rubric_sha("rubric_v1") and rows["i0"]["judge_model"]
    table = lj.scores_table(list(rows.values()))
    assert table.loc[0, "n_items"] == 6 and abs(table.loc[0, "parse_fail_rate"] - 3 / 6) < 1e-9


def test_endpoint_failing_half_way_resumes_without_rejudging(tmp_path):
    its = items(4)
    faults = {its[2]["answer"]: ["500", "500", "500"], its[3]["answer"]: ["500", "500", "500"]}
    with FakeLLMServer(grader, faults=faults) as srv:
        cfg = lj.JudgeConfig("fake/rubric_v1", "rubric_v1", client(srv.base_url, tmp_path, max_retries=1))
        first = lj.judge_items(cfg, its)
    assert sum(r["parse_ok"] for r in first) == 2  # i0 and i1 judged; i2/i3 failed (recorded, not raised)
    with FakeLLMServer(grader) as srv2:
        cfg = lj.JudgeConfig("fake/rubric_v1", "rubric_v1", client(srv2.base_url, tmp_path))
        second = lj.judge_items(cfg, its)
        assert srv2.n_answered == 2  # only the two that failed
    assert all(r["parse_ok"] for r in second)


def test_label_mapping_keywords_negation_and_embedding():
    def fake_embed(texts):  # 'gloom' ~ sad, everything else ~ neutral
        return np.array([[1.0, 0.0] if "gloom" in t or "sad" in t.lower() else [0.0, 1.0] for t in texts])
    labels = ["neutral", "sad"]
    got = jv.map_labels(["She sounds sad.", "Not sad at all, quite neutral.", "full of gloom", ""], "emotion",
                        labels, fake_embed, 0.5)
    assert got[0] == ("sad", "keyword")
    assert got[1][0] == "neutral"  # the negated 'sad' does not count
    assert got[2] == ("sad", "embedding") and got[3] == (None, "none")
    g = jv.map_labels(["It is a woman speaking", "a man"], "gender", ["female", "male"], None, 0.3)
    assert [x[0] for x in g] == ["female", "male"]


def test_validation_pieces():
    j = pd.DataFrame({"judge": ["a"] * 6 + ["b"] * 6, "item_id": list("xyzuvw") * 2, "condition": ["c1"] * 3 + ["c2"] * 3
                      + ["c1"] * 3 + ["c2"] * 3, "score_100": [100, 0, 100, 0, 0, 100, 100, 0, 100, 0, 0, 0],
                      "correct": [1.0, 0, 1, 0, 0, 1] * 2, "answer_chars": [5, 50, 6, 40, 41, 7] * 2,
                      "probe": [None] * 12})
    corr = jv.judge_vs_correctness(j)
    assert corr["a"]["per_item"]["pearson"] == pytest.approx(1.0)
    assert jv.judge_agreement(j)["a vs b"]["n"] == 6
    rank = jv.ranking_agreement(pd.Series({"c1": 66.0, "c2": 33.0}), pd.Series({"c1": 0.9, "c2": 0.2}))
    assert rank["judge_order"] == rank["ua_order"] == ["c1", "c2"]
    swap = pd.DataFrame({"judge": ["a"] * 2, "item_id": ["x", "x#swap"], "condition": ["c1", "c1"],
                         "score_100": [100.0, 100.0], "probe": [None, "swap"]})
    rep = jv.swap_report(swap)["a"]
    assert rep["n"] == 1 and rep["share_swapped_lower"] == 0.0  # a judge that ignores the reference is exposed
    probes = jv.probe_items([{**it, "label": None} for it in items(4)], seed=0, n=3)
    assert len(probes) == 3 and all(p["reference"] != next(i for i in items(4) if i["item_id"] == p["probe_of"])
                                    ["reference"] for p in probes)


def test_label_table_and_validation_report():
    label_items = [{"item_id": f"e{i}", "condition": c, "test_set": "emotion", "label": "sad",
                    "answer": "She sounds sad." if c == "good" else "Quite neutral."}
                   for i in range(3) for c in ("good", "bad")]
    lab = jv.label_table(label_items, None, 0.3)
    assert lab.groupby("condition")["correct"].mean().to_dict() == {"bad": 0.0, "good": 1.0}
    assert set(lab["map_method"]) == {"keyword"}
    cls = jv.classification_table(lab)
    j = pd.DataFrame([{"judge": "a", "item_id": r["item_id"], "condition": r["condition"], "test_set": "emotion",
                       "score_100": 100.0 * r["correct"], "parse_ok": True, "probe": None,
                       "answer_chars": len(r["answer"])} for _, r in lab.iterrows()])
    rep = jv.validation_report(j, lab, cls, ("emotion", "gender"), ("cpqa_ref",))
    assert rep["judge_vs_correctness"]["a"]["per_item"]["pearson"] == pytest.approx(1.0)
    assert rep["ranking_vs_ua"]["a"]["judge_order"] == ["good", "bad"] and rep["parse_fail_rate"] == {"a": 0.0}
    assert jv.label_table([], None, 0.3).empty


def label_item(i, cond):
    return {"item_id": f"e{i}", "condition": cond, "test_set": "emotion", "question_type": "emotion",
            "question": "What emotion? Answer in one word.", "reference": "The speaker sounds sad.", "label": "sad",
            "answer": "She sounds sad." if cond == "good" else "Quite neutral."}


def test_run_llm_judges_every_judge_and_rubric_then_resumes_from_cache(runs_root):
    st = runs.Stage(runs.make_run_dir("t", "judge"), "05_judge")
    its = [{**it, "condition": c, "label": None} for it in items(4) for c in ("good", "bad")]
    its += [label_item(i, c) for i in range(3) for c in ("good", "bad")]
    probes = judge.swap_probes(its, seed=0, n=2)
    assert len(probes) == 2 and {p["test_set"] for p in probes} == {"cpqa_ref"}
    with FakeLLMServer(grader) as srv:
        settings = judge_settings(judge_name="a", judge_base_url=srv.base_url, judge_model="fake-model",
                                  judge_api_key_env="NO_SUCH_KEY_ENV",
                                  extra_judges=[{"name": "b", "base_url": srv.base_url, "model": "fake-model"}],
                                  rubrics=["rubric_v1", "rubric_para_v1"], binary_rubric="binary_v1")
        specs = settings.specs
        assert [s["name"] for s in specs] == ["a", "b"] and specs[0]["api_key_env"] == "NO_SUCH_KEY_ENV"
        assert specs[1]["api_key_env"] == "OPENAI_API_KEY"  # an extra judge naming no variable: the usual one
        rows, ledgers = judge.run_llm_judges(st, settings, its, probes)
        n_sent = srv.n_answered
    per_judge = {j: sum(r["judge"] == j for r in rows) for j in {r["judge"] for r in rows}}
    assert per_judge == {"a/rubric_v1": 8 + 2 + 6, "a/rubric_para_v1": 16, "a/binary_v1": 6,
                         "b/rubric_v1": 16, "b/rubric_para_v1": 16, "b/binary_v1": 6}
    assert set(ledgers) == {"a", "b"} and ledgers["a"]["requests"] == 16 + 16 + 6
    assert set(st.record["models"]) == {"judge:a", "judge:b"} and st.record["models"]["judge:a"]["id"] == "fake-model"
    assert list(st.record["prompts"]) == ["rubric_v1.txt", "rubric_para_v1.txt", "binary_v1.txt"]
    assert list(judge.ledger_table(ledgers).columns)[:3] == ["requests", "calls", "cache_hits"]
    with FakeLLMServer(grader) as srv2:  # a resumed run: every reply comes from the cache
        settings = judge_settings(judge_name="a", judge_base_url=srv2.base_url, judge_model="fake-model",
                                  judge_api_key_env="NO_SUCH_KEY_ENV", rubrics=["rubric_v1"],
                                  rubrics_on_label_sets=False)
        again, ledgers = judge.run_llm_judges(st, settings, its, probes)
        assert srv2.n_answered == 0 and n_sent == 16 * 4 + 12
    assert len(again) == 8 + 2 + 6 and ledgers["a"]["cache_hits"] == len(again)
    assert [r["score"] for r in again if r["item_id"] == "i0" and r["condition"] == "good"] == [5]


def test_scorers_write_their_files_and_the_metrics(runs_root):
    st = runs.Stage(runs.make_run_dir("t", "scorers"), "05_judge")
    its = [{**it, "condition": "good", "label": None} for it in items(2)]
    its += [label_item(i, c) for i in range(3) for c in ("good", "bad")]

    def embed(texts):
        return np.array([[1.0, 0.0] if "sad" in t else [0.0, 1.0] for t in texts])
    settings = judge_settings(n_judge_runs=2, judge_temperature=0.7)
    lab = judge.write_label_mapping(st, settings, its, embed)
    assert len(pd.read_csv(st.dir / "label_mapping.csv")) == 6 and set(lab["test_set"]) == {"emotion"}
    classification = judge.write_classification(st, lab)
    assert classification.set_index("condition").loc["good", "ua"] == 1.0
    assert judge.write_classification(st, jv.label_table([], None, 0.3)).empty  # no label items: an empty table
    classification = judge.write_classification(st, lab)
    sim = judge.write_similarity(st, its, embed)
    assert len(pd.read_csv(st.dir / "similarity.csv")) == len(its)
    rows = [{"judge": "a/rubric_v1", "item_id": r["item_id"], "condition": r["condition"], "test_set": r["test_set"],
             "question_type": r["question_type"], "score": 5 * r["correct"], "score_100": 100.0 * r["correct"],
             "parse_ok": True, "probe": None, "answer_chars": len(r["answer"])} for _, r in lab.iterrows()]
    rows += [{**rows[0], "item_id": it["item_id"], "test_set": "cpqa_ref", "question_type": "CE", "condition": "good",
              "score_100": 80.0} for it in its[:2]]
    validation = judge.write_validation(st, rows, lab, classification)
    assert json.loads((st.dir / "validation.json").read_text())["parse_fail_rate"] == validation["parse_fail_rate"]
    scores = judge.scores_table(rows)
    asr_its = [{"item_id": f"asr:{i}", "condition": c, "test_set": "asr", "question_type": "asr",
                "question": "Transcribe the audio.", "reference": "the cat sat on the mat", "label": None,
                "answer": "the cat sat on the mat" if c == "good" else "a cat sat"} for i in range(2) for c in ("good", "bad")]
    asr = judge.write_asr(st, its + asr_its)
    assert pd.read_csv(st.dir / "asr.csv").to_dict("records") == asr.to_dict("records")
    assert len(judge.write_similarity(st, its + asr_its, embed)) == len(its)  # a transcript is scored by WER only
    m = judge.judge_metrics(settings, its, rows, [], validation, {"a": {"requests": 1}}, scores, classification, sim,
                            asr)
    assert list(m) == ["n_items", "n_judgments", "n_probes", "parse_fail_rate", "ledger", "judges", "n_judge_runs",
                       "judge_temperature", "cpqa_ref_scores", "classification", "mean_ref_similarity", "asr_wer",
                       "judge_passed"]
    # bad: 'a cat sat' for 'the cat sat on the mat' = 1 substitution + 3 deletions of 6 words, twice
    assert m["asr_wer"] == {"good": {"value": 0.0, "n": 2}, "bad": {"value": round(8 / 12, 4), "n": 2}}
    assert m["judge_passed"] is validation["verdict"]["passed"]
    assert m["n_items"] == 8 and m["judges"] == ["a/rubric_v1"] and m["cpqa_ref_scores"] == {"a/rubric_v1": {"good": 80.0}}
    assert set(m["mean_ref_similarity"]) == {"good", "bad"} and len(m["classification"]) == len(classification)
    assert (m["n_judge_runs"], m["judge_temperature"]) == (2, 0.7)  # the settings' sampling, recorded


def test_label_mapping_uses_the_settings_similarity_floor(runs_root):
    st = runs.Stage(runs.make_run_dir("t", "floor"), "05_judge")
    its = [{**label_item(0, "good"), "answer": "full of gloom"}]

    def embed(texts):  # 'gloom' is 0.6 from 'sad' and 0.8 from every other description
        return np.array([[0.6, 0.8] if "gloom" in t else [1.0, 0.0] if "sad" in t else [0.0, 1.0] for t in texts])
    low = judge.write_label_mapping(st, judge_settings(min_label_similarity=0.5), its, embed)
    high = judge.write_label_mapping(st, judge_settings(min_label_similarity=0.9), its, embed)
    assert low.loc[0, "map_method"] == "embedding" and high.loc[0, "map_method"] == "none"


def test_asr_table_is_corpus_wer_per_condition_with_counts():
    its = [{"condition": "c", "reference": "Hello, world!", "answer": "hello world"},
           {"condition": "c", "reference": "one two three four", "answer": ""},
           {"condition": "z", "reference": "one two", "answer": "one two three"}]
    tab = jv.asr_table(its).set_index("condition")
    assert tab.loc["c", "wer"] == pytest.approx(4 / 6) and tab.loc["c", "n_items"] == 2
    assert tab.loc["c", "n_ref_words"] == 6 and tab.loc["c", "n_empty_answers"] == 1
    assert tab.loc["z", "wer"] == pytest.approx(1 / 2)
    assert jv.asr_table([]).empty and list(jv.asr_table([]).columns) == jv.ASR_COLUMNS


def validation_figures(swapped=10.0, tau=0.8, parse=0.05):
    return {"reference_swap": {"a/rubric_v1": {"n": 10, "mean_original": 70.0, "mean_swapped": swapped,
                                               "share_swapped_lower": 0.9 if swapped < 70 else 0.1}},
            "ranking_vs_ua": {"a/rubric_v1": {"kendall_tau": tau}, "a/binary_v1": {"kendall_tau": 1.0}},
            "parse_fail_rate": {"a/rubric_v1": parse, "a/binary_v1": 0.0}}


def test_judge_verdict_passes_a_judge_that_tells_right_from_swapped_and_ranks_like_ua():
    from paraqa_utils.judge import validity

    v = validity.judge_verdict(validation_figures())
    assert v["passed"] is True and v["definition"] == validity.DEFINITION
    assert set(v["judges"]["a/rubric_v1"]["checks"]) == {"reference_swap", "ranking_vs_ua", "parse_fail_rate"}
    assert set(v["judges"]["a/binary_v1"]["checks"]) == {"ranking_vs_ua", "parse_fail_rate"}  # no swap probes
    assert v["judges"]["a/rubric_v1"]["failed"] == []


@pytest.mark.parametrize("figures,failed", [
    (validation_figures(swapped=90.0), "reference_swap: known-good answers scored 90.0 with another item's reference against 70.0"),
    (validation_figures(tau=-0.4), "ranking_vs_ua: Kendall tau -0.40"),
    (validation_figures(tau=None), "ranking_vs_ua: no ranking against UA"),
    (validation_figures(parse=0.5), "parse_fail_rate: 50% of replies"),
    ({**validation_figures(), "reference_swap": {"a/rubric_v1": {"n": 0}}}, "reference_swap: no reference-swap probe"),
])
def test_judge_verdict_fails_on_each_check(figures, failed):
    from paraqa_utils.judge import validity

    v = validity.judge_verdict(figures)
    assert v["passed"] is False and v["judges"]["a/binary_v1"]["passed"] is True
    assert any(f.startswith(failed) for f in v["judges"]["a/rubric_v1"]["failed"]), v["judges"]["a/rubric_v1"]
    assert validity.judge_verdict({})["passed"] is False  # no figures: nothing shows the judge is valid


def test_judged_subset_caps_each_set_with_the_same_items_for_every_condition():
    from paraqa_utils.judge import judged_subset

    items = [{"item_id": f"{s}:{i}", "test_set": s, "condition": c}
             for c in ("zero_shot", "baseline") for s in ("emotion", "cpqa_ref") for i in range(10)]
    sub = judged_subset(items, 3, seed=0)
    ids = {c: sorted(it["item_id"] for it in sub if it["condition"] == c) for c in ("zero_shot", "baseline")}
    assert ids["zero_shot"] == ids["baseline"] and len(ids["baseline"]) == 6
    assert sum(i.startswith("emotion:") for i in ids["baseline"]) == 3
    assert judged_subset(items, -1) == items and judged_subset(items, 0) == []
    assert judged_subset(items, 3, seed=0) == sub  # the seed fixes the draw


def parity_grader(body):
    """AudioBench-style replies: free text ending in 'Rating: N'; some without a rating."""
    text = body["messages"][0]["content"]
    ref = text.split("[Reference Answer]\n")[1].split("\n")[0]
    ans = text.split("[Model Answer]\n")[1].split("\n")[0]
    assert "response_format" not in body or body["response_format"].get("type") != "json_schema"
    if "NO-RATING" in ans:
        return "It is hard to say."
    return f"The answer {'matches' if ans == ref else 'differs from'} the reference.\nRating: {5 if ans == ref else 1}"


def test_audiobench_parity_profile_scores_unparsed_replies_zero_and_counts_them(tmp_path):
    its = items(4)
    its[1]["answer"] = "NO-RATING"
    its.append({**its[0], "item_id": "noref", "reference": ""})
    with FakeLLMServer(parity_grader) as srv:
        cfg = lj.JudgeConfig("fake/audiobench_v1", "audiobench_v1", client(srv.base_url, tmp_path), temperature=0.0)
        rows = {r["item_id"]: r for r in lj.judge_items(cfg, its)}
    assert rows["i0"]["score"] == 5 and rows["i0"]["score_100"] == 100.0 and rows["i3"]["score_100"] == 20.0
    bad = rows["i1"]
    assert (bad["score"], bad["score_100"], bad["parse_ok"]) == (0, 0.0, False) and "scored 0" in bad["parse_note"]
    assert rows["noref"]["score"] is None and rows["noref"]["score_100"] is None  # not sent: never a 0
    assert {r["unparsed_policy"] for r in rows.values()} == {"zero"} and rows["i0"]["sampling"]["temperature"] == 0.0
    table = lj.scores_table(list(rows.values()))
    assert abs(table.loc[0, "parse_fail_rate"] - 2 / 5) < 1e-9  # the unparsed reply and the missing reference
    from paraqa_utils.analysis.tables import item_scores

    kept = item_scores(pd.DataFrame([{**r, "probe": None} for r in rows.values()]))
    assert sorted(kept["score"]) == [0.0, 20.0, 100.0, 100.0]  # the 0 counts; the unsent item does not


def test_known_good_probes_test_the_judge_not_the_models():
    its = [{**it, "condition": c, "label": None} for it in items(4) for c in ("good", "bad")]
    probes = jv.good_probe_items(its, seed=0, n=3)
    own = [p for p in probes if p["probe"] == "good_own"]
    swapped = [p for p in probes if p["probe"] == "good_swap"]
    assert len(own) == len(swapped) == 3 and all(p["answer"] == p["reference"] for p in own)
    assert all(p["answer"] != p["reference"] for p in swapped)  # the same good answer, another item's reference
    # a judge that reads the reference scores every own pair above its swap; one that ignores it does not
    rows = [{"judge": name, "item_id": p["item_id"], "condition": p["condition"], "probe": p["probe"],
             "score_100": (100.0 if p["probe"] == "good_own" else 20.0) if name == "reads" else 80.0}
            for name in ("reads", "ignores") for p in probes]
    rep = jv.good_swap_report(pd.DataFrame(rows))
    assert rep["reads"]["n"] == 3 and rep["reads"]["share_swapped_lower"] == 1.0
    assert rep["ignores"]["share_swapped_lower"] == 0.0
    from paraqa_utils.judge import validity
    ok, why = validity._swap_check(rep["ignores"])
    assert not ok and "known-good answers scored 80.0" in why


def overlap_grader(body):
    """Rates by the share of the reference's words the answer repeats (a crude judge that ranks a little)."""
    text = body["messages"][0]["content"]
    ref = set(text.split("Reference answer: ")[1].split("\n")[0].lower().split())
    ans = set(text.split("Assistant's answer: ")[1].split("\n")[0].lower().split())
    return json.dumps({"explanation": "overlap", "rating": round(5 * len(ref & ans) / max(len(ref), 1))})


def test_llm_judges_are_scored_on_the_graded_sets_once_per_machine(runs_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PARAQA_CACHE", str(tmp_path / "cache"))
    st = runs.Stage(runs.make_run_dir("t", "judge"), "05_judge")
    with FakeLLMServer(overlap_grader) as srv:
        settings = judge_settings(judge_name="a", judge_base_url=srv.base_url, judge_model="fake-model",
                                  judge_api_key_env="NO_SUCH_KEY_ENV", rubrics=["rubric_para_v1"],
                                  llm_graded_sets=["heldout_v2"], llm_graded_max_items=30)
        figures = judge.run_llm_graded(st, settings)
        assert srv.n_answered == 30
    got = figures["a/rubric_para_v1"]["heldout"]
    one = got["sets"]["heldout_v2"]
    assert one["n_asked"] == 30 and one["n"] + one["n_unparsed"] == 30
    # word overlap ranks with our grades a little, far from the bar
    assert one["spearman"] is not None and 0 < one["spearman"] < 0.8 and got["passed"] is False
    rows = list(runs.read_jsonl(st.dir / "graded_judgments.jsonl"))
    assert len(rows) == 30 and {r["test_set"] for r in rows} == {"graded:heldout_v2"}
    st2 = runs.Stage(runs.make_run_dir("t", "judge2"), "05_judge")
    with FakeLLMServer(overlap_grader) as srv2:  # another run on the same machine: every reply from the shared cache
        settings = judge_settings(judge_name="a", judge_base_url=srv2.base_url, judge_model="fake-model",
                                  judge_api_key_env="NO_SUCH_KEY_ENV", rubrics=["rubric_para_v1"],
                                  llm_graded_sets=["heldout_v2"], llm_graded_max_items=30)
        assert judge.run_llm_graded(st2, settings) == figures and srv2.n_answered == 0
    with pytest.raises(ValueError, match="llm_graded_sets=.*names of sets in judge/graded/"):
        judge_settings(llm_graded_sets=["no_such_set"])
    with pytest.raises(ValueError, match="offline_scorers="):
        judge_settings(offline_scorers=["facets_v9"])
