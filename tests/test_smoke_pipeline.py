"""The whole pipeline on params/smoke.yaml, run once per test session, with assertions on what each stage recorded."""
import json

import pytest
import yaml

from paraqa_utils import runs
from paraqa_utils.stages import STAGES
from tests.conftest import EXTERNAL_MODEL

pytestmark = pytest.mark.smoke
# Stages whose notebook is still a placeholder (implemented: false). Shrinks as issues land.
PLACEHOLDERS: set[str] = set()


def test_every_stage_done_and_hashes_hold(smoke_run):
    run, stdout = smoke_run
    man = json.loads((run / "manifest.json").read_text())
    assert man["profile"] == "smoke"
    for s in STAGES:
        rec = json.loads((run / s / "stage.json").read_text())
        assert rec["status"] == "done" and man["stages"][s]["status"] == "done", s
        assert rec["implemented"] is (s not in PLACEHOLDERS), s
        assert (run / s / "metrics.json").exists() and (run / "notebooks" / f"{s}.ipynb").exists()
        assert yaml.safe_load((run / "params" / f"{s}.yaml").read_text())["run_dir"] == str(run)
    for rel, digest in man["artifacts"].items():
        assert runs.sha256_file(run / rel) == digest, rel
    assert "report:" in stdout and (run / "06_analysis" / "REPORT.md").exists()


def test_report_is_written(smoke_run):
    run, _ = smoke_run
    report = (run / "06_analysis" / "REPORT.md").read_text()
    assert "smoke" in report and "## Main table" in report and "## Figures" in report
    assert (run / "06_analysis" / "REPORT.html").exists()


def metrics(run, stage):
    return json.loads((run / stage / "metrics.json").read_text())


def test_corpus_stage(smoke_run):
    run, _ = smoke_run
    m = metrics(run, "00_corpus")
    assert m["n_clips"] == 36 and m["n_rejects"] == 0
    assert min(m["n_clips_train"], m["n_clips_dev"], m["n_clips_test"]) > 0
    assert m["split_speakers_disjoint"] and m["split_texts_disjoint"]
    assert 2.0 <= m["min_clip_s"] and m["max_clip_s"] <= 20.0
    assert 1 / 6 < m["separability_accuracy"] < 0.95  # learnable from acoustics, but not trivially
    n_lines = sum(1 for _ in open(run / "00_corpus" / "clips.jsonl"))
    assert n_lines == m["n_clips"] == len(list((run / "00_corpus" / "audio").glob("*.wav")))


def test_annotate_stage(smoke_run):
    run, _ = smoke_run
    m = metrics(run, "01_annotate")
    assert m["n_clips"] == 36 and 0 < m["n_kept_clips"] <= 36
    assert 0 <= m["wer"] < 0.6  # Whisper base on synthetic TTS: far from perfect, far from noise
    # packed ASR once dropped a clip whose sentence repeated its neighbour's (1 such clip at this seed before the
    # retry-alone fix): no clip is lost to ASR now, and the retries are counted. Whether this seed needs a retry
    # depends on the CPU's int8 kernels (CI's did once; a 2-core VM in 2026-12 did not), so only the count is read.
    assert "asr returned no words" not in m["drop_reasons"], m["drop_reasons"]
    assert isinstance(m["n_asr_retried_alone"], int) and m["n_asr_retried_alone"] >= 0
    assert 0 <= m["uar_test"] <= 1 and 0 <= m["gender_accuracy_test"] <= 1
    anns = [json.loads(l) for l in open(run / "01_annotate" / "annotations.jsonl")]
    assert len(anns) == 36 and all(a["annotated_transcript"] for a in anns if a["kept"])


