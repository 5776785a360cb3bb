"""06's paper's-direction block (implicit > baseline, implicit_explicit > implicit on cpqa_ref) and its
judge_validity block, on hand-made run artifacts; the last test runs notebook 06 itself on them."""
import json

import numpy as np
import papermill as pm
import pandas as pd
import pytest

from paraqa_utils import analysis, runs, stats
from paraqa_utils.analysis import direction as ad
from paraqa_utils.analysis import verdict as av
from paraqa_utils.stages import KERNEL_NAME, REPO_ROOT

OFFLINE, LLM = "offline/learned_v2", "llm/rubric_para_v1"
N = 60


def validation(offline_passed=True):
    """05's validation.json: the offline judge passed (or failed the graded set), the LLM judge failed; both were
    scored on the graded set."""
    def verdict(ok, why):
        return {"passed": ok, "checks": {}, "failed": [] if ok else [why]}
    return {"graded_set": {OFFLINE: {"dev": {"spearman": 0.95, "n": 80, "passed": True},
                                     "heldout": {"spearman": 0.86 if offline_passed else 0.61, "n": 64,
                                                 "passed": offline_passed, "min_spearman": 0.8}},
                           LLM: {"heldout": {"spearman": None, "n": 64, "passed": False}}},
            "verdict": {"passed": False, "definition": "...",
                        "judges": {OFFLINE: verdict(offline_passed, "graded_set: Spearman 0.61 with our grades"),
                                   LLM: verdict(False, "reference_swap: swapped references scored higher")}}}


def judgments(conds, seed=0):
    """Judgment rows of both judges on cpqa_ref for `conds` (condition -> item index -> 0-100 score of run 0); the
    offline judge has one run, the LLM judge two (run 1 is 20 lower); plus rows that must not count: another test
    set, a swap probe and a parse failure."""
    rows = []
    for c, score in conds.items():
        for i in range(N):
            base = {"item_id": f"cpqa_ref:c{i}:0", "condition": c, "test_set": "cpqa_ref",
                    "question_type": ["C", "CE", "CE", "CG"][i % 4], "parse_ok": True, "probe": None}
            rows.append({**base, "judge": OFFLINE, "run": 0, "score_100": score(i)})
            rows += [{**base, "judge": LLM, "run": r, "score_100": max(0.0, score(i) - 20 * r)} for r in (0, 1)]
            rows.append({**base, "judge": OFFLINE, "test_set": "cpqa_llm", "item_id": f"cpqa_llm:{i}",
                         "run": 0, "score_100": 100.0 if c == "baseline" else 0.0})
        last = rows[-4]  # the offline judge on the last cpqa_ref item
        rows += [{**last, "item_id": f"{last['item_id']}#swap", "probe": "swap", "score_100": 0.0},
                 {**last, "run": 2, "parse_ok": False, "score_100": None}]
    return rows


def fake_run(runs_root, conds, trained, offline_passed=True, name="direction"):
    """04's metrics naming the trained conditions, 05's judgments.jsonl and validation.json."""
    run = runs.make_run_dir("t", name)
    st4 = runs.Stage(run, "04_finetune")
    st4.write_metrics(conditions={c: {} for c in ["zero_shot", *trained]})
    st4.finish()
    st5 = runs.Stage(run, "05_judge")
    runs.write_jsonl(st5.dir / "judgments.jsonl", judgments(conds))
    runs.write_json(st5.dir / "validation.json", validation(offline_passed))
    st5.write_metrics(classification=[])
    st5.finish()
    return run


BASE = np.random.default_rng(0).integers(0, 4, N) * 20.0  # 0, 20, 40 or 60 per item
SHUFFLED = np.random.default_rng(1).permutation(BASE + 20)  # the same scores as implicit, on other items
CONDS = {"baseline": lambda i: BASE[i], "implicit": lambda i: BASE[i] + 20,
         "implicit_explicit": lambda i: SHUFFLED[i]}


def direction(run, judge=OFFLINE):
    st = runs.Stage(run, "06_analysis")
    inp = analysis.Inputs(st)
    scores = analysis.item_scores(inp.jsonl("05_judge/judgments.jsonl"))
    val = analysis.judge_validation(inp)
    return st, analysis.write_direction(st, inp, scores, val, judge, "cpqa_ref", 1000, 0), val


