"""Synthetic corpus: banks, planning, determinism, split disjointness, real synthesis of a handful of utterances."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from paraqa_utils import audio
from paraqa_utils import corpus, params, runs
from paraqa_utils.corpus import acoustics
from paraqa_utils.corpus import tts

def corpus_cfg(**values):
    """A CorpusConfig with these knobs, the rest from 00_corpus.ipynb's parameters cell."""
    return params.stage_config(corpus.CorpusConfig, "00_corpus", values)


needs_tts = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite") and shutil.which("sox")),
                               reason="apt packages espeak-ng, flite and sox are needed to synthesise")


def test_voice_and_sentence_banks_meet_the_issue():
    voices = tts.load_voices()
    assert len(voices) >= 12 and len({v.voice_id for v in voices}) == len(voices)
    assert len({(v.engine, v.voice) for v in voices}) == len(voices), "two speakers share one engine voice"
    assert {v.engine for v in voices} == {"espeak-ng", "flite"}
    for split in corpus.SPLITS:  # every split can hold both genders
        assert {v.gender for v in voices if v.split == split} == {"female", "male"}, split
    scripts = corpus.load_scripts()
    assert len(scripts) >= 300 and scripts["text"].is_unique and scripts["sentence_id"].is_unique
    share = scripts["text_emotion"].value_counts(normalize=True)
    assert share["none"] > 0.5, "most sentences must be emotionally ambiguous in their words"
    assert set(share.index) == {"none", *tts.EMOTIONS} - {"neutral"}


def test_preset_valence_centres_pass_the_consistency_filter_with_room_to_spare():
    from paraqa_utils.annotate import condense

    for emo, p in tts.PRESETS.items():
        valence = p["vad"][0]
        assert condense.is_consistent(emo, valence), emo
        # a centre on a band edge would lose half of that emotion's windows to the filter by construction
        assert all(condense.is_consistent(emo, valence + d) for d in (-0.04, 0.04)), emo


def test_presets_cover_every_emotion_with_vad_in_range():
    assert set(tts.PRESETS) == set(tts.EMOTIONS)
    for emo, p in tts.PRESETS.items():
        assert all(0 <= x <= 1 for x in p["vad"]), emo
        assert abs(sum(p["endings"].values()) - 1) < 1e-9
    rng = np.random.default_rng(0)
    arousal = {e: np.mean([tts.draw_prosody(e, rng, 6)[1][1] for _ in range(200)]) for e in ("sad", "angry")}
    assert arousal["angry"] > arousal["sad"] + 0.4
    pros, vad = tts.draw_prosody("sad", rng, 6, jitter=0.0)
    assert pros.pitch_factor == tts.PRESETS["sad"]["pitch"] and vad == tts.PRESETS["sad"]["vad"]


def test_plan_is_deterministic_and_respects_splits_and_labels():
    cfg = corpus_cfg(n_clips=60, seed=3)
    plans = corpus.plan_corpus(cfg)
    assert plans == corpus.plan_corpus(cfg)
    assert plans != corpus.plan_corpus(corpus_cfg(n_clips=60, seed=4))
    voices = {v.voice_id: v for v in tts.load_voices()}
    sent_split = corpus.split_scripts(corpus.load_scripts(), 3, cfg.dev_share, cfg.test_share)
    assert {p["split"] for p in plans} == set(corpus.SPLITS)
    for p in plans:
        assert 1 <= len(p["utterances"]) <= 4
        assert len({u["voice_id"] for u in p["utterances"]}) <= 2
        for u in p["utterances"]:
            assert voices[u["voice_id"]].split == p["split"] and sent_split[u["sentence_id"]] == p["split"]
            assert all(0 <= u[d] <= 1 for d in ("valence", "arousal", "dominance"))
            expected = ("ambiguous" if u["text_emotion"] == "none" else
                        "congruent" if u["text_emotion"] == u["emotion"] else "incongruent")
            assert u["congruence"] == expected
    congruence = pd.Series([u["congruence"] for p in plans for u in p["utterances"]]).value_counts(normalize=True)
    assert congruence["ambiguous"] > 0.5 and congruence["congruent"] > 0 and congruence["incongruent"] > 0
    assert any(len({u["emotion"] for u in p["utterances"]}) > 1 for p in plans), "emotion must be able to change"


