"""The offline facet scorer: grades from content and emotion/gender facets, checked against our graded set."""
import json

import pytest

from paraqa_utils import text
from paraqa_utils.judge import graded, offline


@pytest.fixture(scope="module")
def scorer():
    return offline.FacetScorer(text.minilm_embedder(""))


def grade(scorer, qtype, question, reference, answer):
    return scorer.score([{"question_type": qtype, "question": question, "reference": reference, "answer": answer}])[0]


def test_facets_decide_the_grade(scorer):
    q, ref = "How does the speaker feel about the lost keys?", "The speaker is angry about the lost keys."
    assert grade(scorer, "CE", q, ref, "Angry.").grade == 5  # the question gives the content: the facet is enough
    wrong = grade(scorer, "CE", q, ref, "The speaker is happy about the lost keys.")
    assert wrong.facet == "contradict" and wrong.grade <= 1  # close in words, wrong emotion
    assert grade(scorer, "CE", q, ref, "").grade == 0
    gq, gref = "Who reminds us about the train, a man or a woman?", "A woman reminds us that the train leaves at five."
    assert grade(scorer, "CG", gq, gref, "It is a woman.").facet == "agree"
    assert grade(scorer, "CG", gq, gref, "A man.").grade <= 1
    cq, cref = "What does the speaker say about the meeting?", "The meeting was moved to Friday afternoon."
    assert grade(scorer, "C", cq, cref, "They moved the meeting to Friday afternoon.").grade >= 4
    assert grade(scorer, "C", cq, cref, "I like bananas with my cereal.").grade <= 1


def test_the_scorer_tracks_our_graded_sets(scorer):
    """The issue's bar, Spearman >= 0.8, on each dev set (facets_v2 was revised looking at both) and on the
    held-out set heldout_v2 (written blind by the same rubric, scored once after the revision: measured 0.82);
    in every set far above MiniLM similarity alone."""
    from scipy import stats as sps

    for path in (*graded.DEV_FILES, graded.HELDOUT_FILE):
        items = graded.load_graded(path)
        assert len(items) >= 60 and {it["question_type"] for it in items} == {"C", "CE", "CG"}
        found = scorer.score(items)
        grades = [it["grade"] for it in items]
        result = graded.agreement(grades, [f.grade for f in found])
        similarity_alone = sps.spearmanr(grades, [f.similarity for f in found]).statistic
        assert result["n"] == len(items) and result["spearman"] >= graded.MIN_SPEARMAN, (path.name, result)
        assert result["spearman"] >= similarity_alone + 0.2, (path.name, result, similarity_alone)


def test_changed_facts_and_opposites_are_caught():
    from paraqa_utils.judge.offline import slot_conflict

    ref = "The bakery on the corner now closes at six instead of eight."
    assert slot_conflict(ref, "The bakery now closes at eight instead of six.")  # the values swapped
    assert slot_conflict(ref, "The bakery now opens at six.")  # the opposite verb
    assert slot_conflict("It costs forty pounds, due by Friday.", "It costs fourteen pounds, due by Monday.")
    assert not slot_conflict("It leaves at a quarter past seven from platform four.", "7:15, platform 4.")
    assert not slot_conflict(ref, "The corner bakery shuts at 6 now rather than 8.")


def test_a_bad_graded_line_is_refused_naming_it(tmp_path):
    good = {"id": "g1", "question_type": "C", "question": "q", "reference": "r", "answer": "a", "grade": 3}
    for bad, msg in (({**good, "grade": 7}, "grade 7 is outside 0-5"), ({k: v for k, v in good.items() if k != "reference"},
                     "missing field 'reference'"), ({**good, "grade": "3"}, "'grade' must be int")):
        f = tmp_path / "g.jsonl"
        f.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(graded.GradedSetError, match=f"g.jsonl:2: {msg}"):
            graded.load_graded(f)
    f.write_text("{not json\n")
    with pytest.raises(graded.GradedSetError, match="g.jsonl:1: not JSON"):
        graded.load_graded(f)


def test_agreement_needs_variation():
    assert graded.agreement([1, 2, 3], [1, 1, 1])["spearman"] is None
    assert graded.agreement([0, 3, 5, 1], [0, 4, 5, 2]) == {"spearman": 1.0, "n": 4, "passed": True, "min_spearman": 0.8}


def test_offline_rows_feed_the_validity_checks(scorer):
    from paraqa_utils.judge import validity

    base = {"condition": "baseline", "test_set": "cpqa_ref", "question_type": "CE",
            "question": "How does the speaker feel about the lost keys?"}
    items = [{**base, "item_id": "a", "reference": "The speaker is angry about the lost keys.", "answer": "Angry."},
             {**base, "item_id": "a", "reference": "The speaker is calm about the weather.", "answer": "Angry.",
              "probe": "reference_swap"}]
    from paraqa_utils.judge import scorers

    rows = scorers.Offline("facets_v2", embed=scorer.embed).rows(items)
    assert [r["score_100"] for r in rows] == [100, 0] and all(r["parse_ok"] for r in rows)
    assert rows[0]["judge"] == offline.NAME and rows[1]["probe"] == "reference_swap"
    report = {"parse_fail_rate": {offline.NAME: 0.0, "llm": 0.0},
              "graded_set": {offline.NAME: {"dev": {"spearman": 0.9, "n": 84}, "heldout": {"spearman": 0.6, "n": 84}}}}
    v = validity.judge_verdict(report)["judges"]
    assert v[offline.NAME]["checks"]["graded_set"] == {
        "ok": False, "why": "Spearman 0.60 with our grades on 84 held-out graded items"}
    assert "graded_set" not in v["llm"]["checks"]  # a judge never scored on the graded set is not checked on it


def test_offline_rows_record_the_rules_they_were_scored_by():
    import hashlib

    it = {"item_id": "a", "condition": "c", "test_set": "cpqa_ref", "question_type": "C", "question": "q?",
          "reference": "The bus is late.", "answer": "The bus is late."}
    from paraqa_utils.judge import scorers

    row = scorers.Offline("facets_v2", embed=None).rows([it])[0]
    rules = open(offline.__file__, "rb").read() + open(text.__file__, "rb").read()  # its rules and word lists
    assert row["prompt_sha256"] == hashlib.sha256(rules).hexdigest()
    assert row["judge_model"] == f"facets_v2@{row['prompt_sha256'][:12]}" and row["score"] == 5