def test_implicit_over_baseline_holds_and_equal_conditions_do_not(runs_root):
    st, block, _ = direction(fake_run(runs_root, CONDS, list(CONDS)))
    assert list(block) == ["implicit_vs_baseline", "implicit_explicit_vs_implicit"]
    up = block["implicit_vs_baseline"]
    assert (up["a"], up["b"], up["judge"], up["test_set"], up["n"]) == ("implicit", "baseline", OFFLINE, "cpqa_ref", N)
    assert up["mean_a"] == pytest.approx(BASE.mean() + 20, abs=1e-4)
    assert up["mean_b"] == pytest.approx(BASE.mean(), abs=1e-4)
    assert up["rel_pct"] == pytest.approx(100 * 20 / BASE.mean(), abs=1e-3)
    assert 0 < up["ci_low"] < up["rel_pct"] < up["ci_high"] and up["holds"] is True and up["judge_valid"] is True
    same = block["implicit_explicit_vs_implicit"]
    assert same["n"] == N and same["rel_pct"] == pytest.approx(0) and same["ci_low"] < 0 < same["ci_high"]
    assert same["holds"] is False
    table = pd.read_csv(st.dir / "tab_direction.csv")
    assert list(table["comparison"]) == list(block) and list(table["holds"]) == [True, False]
    json.dumps(block, allow_nan=False)  # metrics.json takes it as it is


def test_judge_runs_are_averaged_per_item_and_other_judges_sets_and_probes_left_out(runs_root):
    _, block, val = direction(fake_run(runs_root, CONDS, list(CONDS)), judge=LLM)
    up = block["implicit_vs_baseline"]
    # the LLM judge's two runs per item (x and x - 20, floored at 0) averaged first, then the mean over items
    b, a = ([(x + max(0.0, x - 20)) / 2 for x in xs] for xs in (BASE, BASE + 20))
    assert up["n"] == N and up["mean_b"] == pytest.approx(np.mean(b), abs=1e-4)
    assert up["mean_a"] == pytest.approx(np.mean(a), abs=1e-4)
    order = sorted(range(N), key=lambda i: (["C", "CE", "CE", "CG"][i % 4], f"cpqa_ref:c{i}:0"))  # scores' order
    boot = stats.paired_bootstrap([b[i] for i in order], [a[i] for i in order], 1000, 0)
    assert up["ci_low"] == pytest.approx(boot["ci_low"], abs=1e-3)
    # the same figures as the main table's row for `implicit` under this judge (same items, order and seed)
    scores = analysis.item_scores(pd.DataFrame(judgments(CONDS)))
    row = analysis.main_table(scores, "baseline", 1000, 0).set_index(["judge", "condition"]).loc[(LLM, "implicit")]
    assert (up["rel_pct"], up["ci_low"], up["ci_high"]) == pytest.approx(
        (row["rel_improvement_pct"], row["ci_low"], row["ci_high"]), abs=1e-3)
    # a judge that failed 05's validity checks: the figures are still there, flagged
    assert up["holds"] is True and up["judge_valid"] is False and "reference_swap" in up["judge_failed"][0]
    text = ad.comparison_sentence("implicit_vs_baseline", up)
    assert "`implicit` > `baseline` holds" in text and "not evidence" in text


def test_a_condition_that_was_not_trained_is_reported_missing(runs_root):
    conds = {c: CONDS[c] for c in ("baseline", "implicit")}
    _, block, _ = direction(fake_run(runs_root, conds, list(conds)))
    assert block["implicit_vs_baseline"]["holds"] is True
    gone = block["implicit_explicit_vs_implicit"]
    assert gone["missing"] == ["implicit_explicit"] and gone["holds"] is None and "rel_pct" not in gone
    assert gone["why"] == {"implicit_explicit": "not trained by 04_finetune"}
    assert "was not tested" in ad.comparison_sentence("implicit_explicit_vs_implicit", gone)
    trained_but_unjudged = ad.compare(pd.DataFrame(columns=["judge", "condition", "test_set", "item_id", "score"]),
                                      "implicit", "baseline", trained=["baseline", "implicit"])
    assert trained_but_unjudged["missing"] == ["implicit", "baseline"]
    assert trained_but_unjudged["why"]["implicit"] == f"no `{OFFLINE}` score on cpqa_ref"