def test_split_check_passes_clean_plans_and_catches_leaks():
    plans = corpus.plan_corpus(corpus_cfg(n_clips=30))
    clips = [dict(clip_id=p["clip_id"], split=p["split"], segments=[dict(speaker=u["voice_id"], text=u["text"])
                                                                    for u in p["utterances"]]) for p in plans]
    assert corpus.check_splits(clips, strict=True) == dict(speakers_disjoint=True, texts_disjoint=True,
                                                           all_splits_present=True)
    train_seg = next(c for c in clips if c["split"] == "train")["segments"][0]
    leaky = clips + [dict(clip_id="x", split="test", segments=[dict(speaker="vX", text=train_seg["text"] + "!")])]
    assert corpus.check_splits(leaky)["texts_disjoint"] is False
    leaky = clips + [dict(clip_id="y", split="dev", segments=[dict(speaker=train_seg["speaker"], text="new words")])]
    assert corpus.check_splits(leaky)["speakers_disjoint"] is False
    with pytest.raises(corpus.CorpusError, match="split check failed"):
        corpus.check_splits(leaky, strict=True)


@pytest.mark.parametrize("bad", [dict(n_clips=2), dict(max_utterances_per_clip=5), dict(min_clip_s=30.0),
                                 dict(congruent_share=0.7, incongruent_share=0.5), dict(dev_share=0.5, test_share=0.5)])
def test_config_rejects_impossible_settings(bad):
    with pytest.raises(corpus.CorpusError, match="invalid corpus settings"):
        corpus_cfg(**bad)


def test_acoustic_stats_measure_a_known_signal():
    sr = 16000
    t = np.arange(sr) / sr
    y = 0.1 * np.sign(np.sin(2 * np.pi * 150 * t)) * 0.5 + 0.05 * np.sin(2 * np.pi * 300 * t)  # harmonic, 150 Hz
    st = tts.acoustic_stats(y.astype(np.float32), sr)
    assert abs(st["f0_median_hz"] - 150) < 3
    tone = 0.1 * np.sin(2 * np.pi * 220 * t)
    st = tts.acoustic_stats(tone.astype(np.float32), sr)
    assert abs(st["f0_median_hz"] - 220) < 4 and abs(st["rms_db"] - 20 * np.log10(0.1 / np.sqrt(2))) < 0.5
    assert np.isnan(tts.acoustic_stats(np.zeros(100, np.float32), sr)["f0_median_hz"])


def test_separability_tracks_how_informative_the_features_are():
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 300), ("test", 120)):
        for k in range(n):
            emo = tts.EMOTIONS[k % 6]
            i = tts.EMOTIONS.index(emo)
            rows.append(dict(split=split, emotion=emo, f0_median_hz=100 * 1.3 ** i, f0_spread_st=i, rate_wps=3 + i,
                             rms_db=-30 + 2 * i, rms_sd_db=rng.normal()))
    clean = pd.DataFrame(rows)
    assert acoustics.separability(clean)["separability_accuracy"] > 0.95
    noise = clean.assign(**{c: rng.normal(size=len(clean)) ** 2 + 1 for c in
                            ("f0_median_hz", "f0_spread_st", "rate_wps", "rms_db")})
    assert acoustics.separability(noise)["separability_accuracy"] < 0.35


