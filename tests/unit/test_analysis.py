"""Analysis tables, report and run comparison on hand-made run artifacts."""
import numpy as np
import pandas as pd
import yaml

from paraqa_utils import analysis, runs
from paraqa_utils.analysis import tables
from paraqa_utils.analysis.figures import judge_accuracy_points


def judged(n_items=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_items):
        qt = ["C", "CE", "CE", "CG"][i % 4]
        base = float(rng.integers(0, 4)) * 20
        for cond, bump in (("baseline", 0), ("implicit", 20)):
            rows.append({"judge": "j", "condition": cond, "test_set": "cpqa_ref", "question_type": qt,
                         "item_id": f"i{i}", "run": 0, "score_100": min(100.0, base + bump), "parse_ok": True,
                         "probe": None})
    rows.append({**rows[0], "item_id": "i0#swap", "probe": "swap", "score_100": 0.0})
    rows.append({**rows[1], "item_id": "i1", "parse_ok": False, "score_100": None})
    return pd.DataFrame(rows)


def test_main_table_micro_macro_and_ci():
    scores = analysis.item_scores(judged())
    assert len(scores) == 120  # probes and parse failures left out
    tab = analysis.main_table(scores, n_resamples=500).set_index("condition")
    assert tab.loc["implicit", "micro"] > tab.loc["baseline", "micro"]
    assert tab.loc["implicit", "ci_low"] > 0 and tab.loc["implicit", "p_value"] < 0.05
    expected_macro = np.mean([scores[(scores.condition == "baseline") & (scores.question_type == t)].score.mean()
                              for t in ("C", "CE", "CG")])
    assert abs(tab.loc["baseline", "macro"] - expected_macro) < 1e-9
    assert abs(tab.loc["baseline", "micro"] - scores[scores.condition == "baseline"].score.mean()) < 1e-9
    assert pd.isna(tab.loc["baseline"].get("rel_improvement_pct"))


def test_single_item_says_no_ci():
    one = analysis.item_scores(judged(1))
    tab = analysis.main_table(one, n_resamples=100).set_index("condition")
    assert "no confidence interval" in tab.loc["implicit", "note"]


def make_run(name, seed_value, runs_root):
    run = runs.make_run_dir("t", name)
    (run / "params.resolved.yaml").write_text(yaml.safe_dump({"name": "t", "common": {"seed": seed_value}}))
    runs.write_json(run / "manifest.json", {"run_id": name, "profile": "t"})
    (run / "06_analysis").mkdir()
    analysis.main_table(analysis.item_scores(judged(20, seed_value)), n_resamples=100) \
        .to_csv(run / "06_analysis" / "tab_main.csv", index=False)
    return run


def test_compare_runs_and_cli(runs_root, capsys):
    make_run("a", 0, runs_root)
    make_run("b", 1, runs_root)
    side, diff = tables.compare(["a", "b"])
    assert list(side.columns) == ["a", "b"] and ("j", "implicit") in side.index
    assert list(diff.index) == ["common.seed"]
    assert tables.main(["compare", "a", "b"]) == 0
    assert "common.seed" in capsys.readouterr().out
    (runs_root / "c").mkdir()
    runs.write_json(runs_root / "c" / "manifest.json", {})
    assert tables.main(["compare", "a", "c"]) == 2


def test_report_and_missing_inputs(runs_root):
    run = runs.make_run_dir("t", "r")
    st0 = runs.Stage(run, "00_corpus")
    runs.write_jsonl(st0.dir / "clips.jsonl", [{"clip_id": "x"}])
    st0.finish()
    runs.Stage(run, "05_judge")  # started, never finished (a failed stage)
    st = runs.Stage(run, "06_analysis")
    inp = analysis.Inputs(st)
    assert len(inp.jsonl("00_corpus/clips.jsonl")) == 1
    assert inp.jsonl("05_judge/judgments.jsonl").empty and "05_judge/judgments.jsonl" in inp.missing
    summary = analysis.stage_summary(st)
    assert summary.set_index("stage").loc["05_judge", "status"] == "running"
    assert summary.set_index("stage").loc["02_synthesize", "status"] == "not run"
    md, html = analysis.write_report(st, [("Stages", tables.fmt(summary))], [])
    assert "| 05_judge" in md.read_text() and "<table>" in html.read_text()


