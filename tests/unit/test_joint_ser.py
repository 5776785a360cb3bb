"""hf: checkpoints that ship their own model code and answer emotion and V/A/D in one pass (MERaLiON-SER-v1's
layout: config auto_map, Whisper input features, `logits` + `dims`): refused without trust_remote_code, and with it
one forward per window fills both tasks. Tested on a tiny random checkpoint saved with its own code files."""
from __future__ import annotations

import json
import math
import shutil
import sys

import numpy as np
import pytest

from paraqa_utils import annotate, params, runs
from paraqa_utils.annotate import checkpoint, recognisers
from paraqa_utils.testing.tiny_remote_ser import save_tiny_joint_ser
from tests.unit.test_annotate_corpus import make_fake_corpus

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
BIAS = (1.0, -1.0, 0.0)  # the dims head's bias: outputs sigmoid(1), sigmoid(-1), sigmoid(0) in the card's V/A/D order


def sig(x):
    return round(1 / (1 + math.exp(-x)), 4)


def cfg(**kw):
    return params.stage_config(annotate.AnnotateConfig, "01_annotate", {"asr_backend": "reference", **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    run = tmp_path_factory.mktemp("joint") / "run"
    make_fake_corpus(run, n_per_split={"train": 1, "dev": 0, "test": 1}, emotions=("angry", "sad"),
                     bad_clips=False, mixed_clip=False)
    stage = runs.Stage(run, "01_annotate")
    clips = annotate.load_clips(stage)
    return stage, clips, annotate.prepare(stage, clips, cfg())


@pytest.fixture(scope="module")
def ser(tmp_path_factory):
    return save_tiny_joint_ser(tmp_path_factory.mktemp("ser") / "tiny-ser", dims_bias=BIAS)


def forwards() -> int:
    mod = next(m for n, m in sys.modules.items() if n.endswith("modeling_tiny_joint_ser"))
    return mod.CALLS["forward"]


def test_without_trust_remote_code_it_is_refused_naming_the_parameter_and_the_code(corpus, ser):
    stage, clips, prep = corpus
    with pytest.raises(recognisers.RecogniserError, match=r"modeling_tiny_joint_ser\.py.*trust_remote_code: true"):
        annotate.label_windows(stage, clips, prep, cfg(emotion_backends=f"hf:{ser}"))


def test_one_model_fills_emotion_and_vad_with_one_forward_per_window(corpus, ser):
    stage, clips, prep = corpus
    c = cfg(emotion_backends=f"hf:{ser}", dimensional_backends=f"hf:{ser}", trust_remote_code=True)
    out = annotate.label_windows(stage, clips, prep, c)
    n = len(out["gt"])
    assert n > 0 and forwards() == n  # the dimensional task read the emotion task's pass from the cache
    emo, conf = out["emotion"]["final"]
    assert len(emo) == n and set(emo) <= {"neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised"}
    assert all(0 < p <= 1 for p in conf)
    dims = out["dimensional"]["final"][0]
    assert all(d == pytest.approx([sig(BIAS[0]), sig(BIAS[1]), sig(BIAS[2])], abs=1e-4) for d in dims)
    rec = stage.record["models"][f"dimensional:hf:{ser}"]
    assert rec["remote_code"] is True and rec["dims_order"] == ["valence", "arousal", "dominance"]
    assert rec["emotion_labels"][0] == "neutral"  # the card's capitalised names, mapped onto ours
    again = annotate.label_windows(stage, clips, prep, c)
    assert forwards() == n and again["emotion"]["final"][0] == emo  # a rerun is served from the cache


def test_a_config_that_states_its_dims_order_is_followed(tmp_path):
    path = save_tiny_joint_ser(tmp_path / "ordered", dims_bias=BIAS)
    conf = json.loads((path / "config.json").read_text())
    conf["dims_labels"] = ["arousal", "dominance", "valence"]
    (path / "config.json").write_text(json.dumps(conf))
    model = checkpoint.load(str(path), "dimensional", {}, trust_remote_code=True)
    got = model.predict([np.zeros(16000, dtype=np.float32)])["dimensional"][0]
    assert got == pytest.approx([sig(BIAS[2]), sig(BIAS[0]), sig(BIAS[1])], abs=1e-4)  # re-ordered to V/A/D


def test_a_head_missing_from_the_weights_and_gender_are_refused(tmp_path):
    broken = save_tiny_joint_ser(tmp_path / "broken", drop_head=True)
    with pytest.raises(recognisers.RecogniserError, match=r"dims_head\.(bias|weight).*random"):
        checkpoint.load(str(broken), "emotion", {}, trust_remote_code=True)
    ok = save_tiny_joint_ser(tmp_path / "ok")
    with pytest.raises(recognisers.RecogniserError, match="no gender"):
        checkpoint.load(str(ok), "gender", {}, trust_remote_code=True)


def test_the_joint_model_votes_and_averages_beside_other_kinds_of_backend(corpus, ser):
    """The paper's ensembles with any mix: a remote-code checkpoint, an ext: annotator in its own process and the
    corpus labels vote on emotion; the joint model's V/A/D is averaged with the ext: annotator's."""
    stage, clips, prep = corpus
    toy = [sys.executable, "-m", "paraqa_utils.testing.external_annotator"]
    c = cfg(emotion_backends=f"hf:{ser},ext:toy,labels", dimensional_backends=f"hf:{ser},ext:toy",
            external_annotators={"toy": {"command": toy}}, trust_remote_code=True)
    out = annotate.label_windows(stage, clips, prep, c)
    assert out["emotion"]["name"] == f"ensemble(hf:{ser}+ext:toy+labels)"
    members = out["emotion"]["members"]
    final = out["emotion"]["final"][0]
    for i, lab in enumerate(final):  # a label two of the three members give wins the vote
        votes = [members[m][0][i] for m in members]
        if max(votes.count(v) for v in votes) >= 2:
            assert votes.count(lab) >= 2
    joint, ext = (out["dimensional"]["members"][m][0] for m in (f"hf:{ser}", "ext:toy"))
    for mean, a, b in zip(out["dimensional"]["final"][0], joint, ext):
        assert mean == pytest.approx([(x + y) / 2 for x, y in zip(a, b)], abs=1e-3)
