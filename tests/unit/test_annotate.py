"""Stage 01 building blocks: windows, packing, reference alignment, WER, condensation, transcript format, labels."""
import math

import numpy as np
import pytest

from paraqa_utils import text
from paraqa_utils import annotate, params
from paraqa_utils.annotate import asr
from paraqa_utils.annotate import condense
from paraqa_utils.annotate import recognisers
from paraqa_utils.annotate import vad
from paraqa_utils.annotate.quality import categorical_scores, ccc


def test_windows_follow_the_paper_2s_with_1s_context():
    wins = vad.make_windows([(0.5, 5.5), (7.0, 7.8)], duration_s=8.0, window_s=2.0, context_s=1.0)
    # 5 s region -> round(2.5) = 2 equal windows of 2.5 s; 0.8 s region -> one window
    assert [(w.start_s, w.end_s) for w in wins] == [(0.5, 3.0), (3.0, 5.5), (7.0, 7.8)]
    assert (wins[0].ctx_start_s, wins[0].ctx_end_s) == (0.0, 4.0)  # context clipped at the clip start
    assert (wins[2].ctx_start_s, wins[2].ctx_end_s) == (6.0, 8.0)  # ... and at its end
    assert [w.region for w in wins] == [0, 0, 1]
    with pytest.raises(ValueError):
        vad.make_windows([(0, 1)], 1.0, window_s=0)


def test_best_overlap_picks_the_most_overlapping_span():
    spans = [{"start_s": 0.0, "end_s": 2.0}, {"start_s": 2.0, "end_s": 6.0}, {"start_s": None, "end_s": None}]
    assert vad.best_overlap(1.5, 3.0, spans) == 1
    assert vad.best_overlap(0.0, 1.0, spans) == 0
    assert vad.best_overlap(7.0, 8.0, spans) is None


def test_packs_fit_and_cover_every_clip_once():
    durs = [5.0, 12.0, 3.0, 29.0, 8.0, 7.5, 1.0]
    packs = asr.plan_packs(durs, pack_s=28.0, gap_s=1.0)
    assert sorted(i for p in packs for i in p) == list(range(len(durs)))
    for p in packs:
        assert len(p) == 1 or sum(durs[i] for i in p) + (len(p) - 1) * 1.0 <= 28.0
    assert [3] in packs  # longer than a pack: alone
    assert len(packs) < len(durs) - 2  # and packing really groups
    assert asr.plan_packs(durs, 0.0, 1.0) == [[i] for i in range(len(durs))]


def test_reference_words_land_in_the_speech_of_their_segment():
    segs = [{"start_s": 0.0, "end_s": 3.0, "text": "the meeting moved"},
            {"start_s": 3.5, "end_s": 6.0, "text": "to Friday"}]
    words = asr.reference_words(segs, regions=[(0.2, 1.0), (1.8, 2.9), (3.6, 5.9)], duration_s=6.0)
    assert [w["w"] for w in words] == ["the", "meeting", "moved", "to", "Friday"]
    assert all(w["start_s"] <= w["end_s"] for w in words)
    assert words[0]["start_s"] == pytest.approx(0.2) and words[2]["end_s"] == pytest.approx(2.9)
    assert words[3]["start_s"] >= 3.6 and words[4]["end_s"] <= 5.9
    for w in words[:3]:  # never inside the silence 1.0-1.8 (its start or end may touch a region edge)
        mid = (w["start_s"] + w["end_s"]) / 2
        assert not (1.0 < w["start_s"] < 1.8 and 1.0 < w["end_s"] < 1.8), (w, mid)


def test_wer_counts_edits_over_reference_words():
    assert text.wer(["The cat sat."], ["the cat sat"]) == 0.0
    assert text.wer(["a b c d"], ["a x c"]) == pytest.approx(2 / 4)
    assert text.wer(["a b", "c d e f"], ["a b", ""]) == pytest.approx(4 / 6)
    assert text.wer([""], ["x"]) is None


@pytest.mark.parametrize("emotion,valence,ok", [
    ("happy", 0.51, True), ("happy", 0.50, False), ("happy", 0.45, False),
    ("sad", 0.39, True), ("sad", 0.40, False), ("angry", 0.1, True),
    ("neutral", 0.45, True), ("neutral", 0.40, True), ("neutral", 0.50, True), ("neutral", 0.55, False),
    ("neutral", 0.3, False), ("surprised", 0.7, True), ("surprised", 0.2, False), ("unknown", 0.2, True)])