def test_synthesize_stage(smoke_run):
    run, _ = smoke_run
    m = metrics(run, "02_synthesize")
    led = m["llm_ledger"]
    assert led["requests"] > 0 and led["calls"] + led["cache_hits"] >= led["requests"]
    # the embedded LLM writes under the small prompt profile (one pair per call, slots fixed by the grammar): most
    # replies are schema-valid, and what the filters keep is recorded with a quality check on the kept pairs
    assert m["prompt_profile"] == "small"
    requested = sum(v["requested"] for v in m["survival"].values())
    assert sum(v["returned"] for v in m["survival"].values()) >= 0.5 * requested, m["survival"]
    # the bar, at smoke size: half the requested pairs pass the (unloosened) filters (measured: 5 of 6)
    assert sum(v["kept"] for v in m["survival"].values()) >= 0.5 * requested, m["removed_by_filter"]
    assert m["quality"]["checked"] <= sum(m["n_qa"].values())
    qas = [json.loads(l) for k in m["n_qa"] for l in open(run / "02_synthesize" / f"qa_{k}.jsonl")]
    assert all(q["prompt_profile"] == "small" and q["evidence_segments"] for q in qas)
    for kind, v in m["survival"].items():
        assert 0 <= v["kept"] <= v["returned"] <= v["requested"], kind
        assert m["n_qa"][kind] == v["kept"] == sum(1 for _ in open(run / "02_synthesize" / f"qa_{kind}.jsonl"))


def test_merge_stage(smoke_run):
    run, _ = smoke_run
    m = metrics(run, "03_explicit_merge")
    assert set(m["conditions"]) == {"baseline", "pqa_star", "implicit", "implicit_explicit", "explicit"}
    assert m["leakage_ok"] and m["test_sets"]["cpqa_ref"] > 0 and m["test_sets"]["emotion"] > 0
    assert m["conditions"]["explicit"]["n_examples"] == m["conditions"]["baseline"]["n_examples"]
    first = json.loads(open(run / "03_explicit_merge" / "train_implicit_explicit.jsonl").readline())
    assert first["explicit_block"].startswith("Detected voice cues")


def test_finetune_stage(smoke_run):
    run, _ = smoke_run
    m = metrics(run, "04_finetune")
    assert m["zero_shot"] and m["n_conditions"] == 3  # smoke trains baseline + implicit_explicit
    for c, v in m["conditions"].items():
        if c == "zero_shot":
            continue
        # smoke overfits one fixed batch (params/smoke.yaml): its loss must fall, or training is broken
        assert v["steps"] == 4 and v["final_loss"] < v["first_loss"], (c, v)
    preds = [json.loads(l) for l in open(run / "04_finetune" / "predictions.jsonl")]
    assert len(preds) == m["n_predictions"] > 0
    assert sum(bool(p["answer"].strip()) for p in preds) >= 0.9 * len(preds), "answers must not be empty"
    assert {p["test_set"] for p in preds} >= {"cpqa_ref", "emotion", "gender", "asr"}
    # the external model answered exactly the items the trained conditions answered (paired), with plain prompts
    items = {c: sorted((p["test_set"], p["item_id"]) for p in preds if p["condition"] == c)
             for c in ("zero_shot", EXTERNAL_MODEL)}
    assert items[EXTERNAL_MODEL] == items["zero_shot"] and items["zero_shot"]
    ext = [p for p in preds if p["condition"] == EXTERNAL_MODEL]
    assert all(p["external"] and p["error"] is None and "Detected voice cues" not in p["prompt"] for p in ext)
    assert m["external_models"][EXTERNAL_MODEL]["n_items"] == len(ext)


