"""01's ext: backend: an annotator in its own process over the JSONL protocol (paraqa_utils.testing.external_annotator),
cached, retried per clip after a crash or a hang, its bad replies recorded per clip; and backends that need labels
refused by name on an unlabelled corpus."""
from __future__ import annotations

import shutil
import sys

import pytest

from paraqa_utils import annotate, params, runs, text
from paraqa_utils.annotate import recognisers
from tests.unit.test_annotate_corpus import make_fake_corpus

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
TOY = [sys.executable, "-m", "paraqa_utils.testing.external_annotator"]


def cfg(**kw):
    return params.stage_config(annotate.AnnotateConfig, "01_annotate", {"asr_backend": "reference", **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    run = tmp_path_factory.mktemp("ext") / "run"
    make_fake_corpus(run, n_per_split={"train": 1, "dev": 0, "test": 1}, emotions=("angry", "sad"),
                     bad_clips=False, mixed_clip=False)
    stage = runs.Stage(run, "01_annotate")
    clips = annotate.load_clips(stage)
    return stage, clips, annotate.prepare(stage, clips, cfg())


def label(corpus, command, task="emotion", label_map="", **opts):
    stage, clips, prep = corpus
    c = cfg(**{f"{task}_backends": "labels,ext:toy" if task != "dimensional" else "ext:toy",
               "external_annotators": {"toy": {"command": command, **opts}}, "label_map": label_map})
    return annotate.label_windows(stage, clips, prep, c), c


def n_calls(stage) -> int:
    log = stage.dir / "logs" / "ext_toy.log"
    return sum(line.startswith("# ") for line in log.read_text().splitlines()) if log.exists() else 0


def test_an_external_annotator_votes_beside_the_labels_and_is_cached(corpus):
    stage = corpus[0]
    out, c = label(corpus, TOY)
    labs, confs = out["emotion"]["members"]["ext:toy"]
    assert len(labs) == len(out["gt"]) > 0 and set(labs) <= {"angry", "sad"} and set(confs) == {0.75}
    assert out["emotion"]["name"] == "ensemble(labels+ext:toy)" and out["annotator_failures"] == {"emotion:ext:toy": {}}
    calls = n_calls(stage)
    again, _ = label(corpus, TOY)
    assert again["emotion"]["members"]["ext:toy"] == (labs, confs) and n_calls(stage) == calls  # from the cache
    rec = stage.record["models"]["emotion:ext:toy"]  # what stage.json gets when the stage finishes
    assert rec["protocol"] == "paraqa-annotator-jsonl/1" and "external_annotator" in rec["id"]
    dims, _ = label(corpus, TOY, task="dimensional")
    assert all(len(v) == 3 and all(0 <= x <= 1 for x in v) for v in dims["dimensional"]["final"][0])


def test_a_crash_is_retried_and_a_hang_costs_only_its_clip(corpus, tmp_path):
    stage, clips, _ = corpus
    out, _ = label(corpus, TOY + ["--crash-once", str(tmp_path / "crashed")], task="gender")
    assert out["annotator_failures"]["gender:ext:toy"] == {}  # the clips after the crash got their retry
    assert set(out["gender"]["members"]["ext:toy"][0]) <= {"female", "male"}
    hung = clips[1]["clip_id"]
    before = n_calls(stage)
    out, c = label(corpus, TOY + ["--hang-on", hung], task="gender", timeout_s=2, retries=1)
    fails = out["annotator_failures"]["gender:ext:toy"]
    assert list(fails) == [hung] and "timed out after 2 s" in fails[hung]
    # all clips at once (clip 0 answered, then the hang), then each clip left alone in its own process
    assert n_calls(stage) - before == 1 + len(clips) - 1
    labs = out["gender"]["members"]["ext:toy"][0]
    mine = [i for (cid, _), i in out["index"].items() if cid == hung]
    assert all(labs[i] is None for i in mine) and any(x is not None for x in labs)  # it abstains, the rest vote
    _, rejects = annotate.build_records(clips, corpus[2], {x["clip_id"]: [] for x in clips}, out, c)
    assert {"clip_id": hung, "level": "annotator", "start_s": None, "end_s": None, "reason": fails[hung]} in rejects


@pytest.mark.parametrize("flag, reason", [("--garble", "malformed line"), ("--refuse", "the annotator says: clip too short")])
def test_bad_replies_are_recorded_per_clip(corpus, flag, reason):
    victim = corpus[1][0]["clip_id"]
    out, _ = label(corpus, TOY + [flag, victim], task="gender", retries=0)
    fails = out["annotator_failures"]["gender:ext:toy"]
    assert list(fails) == [victim] and reason in fails[victim]


def test_foreign_labels_need_a_label_map_and_bad_config_names_the_parameter(corpus):
    out, _ = label(corpus, TOY + ["--label-set", "emotion2vec"])  # "生气/angry" reads as angry
    assert set(out["emotion"]["members"]["ext:toy"][0]) <= {"angry", "sad"}
    with pytest.raises(recognisers.LabelMapError, match="(irritated|gloomy).*label_map"):
        label(corpus, TOY + ["--label-set", "foreign"])
    out, _ = label(corpus, TOY + ["--label-set", "foreign"], label_map="irritated:angry,gloomy:sad")
    assert set(out["emotion"]["members"]["ext:toy"][0]) <= {"angry", "sad"}
    with pytest.raises(ValueError, match="names no entry of external_annotators"):
        cfg(emotion_backends="ext:nope")
    with pytest.raises(ValueError, match="needs a 'command'"):
        cfg(emotion_backends="ext:toy", external_annotators={"toy": {"cmd": "x"}})


def test_backends_that_need_labels_are_refused_by_name_on_unlabelled_audio(corpus):
    stage, clips, prep = corpus
    bare = [dict(c, segments=[{k: v for k, v in s.items() if k not in ("emotion", "gender", *text.DIMENSIONS)}
                              for s in c.get("segments") or []]) for c in clips]
    with pytest.raises(recognisers.RecogniserError, match="emotion_backends='acoustic'.*needs emotion labels"):
        annotate.label_windows(stage, bare, prep, cfg())
    with pytest.raises(recognisers.RecogniserError, match="gender_backends='labels'"):
        annotate.label_windows(stage, bare, prep, cfg(emotion_backends="ext:toy", gender_backends="labels",
                                                      dimensional_backends="ext:toy",
                                                      external_annotators={"toy": {"command": TOY}}))


def test_a_recogniser_trained_on_a_labelled_corpus_labels_unlabelled_audio(corpus, tmp_path):
    """The paper's setting: no labels in the corpus. `acoustic@<joblib>` applies a recogniser that a labelled run
    trained (01 saves recogniser_<features>.joblib), so 01 needs no labels of its own."""
    stage, clips, prep = corpus
    labelled = annotate.label_windows(stage, clips, prep, cfg())  # trains and saves the recogniser
    saved = stage.dir / labelled["recognisers"]["egemaps"]["file"]
    bare = [dict(c, split=None, segments=[{k: v for k, v in s.items() if k not in ("emotion", "gender", *text.DIMENSIONS)}
                                          for s in c.get("segments") or []]) for c in clips]
    c = cfg(emotion_backends=f"acoustic@{saved}", gender_backends=f"acoustic@{saved}",
            dimensional_backends=f"acoustic@{saved}")
    out = annotate.label_windows(stage, bare, prep, c)
    emo = out["emotion"]["final"][0]
    assert all(e in {"angry", "sad"} for e in emo) and len(emo) == len(out["gt"]) > 0
    assert all(g in {"female", "male"} for g in out["gender"]["final"][0])
    # the same windows, the same recogniser: its labels here are what it gives the labelled copy (test windows)
    trained = recognisers.AcousticRecogniser.load(saved)
    assert out["emotion"]["members"][f"acoustic@{saved}"][0] == trained.predict(
        "emotion", annotate.steps.feature_matrix(prep, sorted(out["index"], key=out["index"].get), "egemaps"))[0]
    with pytest.raises(ValueError, match="no such recogniser file"):
        cfg(emotion_backends=f"acoustic@{tmp_path / 'none.joblib'}")
