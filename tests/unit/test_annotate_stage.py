"""Stage 01 end to end on a tiny espeak-ng corpus: the notebook itself, caches, ASR packing, HF checkpoints."""
import json
import re
import shutil

import numpy as np
import papermill as pm
import pytest

from paraqa_utils import audio
from paraqa_utils import text
from paraqa_utils import annotate, params, runs
from paraqa_utils.annotate import steps
from paraqa_utils.annotate import asr
from paraqa_utils.annotate import features
from paraqa_utils.annotate import recognisers
from paraqa_utils.annotate import vad as segment
from paraqa_utils.stages import KERNEL_NAME, REPO_ROOT
from tests.unit.test_annotate_corpus import make_fake_corpus

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
CONTRACT = {"clip_id", "split", "audio_path", "duration_s", "words", "segments", "dominant_emotion", "gender",
            "kept", "drop_reason", "backends", "annotated_transcript"}
SEGMENT = {"start_s", "end_s", "emotion", "emotion_conf", "valence", "arousal", "dominance", "gender",
           "gender_conf", "backend"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A fake corpus (6 emotions x 4/1/2 clips + a two-emotion clip + a corrupt and a silent one), annotated by
    the real notebook with reference transcripts (faster-whisper is tested on its own below)."""
    run_dir = tmp_path_factory.mktemp("annotate") / "run"
    make_fake_corpus(run_dir)
    pm.execute_notebook(str(REPO_ROOT / "notebooks" / "01_annotate.ipynb"), str(run_dir / "01_annotate.ipynb"),
                        parameters={"run_dir": str(run_dir), "asr_backend": "reference"}, kernel_name=KERNEL_NAME,
                        cwd=str(REPO_ROOT), progress_bar=False)
    return run_dir


def cfg(**kw):
    return params.stage_config(annotate.AnnotateConfig, "01_annotate", {"asr_backend": "reference", **kw})


def test_notebook_writes_the_contract(run):
    st = json.loads((run / "01_annotate" / "stage.json").read_text())
    assert st["status"] == "done" and st["implemented"] is True
    for f in ("annotations.jsonl", "rejects.jsonl", "metrics.json", "tab_condensation.csv", "fig_confusion.png",
              "fig_condensation.png", "recogniser_egemaps.joblib"):
        assert f in st["outputs"], f
    clips = {c["clip_id"]: c for c in runs.read_jsonl(run / "00_corpus" / "clips.jsonl")}
    recs = {r["clip_id"]: r for r in runs.read_jsonl(run / "01_annotate" / "annotations.jsonl")}
    assert set(recs) == set(clips)  # one record per clip, rejected ones included
    line = re.compile(r"^\[\d+\.\d-\d+\.\d s\] (\((female|male)(; [a-z]+(, valence \d\.\d\d arousal \d\.\d\d "
                      r"dominance \d\.\d\d)?)?\) )?\S.*$")
    for cid, r in recs.items():
        assert CONTRACT <= set(r) and r["split"] == clips[cid]["split"]
        assert set(r["backends"]) >= {"asr", "emotion", "gender", "vad"}
        for s in r["segments"]:
            assert SEGMENT <= set(s) and 0 <= s["start_s"] < s["end_s"] <= r["duration_s"] + 1e-6
            assert s["emotion"] in text.EMOTIONS and 0 < s["emotion_conf"] <= 1
            assert all(0 <= s[d] <= 1 for d in ("valence", "arousal", "dominance"))
        for w in r["words"]:
            assert 0 <= w["start_s"] <= w["end_s"] <= r["duration_s"] + 1e-6
        if r["kept"]:
            assert r["drop_reason"] is None and r["dominant_emotion"] in text.EMOTIONS
            assert all(line.match(x) for x in r["annotated_transcript"].splitlines()), r["annotated_transcript"]
        else:
            assert r["drop_reason"]
    assert "unreadable audio" in recs["fake_corrupt"]["drop_reason"]
    assert "silent audio" in recs["fake_silent"]["drop_reason"]
    assert len(recs["fake_mixed"]["segments"]) >= 2  # two sentences, two windows at least
    rejects = list(runs.read_jsonl(run / "01_annotate" / "rejects.jsonl"))
    rejected = {(x["clip_id"], x["level"]) for x in rejects}
    assert {("fake_corrupt", "clip"), ("fake_silent", "clip")} <= rejected
    assert {(cid, "clip") for cid, r in recs.items() if not r["kept"]} == {x for x in rejected if x[1] == "clip"}


def test_metrics_show_the_acoustic_recogniser_learns(run):
    m = json.loads((run / "01_annotate" / "metrics.json").read_text())
    assert m["n_clips"] == 45 and m["n_kept_clips"] < m["n_clips"] - 1
    assert m["backends"]["emotion"] == "acoustic" and m["split_evaluated"] == "test"
    # 6 classes, chance = 0.17; distinct espeak presets are easy but test voices' sentences are unseen
    assert m["uar_test"] > 0.5 and m["emotion"]["acoustic"]["all"]["n"] >= 12
    assert m["gender_accuracy_test"] > 0.8 and m["ccc_arousal_test"] > 0.5
    assert m["uar_test_condensed"] is not None and m["emotion"]["final"]["condensed"]["n"] <= m["emotion"][
        "final"]["all"]["n"]
    assert m["wer"] is None  # reference transcripts: nothing to score
    assert set(m["rtf"]) >= {"vad", "features:egemaps"} and m["clips_per_s"] > 0


def test_rerun_reads_every_clip_from_cache_and_redoes_only_what_is_missing(run, monkeypatch):
    stage = runs.Stage(run, "01_annotate")
    clips = annotate.load_clips(stage)
    calls = []
    real = features.egemaps_llds
    monkeypatch.setattr(segment, "speech_regions", lambda *a, **k: pytest.fail("VAD recomputed"))
    monkeypatch.setattr(features, "egemaps_llds", lambda *a, **k: calls.append(1) or real(*a, **k))
    prep = annotate.prepare(stage, clips, cfg())
    assert prep.n_cached == len(clips) and calls == []
    victim = next((stage.cache / "features").rglob("fake_0001-*.npy"))
    before = np.load(victim)
    victim.unlink()  # as if the run was killed before this clip's features were written
    prep = annotate.prepare(stage, clips, cfg())
    assert len(calls) == 1 and prep.n_cached == len(clips) - 1
    assert np.allclose(prep.clips["fake_0001"]["feats"]["egemaps"], before)


def test_missing_transcript_is_a_recorded_reject(run):
    stage = runs.Stage(run, "01_annotate")
    clips = annotate.load_clips(stage)
    c = cfg()
    prep = annotate.prepare(stage, clips, c)
    words, _ = annotate.transcribe(stage, clips, prep, c)
    words["fake_0002"] = []
    labels = annotate.label_windows(stage, clips, prep, c)
    recs, rejects = annotate.build_records(clips, prep, words, labels, c)
    bad = next(r for r in recs if r["clip_id"] == "fake_0002")
    assert not bad["kept"] and bad["drop_reason"] == "no reference transcript"
    assert {"clip_id": "fake_0002", "level": "clip", "start_s": None, "end_s": None,
            "reason": "no reference transcript"} in rejects


def test_faster_whisper_packs_clips_and_gives_each_its_own_words(run, monkeypatch):
    stage = runs.Stage(run, "01_annotate")
    clips = [c for c in annotate.load_clips(stage) if c["clip_id"] in ("fake_0000", "fake_0007", "fake_0014")]
    c = cfg(asr_backend="faster-whisper", n_workers=1)
    prep = annotate.prepare(stage, clips, c)
    words, info = annotate.transcribe(stage, clips, prep, c)
    assert info["n_packs"] == 1 and info["n_cached"] == 0
    for clip in clips:
        ref = clip["segments"][0]["text"]
        hyp = " ".join(w["w"] for w in words[clip["clip_id"]])
        assert text.wer([ref], [hyp]) <= 0.35, (ref, hyp)  # a word given to the wrong clip would show here
        assert all(0 <= w["start_s"] <= w["end_s"] <= prep.clips[clip["clip_id"]]["duration_s"]
                   for w in words[clip["clip_id"]])
    again, info2 = annotate.transcribe(stage, clips, prep, c)
    assert info2["n_cached"] == 3 and again == words
    # a failing ASR call is recorded per clip (and not cached, so a rerun retries)
    monkeypatch.setattr(asr, "transcribe_faster_whisper", lambda *a, **k: 1 / 0)
    c2 = cfg(asr_backend="faster-whisper", n_workers=1, asr_beam_size=2)
    words2, info3 = annotate.transcribe(stage, clips, prep, c2)
    assert set(info3["errors"]) == {x["clip_id"] for x in clips} and all(w == [] for w in words2.values())
    assert "ZeroDivisionError" in info3["errors"]["fake_0000"]
    every = annotate.load_clips(stage)
    labels = annotate.label_windows(stage, every, annotate.prepare(stage, every, c2), c2)
    recs, _ = annotate.build_records(clips, prep, words2, labels, c2, info3["errors"])
    assert all(not r["kept"] and r["drop_reason"].startswith("asr failed") for r in recs)


def tiny_hf(path, labels, problem_type=None, head=True):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification, Wav2Vec2Model

    conf = Wav2Vec2Config(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=16, conv_dim=(16,) * 4, conv_kernel=(10, 3, 3, 3),
                          conv_stride=(5, 4, 4, 4),  # 320 samples per frame, as in real wav2vec2
                          num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, classifier_proj_size=8,
                          num_labels=len(labels), id2label=dict(enumerate(labels)),
                          label2id={v: k for k, v in enumerate(labels)}, problem_type=problem_type)
    torch.manual_seed(0)
    (Wav2Vec2ForSequenceClassification if head else Wav2Vec2Model)(conf).save_pretrained(path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(path)
    return str(path)


def test_hf_checkpoints_plug_in_vote_and_fail_loudly(run, tmp_path):
    emo = tiny_hf(tmp_path / "emo", ["ang", "hap", "neu", "sad", "exc"])
    gen = tiny_hf(tmp_path / "gen", ["female", "male"])
    dim = tiny_hf(tmp_path / "dim", ["LABEL_0", "LABEL_1", "LABEL_2"], problem_type="regression")
    stage = runs.Stage(run, "01_annotate")
    # two train clips per emotion and the test split's first clips keep the tiny models' CPU time low
    clips = [c for i, c in enumerate(annotate.load_clips(stage)) if (c["split"] == "train" and i % 2 == 0)
             or c["clip_id"] in ("fake_0030", "fake_0033", "fake_0036", "fake_mixed")]
    c = cfg(emotion_backends=f"hf:{emo},acoustic,labels", gender_backends="labels",
            dimensional_backends=f"hf:{dim}", label_map="LABEL_0:valence,LABEL_1:arousal,LABEL_2:dominance")
    prep = annotate.prepare(stage, clips, c)
    labels = annotate.label_windows(stage, clips, prep, c)
    assert labels["emotion"]["name"] == f"ensemble(hf:{emo}+acoustic+labels)"
    hf_labels, hf_conf = labels["emotion"]["members"][f"hf:{emo}"]
    assert set(hf_labels) <= {"angry", "happy", "neutral", "sad"} and all(0 < x <= 1 for x in hf_conf)
    final = labels["emotion"]["final"][0]
    ac, gt = labels["emotion"]["members"]["acoustic"][0], labels["emotion"]["members"]["labels"][0]
    assert all(f == a for f, a, g in zip(final, ac, gt) if a == g)  # two of three agree: they win the vote
    excerpts = [audio.load_audio(clips[0]["audio_file"])[:16000], np.zeros(800, np.float32)]
    genders, gender_conf = recognisers.HfAudioModel(gen, "gender").predict(excerpts)
    assert set(genders) <= {"female", "male"} and all(0.5 <= x <= 1 for x in gender_conf)  # 2 classes
    assert all(len(v) == 3 and all(0 <= x <= 1 for x in v) for v in labels["dimensional"]["final"][0])
    with pytest.raises(recognisers.LabelMapError, match="LABEL_0.*label_map"):
        recognisers.HfAudioModel(dim, "dimensional")
    odd = tmp_path / "odd"  # the emotion model with one label renamed to something we do not know
    shutil.copytree(emo, odd)
    conf = json.loads((odd / "config.json").read_text())
    conf["id2label"]["4"] = "boredom"
    (odd / "config.json").write_text(json.dumps(conf))
    with pytest.raises(recognisers.LabelMapError, match="boredom"):
        recognisers.HfAudioModel(str(odd), "emotion")
    assert recognisers.HfAudioModel(str(odd), "emotion", {"boredom": "neutral"}).labels == [
        "angry", "happy", "neutral", "sad", "neutral"]
    with pytest.raises(recognisers.RecogniserError, match="random"):
        recognisers.HfAudioModel(tiny_hf(tmp_path / "nohead", ["hap", "sad"], head=False), "emotion")
    with pytest.raises(recognisers.RecogniserError, match="does not exist"):
        recognisers.HfAudioModel("./no/such/checkpoint", "emotion")


def test_acoustic_needs_train_labels(run):
    stage = runs.Stage(run, "01_annotate")
    clips = [dict(c, split="test") for c in annotate.load_clips(stage)]
    c = cfg()
    prep = annotate.prepare(stage, clips, c)
    with pytest.raises(recognisers.RecogniserError, match="train split"):
        annotate.label_windows(stage, clips, prep, c)
    assert steps.feature_kinds(cfg(emotion_backends="acoustic:whisper,labels")) == ["egemaps", "whisper"]


def test_transformers_transcript_parsing():
    class FakePipe:
        type = "seq2seq_whisper"

        def __call__(self, inputs, **kw):
            assert kw["return_timestamps"] == "word" and kw["generate_kwargs"]["language"] == "en"
            return {"chunks": [{"text": " Hello", "timestamp": (0.0, 0.4)}, {"text": " ", "timestamp": (0.4, 0.5)},
                               {"text": " world.", "timestamp": (0.5, None)}]}

    words = asr.transcribe_transformers(FakePipe(), np.zeros(16000, np.float32), "en")
    assert words == [{"w": "Hello", "start_s": 0.0, "end_s": 0.4}, {"w": "world.", "start_s": 0.5, "end_s": 1.0}]
