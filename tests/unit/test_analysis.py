"""Analysis tables, report and run comparison on hand-made run artifacts."""
import numpy as np
import pandas as pd
import yaml

from paraqa_utils import analysis, runs


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
    side, diff = analysis.compare(["a", "b"])
    assert list(side.columns) == ["a", "b"] and ("j", "implicit") in side.index
    assert list(diff.index) == ["common.seed"]
    assert analysis.main(["compare", "a", "b"]) == 0
    assert "common.seed" in capsys.readouterr().out
    (runs_root / "c").mkdir()
    runs.write_json(runs_root / "c" / "manifest.json", {})
    assert analysis.main(["compare", "a", "c"]) == 2


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
    md, html = analysis.write_report(st, [("Stages", analysis.fmt(summary))], [])
    assert "| 05_judge" in md.read_text() and "<table>" in html.read_text()