def test_judge_stage(smoke_run):
    run, _ = smoke_run
    m = metrics(run, "05_judge")
    assert m["n_judgments"] > 0
    rows = [json.loads(l) for l in open(run / "05_judge" / "judgments.jsonl")]
    for judge in m["parse_fail_rate"]:
        # on the trained conditions' answers; the random external model's ("[\x7f23 the-is") makes SmolLM2 echo
        # "rating": 23, out of range: recorded unparsed, counted in the rate, never a crash
        mine = [r["parse_ok"] for r in rows if r["judge"] == judge and r["condition"] != EXTERNAL_MODEL]
        assert mine and sum(mine) >= 0.9 * len(mine), f"{judge}: {1 - sum(mine) / len(mine):.0%} unparsed"
        theirs = [r["parse_ok"] for r in rows if r["judge"] == judge and r["condition"] == EXTERNAL_MODEL]
        assert theirs, f"{judge} judged none of {EXTERNAL_MODEL}'s answers"
    assert all(r["prompt_sha256"] and r["judge_model"] for r in rows)
    assert all(0 <= r["score"] <= (1 if "binary" in r["judge"] else 5) for r in rows if r["parse_ok"])
    assert set(m["asr_wer"]) == {"zero_shot", "baseline", "implicit_explicit", EXTERNAL_MODEL}
    assert all(v["n"] >= 1 and 0 <= v["value"] for v in m["asr_wer"].values())
    # the offline judge took every open-ended and label answer (no LLM, so no cap), every one parsed, versioned
    offline = [r for r in rows if r["judge"] == "offline/learned_v2" and not r["probe"]]
    preds = [json.loads(l) for l in open(run / "04_finetune" / "predictions.jsonl")]
    assert len(offline) == sum(p["test_set"] != "asr" for p in preds) and all(r["parse_ok"] for r in offline)
    assert {r["judge_model"] for r in offline} == {next(iter({r["judge_model"] for r in offline}))}
    assert offline[0]["judge_model"].startswith("learned_v2@")
    validation = json.loads((run / "05_judge" / "validation.json").read_text())
    graded = validation["graded_set"]["offline/learned_v2"]["heldout"]
    assert set(graded["sets"]) == {"heldout_v2", "graded_v3", "graded_v4"}, graded
    assert all(g["spearman"] >= 0.8 for g in graded["sets"].values()) and graded["passed"], graded
    # the LLM judge was scored on the graded set too (a few items in smoke), beside the offline one
    llm = validation["graded_set"]["embedded/rubric_para_v1"]["heldout"]["sets"]["heldout_v2"]
    assert llm["n_asked"] == 6 and llm["n"] + llm["n_unparsed"] == 6, llm
    # the swap check's probes are known-good answers: for the offline judge the own reference wins every pair
    swap = validation["reference_swap"]["offline/learned_v2"]
    assert swap["n"] >= 1 and swap["mean_swapped"] < swap["mean_original"], swap
    assert "offline/learned_v2" in validation["reference_swap_model_answers"]


def test_analysis_stage(smoke_run):
    run, _ = smoke_run
    m = metrics(run, "06_analysis")
    assert m["missing_inputs"] == [] and (run / "06_analysis" / "fig_va_scatter.png").stat().st_size > 10_000
    rows = {(r["judge"], r["condition"]) for r in m["main"]}
    judges = {j for j, _ in rows}
    # the external model sits in the main table beside the trained conditions
    assert judges and rows == {(j, c) for j in judges
                               for c in ("zero_shot", "baseline", "implicit_explicit", EXTERNAL_MODEL)}
    assert all({"micro", "ci_low", "ci_high", "n_items"} <= set(r) for r in m["main"])
    learning = m["learning"]["conditions"]
    assert set(learning) == {"zero_shot", "baseline", "implicit_explicit"}  # learning: trained here only
    assert m["learning"]["external_models"] == [EXTERNAL_MODEL]
    for c, v in learning.items():
        assert v["asr_wer"]["n"] >= 1 and v["gender_accuracy"]["n"] >= 1 and v["emotion_ua"]["n"] >= 1, c
        assert (v["loss_drop"]["value"] is None) == (c == "zero_shot"), c
    # the explicit condition is compared with the annotator and baseline on the same emotion items
    ex = m["learning"]["explicit_method"]["conditions"]["implicit_explicit"]
    assert ex["n"] >= 1 and ex["annotator_ua"] is not None and ex["emotion_ua"] is not None, ex
    assert ex["vs_baseline"]["n_items"] == ex["n"]
    # the paper's direction needs implicit, which smoke does not train: said, not computed on other conditions
    assert m["direction"]["implicit_vs_baseline"]["missing"] == ["implicit"], m["direction"]
    assert m["judge_validity"]["offline/learned_v2"]["n"] >= 400
    report = (run / "06_analysis" / "REPORT.md").read_text()
    assert report.split("\n## ")[1].startswith("Verdict"), "REPORT.md opens with the verdict"
