"""The learned offline judge (learned_v2): its held-out figures, the failure classes it was built against, its
quantities, its training data and its model file."""
import json

import numpy as np
import pytest

from paraqa_utils.judge import graded, learned, perturb, quantities, scorers
from paraqa_utils.judge.features import Reader, clause_tokens


@pytest.fixture(scope="module")
def judge():
    return scorers.Offline("learned_v2")


def score(judge, qtype, question, reference, *answers):
    items = [{"question_type": qtype, "question": question, "reference": reference, "answer": a} for a in answers]
    return list(judge.grades(items)[0])


def test_it_holds_on_every_held_out_set_and_beats_the_rules(judge):
    """Spearman >= 0.8 on each set it never trained on (graded_v4 written blind and scored once with the judge
    frozen: 0.83; heldout_v2 0.86, graded_v3 0.83), and above facets_v2 on the sets worded by other authors."""
    old = scorers.Offline("facets_v2", embed=None)
    for path in scorers.HELDOUT["learned_v2"]:
        items = graded.load_graded(path)
        g = [it["grade"] for it in items]
        got = graded.agreement(g, list(judge.grades(items)[0]))
        assert len(items) >= 84 and got["spearman"] >= graded.MIN_SPEARMAN, (path.name, got)
        if path != graded.HELDOUT_FILE:  # the sets facets_v2 failed on (0.63, 0.73)
            assert got["spearman"] >= graded.agreement(g, list(old.grades(items)[0]))["spearman"] + 0.05
    figures = judge.graded_figures()
    assert figures["heldout"]["passed"] and set(figures["heldout"]["sets"]) == {"heldout_v2", "graded_v3", "graded_v4"}


def test_the_failure_classes_of_the_issue(judge):
    gq, gref = "Who is asking about the parking permit, and is it a man or a woman?", \
        "A woman is asking whether her parking permit has been renewed."
    right, wrong_gender = score(judge, "CG", gq, gref, "A lady wants to know if her parking permit was renewed.",
                                "A man is asking whether his parking permit has been renewed.")
    assert right >= 4 and wrong_gender <= 2
    yq, yref = "Is the speaker going to the match on Sunday, and how does he feel?", \
        "No, his knee is still injured, so he is staying home; he sounds disappointed."
    flipped, other_words, near = score(
        judge, "CE", yq, yref, "Yes, his knee has healed, so he is going; he sounds thrilled.",
        "Not at all, the knee still hurts and he is stuck at home; he sounds let down.",
        "No, his knee is still injured, so he is staying home; he sounds dejected.")
    assert flipped <= 1.5 and other_words >= flipped + 2 and near >= 4
    eq, eref = "How does the speaker feel about the new timetable?", "She is delighted with the new bus timetable."
    same, opposite = score(judge, "CE", eq, eref, "She is delighted with the new bus timetable.",
                           "She is miserable with the new bus timetable.")
    assert same >= 4.5 and opposite <= 1.5
    cq, cref = "How many volunteers turned up to clean the beach?", "Twelve volunteers came to clean the beach."
    dozen, fifteen = score(judge, "C", cq, cref, "A dozen people showed up for the clean-up.",
                           "Fifteen volunteers came to clean the beach.")
    assert dozen >= fifteen + 1.5
    pq, pref = "Why did the speaker leave the party early?", "She left early because she had a headache."
    paraphrase, unrelated = score(judge, "C", pq, pref, "Her head was pounding, so she went home first.",
                                  "The cat prefers fish on Tuesdays.")
    assert paraphrase >= unrelated + 2


