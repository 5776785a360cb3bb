"""Real corpora into the clip manifest: MSP-Podcast, IEMOCAP, CREMA-D, RAVDESS, generic CSV/JSONL, real speech."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import soundfile as sf
from paraqa_utils.progress import tqdm

from paraqa_utils import audio, runs
from paraqa_utils.text import EMOTIONS, LABEL_ALIASES
from paraqa_utils.corpus.manifest import SPLITS, CorpusError, seg
from paraqa_utils.corpus.real_speech import fetch_real_speech, load_real_speech

MSP_EMOTIONS = {"A": "angry", "S": "sad", "H": "happy", "U": "surprised", "F": "fearful", "D": "disgusted",
                "C": "other", "N": "neutral", "O": "other", "X": None}  # C = contempt; X = no consensus
MSP_SPLITS = {"Train": "train", "Development": "dev", "Test1": "test", "Test2": "test", "Test3": "test"}
# [decided] excitement joins happiness (common IEMOCAP practice), frustration goes to other; xxx = no agreement.
IEMOCAP_EMOTIONS = {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry", "fru": "other",
                    "sur": "surprised", "fea": "fearful", "dis": "disgusted", "oth": "other", "xxx": None}
IEMOCAP_SPLITS = {1: "train", 2: "train", 3: "train", 4: "dev", 5: "test"}  # [decided] no official split
CREMA_EMOTIONS = {"ANG": "angry", "DIS": "disgusted", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMA_SENTENCES = {"IEO": "It's eleven o'clock.", "TIE": "That is exactly what happened.",
                   "IOM": "I'm on my way to the meeting.", "IWW": "I wonder what this is about.",
                   "TAI": "The airplane is almost full.", "MTI": "Maybe tomorrow it will be cold.",
                   "IWL": "I would like a new alarm clock.", "ITH": "I think I have a doctor's appointment.",
                   "DFA": "Don't forget a jacket.", "ITS": "I think I've seen this before.",
                   "TSI": "The surface is slick.", "WSI": "We'll stop in a couple of minutes."}
RAVDESS_EMOTIONS = {"01": "neutral", "02": "neutral", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
                    "07": "disgusted", "08": "surprised"}  # 02 = calm, kept as emotion_raw
RAVDESS_SENTENCES = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
DIMS = ("valence", "arousal", "dominance")
GENDERS = {"male": "male", "female": "female", "m": "male", "f": "female"}
SPLIT_ALIASES = {"val": "dev", "validation": "dev", "development": "dev"}


def dims(raw: dict[str, Any], lo: float, hi: float, required: bool = False) -> dict[str, Any] | str:
    """Dimensional values scaled to 0..1 with the originals kept, or the reason they cannot be used.

    A dimension absent from the row is simply not given; one present but empty/NaN is a reject, except when all
    three are empty in a corpus whose dimensions are optional (a categorical-only row of a generic manifest).
    """
    vals: dict[str, float] = {}
    for d in (d for d in DIMS if d in raw):
        x = raw[d]
        try:
            vals[d] = float("nan") if x is None or (isinstance(x, str) and not x.strip()) else float(x)
        except (TypeError, ValueError):
            return f"non-numeric {d} value {x!r}"
    missing = [d for d, x in vals.items() if math.isnan(x)]
    if vals and len(missing) == len(vals) and not required:
        return {}
    if missing or (required and len(vals) < len(DIMS)):
        return f"NaN {(missing or ['dimensional'])[0]} value"
    out: dict[str, Any] = {}
    for d, x in vals.items():
        if not lo <= x <= hi:
            return f"{d} value {x} outside the scale {lo}..{hi}"
        out[d], out[f"{d}_raw"] = round((x - lo) / (hi - lo), 4), x
    if out:
        out["dimension_scale"] = [lo, hi]
    return out


def speaker_splits(speakers: list[str], seed: int, dev_share: float, test_share: float) -> dict[str, str]:
    """Speaker -> split for corpora without an official split [decided]: seeded, disjoint by speaker."""
    ids = list(np.random.default_rng([seed, 23]).permutation(sorted(set(speakers))))
    n_dev, n_test = max(1, round(len(ids) * dev_share)), max(1, round(len(ids) * test_share))
    return {s: "dev" if i < n_dev else "test" if i < n_dev + n_test else "train" for i, s in enumerate(ids)}


def load_msp_podcast(root: Path, **_: Any) -> tuple[list[dict], list[dict]]:
    labels = root / "Labels" / "labels_consensus.csv"
    if not labels.exists():
        raise CorpusError(f"MSP-Podcast: {labels} not found; corpus_path must be the folder holding Labels/, Audios/")
    audio_dir = next((p for p in (root / "Audios", root / "Audio") if p.is_dir()), root / "Audios")
    items, rejects = [], []
    for r in pd.read_csv(labels, dtype={"FileName": str, "EmoClass": str}).to_dict("records"):
        name, code, stem = str(r["FileName"]), str(r.get("EmoClass", "")).strip(), Path(str(r["FileName"])).stem
        d = dims({"valence": r.get("EmoVal"), "arousal": r.get("EmoAct"), "dominance": r.get("EmoDom")}, 1, 7, True)
        if code not in MSP_EMOTIONS or isinstance(d, str) or r.get("Split_Set") not in MSP_SPLITS:
            why = (f"emotion label {code!r} outside the known set" if code not in MSP_EMOTIONS else
                   d if isinstance(d, str) else f"unknown split {r.get('Split_Set')!r}")
            rejects.append(dict(item=stem, reason=why))
            continue
        spk, txt = r.get("SpkrID"), root / "Transcripts" / f"{stem}.txt"
        segment = seg(speaker=None if pd.isna(spk) or str(spk).lower() == "unknown" else f"msp_{spk}",
                      gender=GENDERS.get(str(r.get("Gender", "")).lower()), emotion=MSP_EMOTIONS[code],
                      emotion_raw=code, text=txt.read_text().strip() if txt.exists() else None, **d)
        items.append(dict(clip_id=stem, path=audio_dir / name, split=MSP_SPLITS[r["Split_Set"]], segments=[segment]))
    return items, rejects


IEMOCAP_LINE = re.compile(r"^\[([\d.]+) - ([\d.]+)\]\s+(\S+)\s+(\S+)\s+\[([^,\]]+), ([^,\]]+), ([^,\]]+)\]")


def load_iemocap(root: Path, **_: Any) -> tuple[list[dict], list[dict]]:
    sessions = sorted(root.glob("Session[1-5]"))
    if not sessions:
        raise CorpusError(f"IEMOCAP: no Session1..Session5 folders under {root}")
    items, rejects = [], []
    for sess in sessions:
        texts = {}
        for f in sorted((sess / "dialog" / "transcriptions").glob("*.txt")):
            for line in f.read_text(errors="replace").splitlines():
                utt, _, rest = line.partition(" ")
                if ":" in rest:
                    texts[utt] = rest.split(":", 1)[1].strip()
        for ev in sorted((sess / "dialog" / "EmoEvaluation").glob("*.txt")):
            for m in filter(None, map(IEMOCAP_LINE.match, ev.read_text(errors="replace").splitlines())):
                _, _, utt, cat, v, a, dom = m.groups()
                d = dims({"valence": v, "arousal": a, "dominance": dom}, 1.0, 5.0, True)
                why = f"emotion label {cat!r} outside the known set" if cat not in IEMOCAP_EMOTIONS else d
                if isinstance(why, str):
                    rejects.append(dict(item=utt, reason=why))
                    continue
                letter = utt.rsplit("_", 1)[-1][:1]  # the utterance's speaker: F or M of the session's pair
                items.append(dict(clip_id=utt, path=sess / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav",
                                  split=IEMOCAP_SPLITS[int(sess.name[-1])], segments=[seg(
                                      speaker=f"{utt[:5]}{letter}", gender={"F": "female", "M": "male"}.get(letter),
                                      emotion=IEMOCAP_EMOTIONS[cat], emotion_raw=cat, text=texts.get(utt), **d)]))
    return items, rejects


def load_crema_d(root: Path, seed: int = 0, dev_share: float = 0.15, test_share: float = 0.15,
                 **_: Any) -> tuple[list[dict], list[dict]]:
    wav_dir = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    demo = root / "VideoDemographics.csv"
    sex = pd.read_csv(demo).set_index("ActorID")["Sex"].to_dict() if demo.exists() else {}
    items, rejects = [], []
    for wav in sorted(wav_dir.glob("*.wav")):
        parts = wav.stem.split("_")
        if len(parts) != 4 or parts[2] not in CREMA_EMOTIONS:
            rejects.append(dict(item=f"crema_{wav.stem}", reason="file name: emotion label outside the known set"))
            continue
        actor, sentence, emo, level = parts
        gender = GENDERS.get(str(sex.get(int(actor) if actor.isdigit() else actor)).lower())
        items.append(dict(clip_id=f"crema_{wav.stem}", path=wav, segments=[seg(
            speaker=f"crema_{actor}", gender=gender, emotion=CREMA_EMOTIONS[emo], emotion_raw=emo,
            intensity_raw=level, text=CREMA_SENTENCES.get(sentence))]))
    return _split_by_speaker(items, seed, dev_share, test_share), rejects


def _split_by_speaker(items: list[dict], seed: int, dev_share: float, test_share: float) -> list[dict]:
    split = speaker_splits([i["segments"][0]["speaker"] for i in items], seed, dev_share, test_share)
    return [dict(i, split=split[i["segments"][0]["speaker"]]) for i in items]


def load_ravdess(root: Path, seed: int = 0, dev_share: float = 0.15, test_share: float = 0.15,
                 **_: Any) -> tuple[list[dict], list[dict]]:
    items, rejects = [], []
    for wav in sorted(root.rglob("*.wav")):
        f = wav.stem.split("-")
        if len(f) != 7 or f[2] not in RAVDESS_EMOTIONS or not f[6].isdigit():
            rejects.append(dict(item=f"ravdess_{wav.stem}", reason="file name: emotion label outside the known set"))
            continue
        if f[1] != "01":  # 02 = song: not speech, left out (not a reject)
            continue
        actor = int(f[6])  # RAVDESS documents odd actor numbers as male, even as female
        items.append(dict(clip_id=f"ravdess_{wav.stem}", path=wav, segments=[seg(
            speaker=f"ravdess_{actor:02d}", gender="male" if actor % 2 else "female", emotion=RAVDESS_EMOTIONS[f[2]],
            emotion_raw=f[2], intensity_raw=f[3], text=RAVDESS_SENTENCES.get(f[4]))]))
    return _split_by_speaker(items, seed, dev_share, test_share), rejects


def load_manifest(path: Path, seed: int = 0, dev_share: float = 0.15, test_share: float = 0.15,
                  dim_min: float = 0.0, dim_max: float = 1.0, **_: Any) -> tuple[list[dict], list[dict]]:
    """A CSV (one segment per row) or JSONL (a row may hold `segments`) of audio_path + optional labels."""
    if not path.is_file():
        raise CorpusError(f"manifest: {path} is not a file (expected a .csv or .jsonl)")
    rows = (list(runs.read_jsonl(path)) if path.suffix == ".jsonl"
            else pd.read_csv(path).astype(object).where(lambda x: x.notna(), None).to_dict("records"))
    items, rejects, seen = [], [], set()
    for r in rows:
        if not r.get("audio_path"):
            rejects.append(dict(item=str(r)[:80], reason="row without audio_path"))
            continue
        audio = Path(r["audio_path"]) if Path(r["audio_path"]).is_absolute() else path.parent / r["audio_path"]
        clip_id = str(r.get("clip_id") or Path(r["audio_path"]).stem)
        segs, why = [], "duplicate clip_id" if clip_id in seen else None
        for s in r.get("segments") or [r]:
            emo = s.get("emotion")
            emo = {**LABEL_ALIASES, "calm": "neutral"}.get(str(emo).lower(), str(emo).lower()) if emo is not None else None
            d = dims(s, dim_min, dim_max)
            why = why or (f"emotion label {s.get('emotion')!r} outside the known set" if emo is not None and emo not in
                          EMOTIONS else d if isinstance(d, str) else None)
            if why:
                break
            keep = {k: s[k] for k in ("speaker", "gender", "text", "congruence") if s.get(k) is not None}
            segs.append(seg(float(s.get("start_s") or 0.0), s.get("end_s"), emotion=emo, emotion_raw=s.get("emotion"),
                            **keep, **d))
        split = SPLIT_ALIASES.get(str(r.get("split")).lower(), r.get("split"))
        if not why and split is not None and split not in SPLITS:
            why = f"unknown split {split!r}"
        if why:
            rejects.append(dict(item=clip_id, reason=why))
            continue
        seen.add(clip_id)
        items.append(dict(clip_id=clip_id, path=audio, split=split, segments=segs))
    group = {i["clip_id"]: i["segments"][0].get("speaker") or i["clip_id"] for i in items}  # split by speaker
    split_of = speaker_splits(list(group.values()), seed, dev_share, test_share)
    for i in items:
        i["split"] = i["split"] or split_of[group[i["clip_id"]]]
    return items, rejects


def check_audio(path: Path, clip_id: str, stage_dir: Path, sample_rate_hz: int) -> dict[str, Any] | str:
    """Audio facts for the manifest, converting to mono/sample_rate_hz into the stage when needed; else a reason."""
    if not path.exists():
        return f"missing audio file {path}"
    try:
        head = audio.info(path)
    except audio.AudioError as exc:
        return str(exc)
    if head["frames"] == 0:
        return "zero-length audio"
    if head["sample_rate_hz"] == sample_rate_hz and head["channels"] == 1:
        return dict(audio_path=str(path.resolve()), duration_s=round(head["duration_s"], 3),
                    sample_rate_hz=head["sample_rate_hz"])
    try:
        y = audio.load_audio(path, sample_rate_hz, check=False)
    except audio.AudioError as exc:
        return str(exc)
    out = stage_dir / "audio" / f"{clip_id}.wav"
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, y, sample_rate_hz, subtype="PCM_16")
    return dict(audio_path=f"{stage_dir.name}/audio/{out.name}", duration_s=round(len(y) / sample_rate_hz, 3),
                sample_rate_hz=sample_rate_hz, converted_from=dict(path=str(path.resolve()),
                                                                   sample_rate_hz=head["sample_rate_hz"],
                                                                   channels=head["channels"]))


LOADERS: dict[str, Callable[..., tuple[list[dict], list[dict]]]] = dict(
    msp_podcast=load_msp_podcast, iemocap=load_iemocap, crema_d=load_crema_d, ravdess=load_ravdess,
    manifest=load_manifest, real_speech=load_real_speech)


def load(source: str, corpus_path: str | Path, stage_dir: Path, seed: int = 0, n_clips: int = 0,
         sample_rate_hz: int = 16000, progress: bool = True, **options: Any) -> tuple[list[dict], list[dict]]:
    """Any real corpus as (clips, rejects) in the manifest format; n_clips > 0 keeps a seeded sample of clips."""
    if source not in LOADERS:
        raise CorpusError(f"unknown source '{source}'; known: synthetic, {', '.join(LOADERS)}")
    if source == "real_speech":
        root = fetch_real_speech(Path(corpus_path) if corpus_path else runs.cache_dir())  # corpus_path = a cache root
    else:
        if not corpus_path:
            raise CorpusError(f"source '{source}' needs corpus_path (the corpus folder, or the manifest file)")
        root = Path(corpus_path).expanduser()
        if not root.exists():
            raise CorpusError(f"corpus_path {root} does not exist")
    items, rejects = LOADERS[source](root, seed=seed, **options)
    if 0 < n_clips < len(items):
        keep = np.random.default_rng([seed, 31]).choice(len(items), n_clips, replace=False)
        items = [items[k] for k in sorted(keep)]
    clips = []
    for it in tqdm(items, desc=f"checking {source} audio", unit="clip", disable=not progress):
        facts = check_audio(Path(it["path"]), it["clip_id"], Path(stage_dir), sample_rate_hz)
        if isinstance(facts, str):
            rejects.append(dict(item=it["clip_id"], reason=facts))
            continue
        segs = [dict(s, end_s=facts["duration_s"] if s["end_s"] is None else s["end_s"]) for s in it["segments"]]
        labelled = any(s.get("emotion") or s.get("valence") is not None for s in segs)
        clips.append(dict(clip_id=it["clip_id"], **facts, split=it["split"], source=source,
                          has_emotion_labels=labelled, segments=segs))
    return clips, [dict(source=source, **r) for r in rejects]
