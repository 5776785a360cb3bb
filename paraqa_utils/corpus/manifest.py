"""The clip manifest (clips.jsonl): segment records, writing with the reject budget, split checks, metrics."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from paraqa_utils import runs

SPLITS: tuple[str, ...] = ("train", "dev", "test")


class CorpusError(RuntimeError):
    """The corpus cannot be built or loaded as asked (too many rejects, a broken split, bad settings)."""


def seg(start_s: float = 0.0, end_s: float | None = None, **fields: Any) -> dict[str, Any]:
    """A segment with every manifest field present; what a corpus does not say stays None (never invented)."""
    base = dict(start_s=start_s, end_s=end_s, speaker=None, gender=None, emotion=None, valence=None, arousal=None,
                dominance=None, text=None, congruence=None)
    return {**base, **fields}


def write_manifest(stage_dir: Path, clips: list[dict], rejects: list[dict], max_reject_share: float) -> dict[str, Any]:
    """Write clips.jsonl and rejects.jsonl; fail when rejects pass max_reject_share (after writing, to inspect)."""
    runs.write_jsonl(Path(stage_dir) / "clips.jsonl", sorted(clips, key=lambda c: c["clip_id"]))
    runs.write_jsonl(Path(stage_dir) / "rejects.jsonl", rejects)
    total = len(clips) + len(rejects)
    share = len(rejects) / total if total else 1.0
    if share > max_reject_share or not clips:
        reasons = pd.Series([r["reason"].split(":")[0] for r in rejects]).value_counts().head(5).to_dict()
        raise CorpusError(f"{len(rejects)} of {total} items rejected ({share:.1%} > max_reject_share="
                          f"{max_reject_share:.0%}); see {Path(stage_dir) / 'rejects.jsonl'}; top reasons: {reasons}")
    return dict(n_rejects=len(rejects), reject_share=round(share, 4))


def check_splits(clips: Iterable[dict], strict: bool = False) -> dict[str, bool]:
    """Do train/dev/test share a speaker or a sentence? strict (synthetic) raises when they do; real corpora
    are reported as they are (IEMOCAP's scripted sessions, for one, reuse sentences across speakers)."""
    spk: dict[str, set] = {s: set() for s in SPLITS}
    txt: dict[str, set] = {s: set() for s in SPLITS}
    for c in clips:
        for seg in c["segments"]:
            if seg.get("speaker") is not None:
                spk[c["split"]].add(seg["speaker"])
            if seg.get("text"):
                txt[c["split"]].add(" ".join(seg["text"].lower().strip(" .!?").split()))
    pairs = [("train", "dev"), ("train", "test"), ("dev", "test")]
    checks = dict(speakers_disjoint=all(not spk[a] & spk[b] for a, b in pairs),
                  texts_disjoint=all(not txt[a] & txt[b] for a, b in pairs),
                  all_splits_present=all(spk[s] or txt[s] for s in SPLITS))
    if strict and not all(checks.values()):
        shared = {f"{a}/{b}": sorted(spk[a] & spk[b])[:5] + sorted(txt[a] & txt[b])[:5] for a, b in pairs}
        raise CorpusError(f"split check failed {checks}: shared speakers/sentences {shared}")
    return checks


def segment_table(clips: Iterable[dict]) -> pd.DataFrame:
    """One row per labelled segment with its clip's split and id (what the notebook's tables and plots use)."""
    rows = [dict(clip_id=c["clip_id"], split=c["split"], source=c["source"],
                 **{k: v for k, v in s.items() if k != "tts"}) for c in clips for s in c["segments"]]
    return pd.DataFrame(rows)


def corpus_metrics(clips: list[dict], checks: dict[str, bool]) -> dict[str, Any]:
    durations = np.array([c["duration_s"] for c in clips])
    per_split = pd.Series([c["split"] for c in clips]).value_counts()
    return dict(n_clips=len(clips), **{f"n_clips_{s}": int(per_split.get(s, 0)) for s in SPLITS},
                n_segments=sum(len(c["segments"]) for c in clips), total_audio_s=round(float(durations.sum()), 2),
                min_clip_s=round(float(durations.min()), 3), max_clip_s=round(float(durations.max()), 3),
                n_speakers=len({s["speaker"] for c in clips for s in c["segments"] if s.get("speaker")}),
                n_two_speaker_clips=sum(len({s.get("speaker") for s in c["segments"]}) > 1 for c in clips),
                n_emotion_change_clips=sum(len({s.get("emotion") for s in c["segments"]}) > 1 for c in clips),
                n_converted=sum("converted_from" in c for c in clips),
                n_with_emotion_labels=sum(bool(c.get("has_emotion_labels")) for c in clips),
                congruence=dict(Counter(s.get("congruence") or "none" for c in clips for s in c["segments"])),
                split_checks=checks, **{f"split_{k}": v for k, v in checks.items()})


def pick_examples(clips: list[dict], n: int = 2) -> list[dict]:
    """Clips worth listening to: first a test clip with two speakers or a change of emotion, then a plain one."""
    pool = sorted(clips, key=lambda c: (c["split"] != "test", c["clip_id"]))
    rich = [c for c in pool if len({(s.get("speaker"), s.get("emotion")) for s in c["segments"]}) > 1]
    plain = [c for c in pool if c not in rich[:1]]
    return (rich[:1] + plain)[:n]