def test_stage_steps_with_and_without_stage_05(runs_root):
    """What notebook 06 calls: tables, figures, report sections and metrics, first with 05 missing, then with it."""
    run = runs.make_run_dir("t", "steps")
    st0 = runs.Stage(run, "00_corpus")
    runs.write_jsonl(st0.dir / "clips.jsonl", [{"clip_id": "x", "segments": [
        {"valence": 0.2, "arousal": 0.7, "emotion": "sad"}, {"valence": None, "arousal": 0.1, "emotion": "sad"}]}])
    st0.finish()
    st = runs.Stage(run, "06_analysis")
    inp = analysis.Inputs(st)
    classification, validity = analysis.write_classification(st, inp), analysis.write_validity(st, inp)
    assert classification.empty and validity.empty and (st.dir / "tab_judge_validity.csv").exists()
    assert {"05_judge/metrics.json", "05_judge/validation.json"} <= set(inp.missing)
    data = analysis.write_data_tables(st, inp)
    assert data == {} and analysis.table_shapes(data) == {}
    empty = analysis.main_table(analysis.item_scores(pd.DataFrame()))
    figures = analysis.draw_figures(st, inp, analysis.item_scores(pd.DataFrame()), empty, classification, data,
                                    ["baseline", "implicit"])
    names = analysis.figure_names(figures)
    assert len(figures) == 2 * len(names) and len(names) == 6  # no judge: no per-judge score figure
    assert all((st.dir / n).exists() for n in names)
    learning = analysis.write_learning(st, inp)
    assert learning["conditions"] == {} and (st.dir / "tab_learning.csv").exists()
    v = analysis.build_verdict(learning, empty, analysis.judge_validation(inp), "baseline", "cpqa_ref")
    assert v["judge_passed"] is False and v["learned"] == {} and v["effects"] == []
    sections = analysis.report_sections(analysis.stage_summary(st), inp.missing, empty, classification, validity,
                                        data, "cpqa_ref", "baseline", v, learning)
    assert [t for t, _ in sections][:3] == ["Verdict", "Stages", "Missing or unfinished inputs"]
    assert "the judge scores below are not evidence" in sections[0][1]
    assert dict(sections)["Judge validity"] == "(none)" and "05_judge/validation.json" in sections[2][1]
    m = analysis.analysis_metrics(st, inp, figures, empty, 1.234, learning, v)
    assert m["n_figures"] == 6 and m["n_tables"] == 4 and m["regenerate_s"] == 1.23 and m["main"] == []
    assert m["missing_inputs"] == sorted(inp.missing) and m["learning"] is learning and m["verdict"] is v
    # with a finished 05: its classification, validation and labels feed the tables and figures
    st5 = runs.Stage(run, "05_judge")
    cls = [{"condition": c, "test_set": "emotion", "wa": 0.5, "ua": u, "macro_f1": 0.4} for c, u in
           (("baseline", 0.3), ("implicit", 0.6))]
    st5.write_metrics(classification=cls)
    runs.write_json(st5.dir / "validation.json", {"parse_fail_rate": {"j": 0.0}, "reference_swap": {"j": {"n": 1}}})
    pd.DataFrame([{"test_set": "emotion", "condition": "baseline", "label": "sad", "mapped": "sad"}]).to_csv(
        st5.dir / "label_mapping.csv", index=False)
    st5.finish()
    st = runs.Stage(run, "06_analysis")
    inp = analysis.Inputs(st)
    classification, validity = analysis.write_classification(st, inp), analysis.write_validity(st, inp)
    assert len(classification) == 2 and list(validity.columns) == ["judge", "measure", "value", "scale", "n"]
    assert validity.set_index("measure").loc["replies without a usable rating", "value"] == 0.0
    scores = analysis.item_scores(judged(8))
    main = analysis.main_table(scores, n_resamples=50)
    points = judge_accuracy_points(main, classification)
    assert list(points.columns) == ["judge", "condition", "judge_score", "ua"] and len(points) == 2
    figures = analysis.draw_figures(st, inp, scores, main, classification, {}, ["baseline", "implicit"])
    assert analysis.figure_names(figures)[0] == "fig_scores_j.png" and len(analysis.figure_names(figures)) == 7
    learning = analysis.write_learning(st, inp)
    v = analysis.build_verdict(learning, main, analysis.judge_validation(inp), "baseline", "cpqa_ref")
    sections = dict(analysis.report_sections(analysis.stage_summary(st), {}, main, classification, validity, {},
                                             "cpqa_ref", "baseline", v, learning))
    assert "Missing or unfinished inputs" not in sections
    main_text = sections["Main table (cpqa_ref; judge score 0-100; relative improvement over baseline in %, with its "
                         "95 % bootstrap CI)"]
    assert main_text.splitlines()[0].split("|")[1].strip() == "judge" and "p_value" in main_text
    assert "replies without a usable rating" in sections["Judge validity"] and "share 0-1" in sections["Judge validity"]
    assert "holds no verdict on the judge" in sections["Verdict"]  # an old validation.json: not evidence either