def test_judge_validity_is_read_from_the_held_out_graded_set():
    assert ad.graded_validity(validation()) == {OFFLINE: {"spearman": 0.86, "n": 64, "passed": True},
                                                LLM: {"spearman": None, "n": 64, "passed": False}}
    assert ad.graded_validity(validation(offline_passed=False))[OFFLINE] == {"spearman": 0.61, "n": 64,
                                                                             "passed": False}
    assert ad.graded_validity({}) == {} and ad.graded_validity(None) == {}
    assert ad.judge_status({}, OFFLINE) == (False, [f"05_judge's validation.json has no verdict on `{OFFLINE}`"])


def test_the_report_and_verdict_say_plainly_when_the_direction_does_not_hold(runs_root):
    flipped = {"baseline": CONDS["implicit"], "implicit": CONDS["baseline"], "implicit_explicit": CONDS["baseline"]}
    st, block, val = direction(fake_run(runs_root, flipped, list(flipped), offline_passed=False))
    down = block["implicit_vs_baseline"]
    assert down["holds"] is False and down["ci_high"] < 0 and down["judge_valid"] is False
    sentences = ad.direction_sentences(block)
    assert sentences[0].startswith("`implicit` > `baseline` does not hold on cpqa_ref (judge `offline/learned_v2`)")
    assert f"n = {N} items" in sentences[0] and "lies below 0" in sentences[0] and "not evidence" in sentences[0]
    assert sentences[1].startswith("`implicit_explicit` > `implicit` does not hold") and "includes 0" in sentences[1]
    v = av.build_verdict({}, pd.DataFrame(), val, "baseline", "cpqa_ref", block)
    assert v["direction_holds"] == {"implicit_vs_baseline": False, "implicit_explicit_vs_implicit": False}
    line = [s for s in v["sentences"] if s.startswith("The paper's direction")]
    assert len(line) == 1 and "`implicit` > `baseline` does not hold" in line[0] and "not evidence" in line[0]
    jv = ad.graded_validity(val)
    sections = dict(analysis.report_sections(pd.DataFrame(), {}, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), {},
                                             "cpqa_ref", "baseline", v, {}, block, jv))
    text = next(t for k, t in sections.items() if k.startswith("The paper's direction"))
    assert "| implicit_vs_baseline" in text and "does not hold" in text and "did not pass the graded-set check" in text
    assert "direction_holds" not in av.build_verdict({}, pd.DataFrame(), val, "baseline", "cpqa_ref")


def test_notebook_06_writes_the_direction_and_judge_validity_blocks(runs_root):
    conds = {c: CONDS[c] for c in ("baseline", "implicit")}
    run = fake_run(runs_root, conds, list(conds), name="nb")
    pm.execute_notebook(str(REPO_ROOT / "notebooks" / "06_analysis.ipynb"), str(run / "06_analysis.ipynb"),
                        parameters={"run_dir": str(run), "n_bootstrap": 200}, kernel_name=KERNEL_NAME,
                        cwd=str(REPO_ROOT), progress_bar=False)
    m = json.loads((run / "06_analysis" / "metrics.json").read_text())
    assert m["direction"]["implicit_vs_baseline"]["holds"] is True
    assert m["direction"]["implicit_explicit_vs_implicit"]["missing"] == ["implicit_explicit"]
    assert m["judge_validity"][OFFLINE] == {"spearman": 0.86, "n": 64, "passed": True}
    assert m["verdict"]["direction_holds"] == {"implicit_vs_baseline": True, "implicit_explicit_vs_implicit": None}
    report = (run / "06_analysis" / "REPORT.md").read_text()
    assert "## The paper's direction" in report and "`implicit` > `baseline` holds" in report
    assert (run / "06_analysis" / "tab_direction.csv").exists()