def test_quantities_in_other_words_and_units():
    assert quantities.quantities("a dozen eggs") == [(12.0, "count")]
    assert quantities.quantities("half an hour") == [(30.0, "time")] == quantities.quantities("thirty minutes")
    assert quantities.quantities("a week and three days") == quantities.quantities("ten days")
    assert quantities.quantities("four pounds fifty") == quantities.quantities("£4.50") == [(4.5, "gbp")]
    assert quantities.quantities("fifteen minutes before 10 p.m.") == quantities.quantities("quarter to ten")
    assert quantities.compare("About two miles away.", "Roughly 3 kilometres.") == (True, 1.0, False)
    assert quantities.compare("It takes forty minutes.", "It takes fifty minutes.") == (True, 0.0, True)
    assert quantities.compare("for the third time", "for the fifth time")[2]
    assert quantities.quantities("the one who cannot come") == []


def test_negation_stops_at_a_clause_boundary():
    r = Reader()
    assert r.emotions(clause_tokens("He can't wait, he's buzzing.")) == [("happy", False), ("happy", False)]
    assert r.emotions(clause_tokens("She is not happy about it.")) == [("happy", True)]


def test_training_never_reads_a_held_out_set(monkeypatch):
    items = learned.training_items()
    real = {it["id"] for it in items if "id" in it}
    held = {it["id"] for p in learned.NEVER_TRAIN for it in graded.load_graded(p)}
    assert real and not real & held and {i[0] for i in real} == {"g", "h", "d", "e"}
    bases = {it["base"] for it in items}
    shared = bases & {it["reference"] for p in learned.NEVER_TRAIN for it in graded.load_graded(p)}
    assert all(len(r.split()) <= 2 for r in shared), shared  # only a bare "A woman." was written by two authors
    monkeypatch.setattr(learned, "TRAIN_FILES", (*learned.TRAIN_FILES, graded.BLIND_V4_FILE))
    with pytest.raises(learned.LearnedJudgeError, match="graded_v4.jsonl is a held-out set"):
        learned.training_items()


def test_perturbations_carry_the_rubric_grade():
    base = {"question": "Is it a man or a woman, and what does the speaker want?", "question_type": "CG",
            "reference": "A woman wants to return the two lamps she bought on Monday."}
    made = {v[2]: v for v in perturb.variants(base, ["The bus is late."], Reader(), __import__("random").Random(0))}
    assert made["gender_swap"][:2] == ("A man wants to return the two lamps he bought on Monday.", 1)
    assert made["quantity_changed"][1] == 1 and made["quantity_other_form"][0].startswith("A woman wants to return the 2")
    assert made["other_reference"][:2] == ("The bus is late.", 0) and made["reference"][1] == 5


def test_rows_carry_name_and_version(judge):
    it = {"item_id": "a", "condition": "c", "test_set": "cpqa_ref", "question_type": "C", "question": "q?",
          "reference": "The lift is broken.", "answer": "The lift does not work.", "probe": None}
    row = judge.rows([it])[0]
    assert row["judge"] == "offline/learned_v2" and row["judge_model"] == judge.version
    assert judge.version.startswith("learned_v2@") and 0 <= row["score"] <= 5 and row["parse_ok"]
    assert row["score_100"] == pytest.approx(20 * judge.grades([it])[0][0], abs=0.01)


def test_a_missing_or_damaged_model_names_the_make_target(tmp_path):
    with pytest.raises(learned.LearnedJudgeError, match="missing .* build it with `make judge-model`"):
        learned.Head.load(tmp_path / "none")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "meta.json").write_text("{}")
    (tmp_path / "bad" / "head.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(learned.LearnedJudgeError, match="rebuild it with `make judge-model`"):
        learned.Head.load(tmp_path / "bad")


def test_training_is_reproducible(tmp_path, judge):
    """The same sources give the same weights: the version in the rows names what scored them."""
    head = learned.train(tmp_path / "again")
    assert head.version == judge.version
    meta = json.loads((tmp_path / "again" / "meta.json").read_text())
    assert meta["training_sha256"] == learned.training_sha() and meta["n_hand_graded"] == 528
    x = np.random.default_rng(0).normal(size=(3, len(meta["features"]))).astype(np.float32)
    assert np.allclose(head(x), judge._learned.head(x))