def test_consistency_uses_the_decided_thresholds(emotion, valence, ok):
    # decided semantics: positive if valence > 0.5, negative if < 0.4, in between neutral/ambiguous
    assert condense.is_consistent(emotion, valence, 0.5, 0.4) is ok


def test_consistency_marks_windows_and_occurrence_needs_a_dominant_emotion():
    segs = [{"start_s": 0, "end_s": 2, "emotion": "happy", "valence": 0.8},
            {"start_s": 2, "end_s": 4, "emotion": "happy", "valence": 0.2},
            {"start_s": 4, "end_s": 6, "emotion": "sad", "valence": 0.2},
            {"start_s": 6, "end_s": 8, "emotion": "angry", "valence": None}]
    assert condense.apply_consistency(segs) == 1
    assert [s.get("kept", True) for s in segs] == [True, False, True, True]
    assert "happy with negative valence 0.20" in segs[1]["drop_reason"]
    emo, share, reason = condense.occurrence_check(segs, 0.5)
    assert share == pytest.approx(1 / 3) and "no dominant emotion" in reason
    assert condense.occurrence_check(segs, 0.3)[2] is None
    assert condense.occurrence_check([dict(segs[1])], 0.5)[2] == "no window passed the consistency filter"


def test_balancing_caps_each_emotion_per_split():
    recs = ([{"split": "train", "kept": True, "dominant_emotion": "happy"}] * 6
            + [{"split": "train", "kept": True, "dominant_emotion": "sad"}] * 2
            + [{"split": "test", "kept": True, "dominant_emotion": "happy"}] * 3)
    drop = condense.balance(recs, 1.0, seed=0)
    assert len(drop) == 4 and all(recs[i]["split"] == "train" and recs[i]["dominant_emotion"] == "happy"
                                  for i in drop)
    assert len(condense.balance(recs, 2.0)) == 2 and condense.balance(recs, 0.0) == []


def _record():
    segs = [{"start_s": 0.0, "end_s": 2.1, "emotion": "sad", "valence": 0.21, "arousal": 0.30, "dominance": 0.35,
             "gender": "female", "kept": True},
            {"start_s": 2.1, "end_s": 4.0, "emotion": "sad", "valence": 0.25, "arousal": 0.40, "dominance": 0.45,
             "gender": "female", "kept": True},
            {"start_s": 4.0, "end_s": 6.0, "emotion": "happy", "valence": 0.3, "arousal": 0.5, "dominance": 0.5,
             "gender": "female", "kept": False}]
    words = [{"w": "The", "start_s": 0.1, "end_s": 0.3}, {"w": "meeting", "start_s": 0.3, "end_s": 0.8},
             {"w": "moved.", "start_s": 2.5, "end_s": 3.0}, {"w": "Sadly.", "start_s": 4.5, "end_s": 5.0}]
    annotate.records.assign_words(words, segs)
    return {"segments": segs, "words": words}


def test_annotated_transcript_format_merges_runs_and_hides_dropped_labels():
    rec = _record()
    assert [w["seg"] for w in rec["words"]] == [0, 0, 1, 2]
    assert annotate.serialise_transcript(rec) == (
        "[0.0-4.0 s] (female; sad, valence 0.23 arousal 0.35 dominance 0.40) The meeting moved.\n"
        "[4.0-6.0 s] (female) Sadly.")
    lines = annotate.serialise_transcript(rec, merge=False, only_kept=False).splitlines()
    assert lines[0] == "[0.0-2.1 s] (female; sad, valence 0.21 arousal 0.30 dominance 0.35) The meeting"
    assert lines[2].startswith("[4.0-6.0 s] (female; happy, valence 0.30")
    assert "(female; sad, valence low arousal mid dominance mid)" in annotate.serialise_transcript(rec, "words")
    assert annotate.serialise_transcript(rec, "none").startswith("[0.0-4.0 s] (female; sad) The")


def test_vote_majority_then_confidence():
    a = (["happy", "sad", "angry", None], [0.9, 0.6, 0.5, None])
    b = (["happy", "neutral", "sad", None], [0.7, 0.9, 0.6, None])
    c = (["sad", "sad", "neutral", None], [0.8, 0.7, 0.4, None])
    labels, conf = recognisers.vote([a, b, c])
    assert labels == ["happy", "sad", "sad", None]  # third: three-way tie -> highest confidence (0.6)
    assert conf[0] == pytest.approx((0.9 + 0.7) / 3, abs=1e-4) and conf[3] is None
    assert recognisers.mean_dimensions([[[0.2, 0.4, 0.6], None], [[0.4, 0.6, 0.8], None]]) == [[0.3, 0.5, 0.7], None]


