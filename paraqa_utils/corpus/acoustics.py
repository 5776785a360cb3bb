"""Stage 00's acoustic checks: per-segment F0, rate and level read back from the written audio, and how well they
give the emotion (is emotion audible, yet not trivially so?)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from paraqa_utils.progress import tqdm

from paraqa_utils.corpus import tts
from paraqa_utils.audio import SAMPLE_RATE_HZ, load_audio, resolve_audio


def measure_segments(run_dir: str | Path, clips: list[dict], progress: bool = True) -> pd.DataFrame:
    """Acoustic statistics of every segment, read back from the written audio (so they describe what was saved)."""
    rows = []
    for c in tqdm(clips, desc="measuring segments", unit="clip", disable=not progress):
        y, sr = load_audio(resolve_audio(run_dir, c["audio_path"]), check=False), SAMPLE_RATE_HZ
        for k, s in enumerate(c["segments"]):
            seg = y[int(s["start_s"] * sr): int(s["end_s"] * sr)]
            dur = len(seg) / sr
            words = len(s["text"].split()) if s.get("text") else 0
            rows.append(dict(clip_id=c["clip_id"], segment=k, split=c["split"], emotion=s.get("emotion"),
                             speaker=s.get("speaker"), gender=s.get("gender"), valence=s.get("valence"),
                             arousal=s.get("arousal"), duration_s=dur,
                             rate_wps=words / dur if words and dur > 0 else float("nan"),
                             **tts.acoustic_stats(seg, sr)))
    df = pd.DataFrame(rows)
    if len(df):  # F0 relative to the speaker's own median: the emotion's effect without the voice's register
        own = df.groupby("speaker", dropna=False)["f0_median_hz"].transform("median")
        df["f0_rel_st"] = 12 * np.log2(df["f0_median_hz"] / own)
    return df


def prosody_table(features: pd.DataFrame) -> pd.DataFrame:
    """Per emotion: median F0 (absolute, and in semitones from the speaker's median), F0 spread, speaking rate
    (words/s) and level (dBFS) of the audio."""
    df = features.dropna(subset=["emotion"])
    return (df.groupby("emotion")[["f0_median_hz", "f0_rel_st", "f0_spread_st", "rate_wps", "rms_db"]].median()
            .assign(n_segments=df.groupby("emotion").size()).round(2))


FEATURES = ("log_f0", "f0_spread_st", "rate_wps", "rms_db", "rms_sd_db")


def separability(features: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """How well simple acoustics give the emotion: a logistic regression trained on train, scored on test.

    Segments are the unit because a clip may change emotion between utterances. Far above chance but far
    below 100 % is what we want: emotion audible in the voice, yet overlapping across classes and voices.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df = features.assign(log_f0=np.log(features["f0_median_hz"])).dropna(subset=[*FEATURES, "emotion"])
    train, test = df[df["split"] == "train"], df[df["split"] == "test"]
    if train["emotion"].nunique() < 2 or test.empty:
        return dict(separability_accuracy=None, separability_note="needs >= 2 emotions in train and a test split")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(train[list(FEATURES)], train["emotion"])
    pred = model.predict(test[list(FEATURES)])
    recall = {e: round(float(np.mean(pred[test["emotion"] == e] == e)), 3) for e in sorted(test["emotion"].unique())}
    return dict(separability_accuracy=round(float(np.mean(pred == test["emotion"].to_numpy())), 4),
                separability_chance=round(1 / train["emotion"].nunique(), 4), separability_n_train=len(train),
                separability_n_test=len(test), separability_recall=recall, separability_features=list(FEATURES))