def test_write_manifest_fails_only_past_the_reject_threshold(tmp_path):
    clips = [dict(clip_id=f"c{i}", segments=[]) for i in range(9)]
    rejects = [dict(source="x", item="bad", reason="missing audio file /nowhere.wav")]
    assert corpus.write_manifest(tmp_path, clips, rejects, 0.2) == dict(n_rejects=1, reject_share=0.1)
    assert [r["clip_id"] for r in runs.read_jsonl(tmp_path / "clips.jsonl")] == [f"c{i}" for i in range(9)]
    with pytest.raises(corpus.CorpusError, match="missing audio file"):
        corpus.write_manifest(tmp_path, clips[:2], rejects, 0.2)
    assert len(list(runs.read_jsonl(tmp_path / "rejects.jsonl"))) == 1  # written before failing, to inspect


def test_missing_engine_is_a_clear_error_naming_the_apt_package(monkeypatch, tmp_path):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None if name == "flite" else "/usr/bin/" + name)
    with pytest.raises(tts.TTSEngineMissing, match=r"apt-get install -y flite"):
        corpus.build_synthetic(tmp_path, corpus_cfg(n_clips=3, n_workers=1), progress=False)
    assert not (tmp_path / "audio").exists(), "nothing may be synthesised before the engine check"


@needs_tts
def test_presets_are_audible_in_the_audio():
    """Same voice and sentence, jitter 0: the presets move level, rate and F0 the intended way in both engines."""
    text = "The meeting moved to Friday afternoon."
    for vid in ("v07", "v06"):  # an espeak-ng and a flite voice
        voice = next(v for v in tts.load_voices() if v.voice_id == vid)
        stats = {}
        for emo in ("sad", "angry", "surprised"):
            pros = tts.Prosody(**{**tts.prosody_dict(tts.draw_prosody(emo, np.random.default_rng(0), 6, jitter=0)[0]),
                                  "pause_after_word": -1, "tremolo_depth": 0.0})
            y = tts.synthesize(text, voice, pros)
            stats[emo] = dict(tts.acoustic_stats(y, 16000), dur=len(y) / 16000)
        assert stats["angry"]["rms_db"] > stats["sad"]["rms_db"] + 6, vid
        assert stats["sad"]["dur"] > 1.15 * stats["angry"]["dur"], vid
        assert stats["surprised"]["f0_median_hz"] > 1.2 * stats["sad"]["f0_median_hz"], vid


@needs_tts
def test_render_writes_16k_clips_with_consistent_segments_deterministically(tmp_path):
    cfg = corpus_cfg(n_clips=3, n_workers=2, max_utterances_per_clip=3, max_clip_s=6.0, seed=5)
    stage_dir = tmp_path / "run" / "00_corpus"
    clips, rejects = corpus.build_synthetic(stage_dir, cfg, progress=False)
    assert rejects == [] and len(clips) == 3
    for c in clips:
        path = audio.resolve_audio(tmp_path / "run", c["audio_path"])
        assert c["audio_path"] == f"00_corpus/audio/{c['clip_id']}.wav" and path.exists()
        info = sf.info(str(path))
        assert info.samplerate == 16000 and info.channels == 1
        assert abs(info.frames / 16000 - c["duration_s"]) < 0.01 and cfg.min_clip_s <= c["duration_s"] <= 6.0
        ends = [0.0] + [x for s in c["segments"] for x in (s["start_s"], s["end_s"])] + [c["duration_s"]]
        assert ends == sorted(ends), "segments must be ordered, non-overlapping and inside the clip"
        for s in c["segments"]:
            assert s["emotion"] in tts.EMOTIONS and s["gender"] in ("female", "male") and s["text"]
    again, _ = corpus.build_synthetic(tmp_path / "other" / "00_corpus", cfg, progress=False)
    assert [json.dumps(c["segments"]) for c in again] == [json.dumps(c["segments"]) for c in clips]
    first = clips[0]["audio_path"].split("/", 1)[1]
    assert (tmp_path / "run/00_corpus" / first).read_bytes() == (tmp_path / "other/00_corpus" / first).read_bytes()
    assert audio.resolve_audio(tmp_path, "/abs/corpus/x.wav").as_posix() == "/abs/corpus/x.wav"