def test_foreign_labels_map_or_fail_with_a_recipe():
    assert recognisers.map_labels(["ang", "Happiness", "NEU", "exc"], "emotion") == ["angry", "happy", "neutral",
                                                                                      "happy"]
    with pytest.raises(recognisers.LabelMapError) as err:
        recognisers.map_labels(["hap", "boredom", "calm"], "emotion", source="checkpoint 'x'")
    msg = str(err.value)
    assert "boredom" in msg and "calm" in msg and "label_map" in msg and "checkpoint 'x'" in msg
    m = recognisers.parse_label_map("boredom:neutral, calm:neutral")
    assert recognisers.map_labels(["boredom", "calm"], "emotion", m) == ["neutral", "neutral"]
    with pytest.raises(recognisers.LabelMapError):
        recognisers.map_labels(["calm"], "emotion", {"calm": "relaxed"})  # target outside our set
    with pytest.raises(recognisers.LabelMapError):
        recognisers.parse_label_map("calm=neutral")


def annotate_cfg(**values):
    """An AnnotateConfig with these knobs, the rest from 01_annotate.ipynb's parameters cell."""
    return params.stage_config(annotate.AnnotateConfig, "01_annotate", values)


def test_config_refuses_bad_settings():
    annotate_cfg(emotion_backends="acoustic:whisper, hf:org/model, labels")
    for bad in (dict(asr_backend="whisperx"), dict(emotion_backends="magic"), dict(acoustic_features="mfcc"),
                dict(valence_negative_below=0.6), dict(window_s=0), dict(transcript_verbalise="emoji"),
                dict(emotion_backends="")):
        with pytest.raises(ValueError):
            annotate_cfg(**bad)


def test_scores_and_ccc():
    s = categorical_scores(["a", "a", "a", "b", None], ["a", "a", "b", None, "x"])
    assert s["n"] == 4 and s["accuracy"] == 0.5 and s["uar"] == pytest.approx((2 / 3 + 0) / 2, abs=1e-4)
    assert ccc([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]) == 1.0
    shifted = ccc([0.1, 0.5, 0.9], [0.3, 0.7, 1.1])  # perfectly correlated but offset: CCC < 1
    assert 0 < shifted < 0.9 and ccc([0.1], [0.2]) is None
    assert math.isclose(ccc([0.1, 0.5, 0.9], [0.9, 0.5, 0.1]), -1.0)


def test_training_windows_get_out_of_fold_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 60))
    y = {"emotion": [str(v) for v in rng.choice(["sad", "happy"], 80)], "gender": [None] * 80,
         "dimensional": [None] * 80}
    groups = [f"clip{i // 2}" for i in range(80)]  # two windows per clip
    rec = recognisers.AcousticRecogniser("egemaps").fit(x, y, c_fixed={"emotion": 100.0})
    in_sample = np.mean([a == b for a, b in zip(rec.predict("emotion", x)[0], y["emotion"])])
    oof = rec.out_of_fold(x, y, groups)["emotion"][0]
    held_out = np.mean([a == b for a, b in zip(oof, y["emotion"])])
    assert in_sample > 0.95 and held_out < 0.75  # random labels: memorised in-sample, chance out of fold
    with pytest.raises(recognisers.RecogniserError, match="gender"):
        rec.predict("gender", x)


def test_reject_summary_groups_reasons_without_their_numbers():
    from paraqa_utils.annotate.quality import reject_summary

    rejects = [{"level": "window", "reason": "inconsistent: sad with positive valence 0.62"},
               {"level": "window", "reason": "inconsistent: sad with positive valence 0.7"},
               {"level": "clip", "reason": "silent audio (-inf dBFS < -55)"},
               {"level": "clip", "reason": "no dominant emotion: happy covers 40% of kept windows (< 50%)"}]
    tab = reject_summary(rejects).set_index(["level", "reason"])["n"].to_dict()
    assert tab == {("window", "inconsistent: sad with positive valence"): 2, ("clip", "silent audio"): 1,
                   ("clip", "no dominant emotion"): 1}
