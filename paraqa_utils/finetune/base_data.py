"""The base's training data: train-split examples in our own wording, the leakage check, label classes, and the
label read-out's fit on pooled encoder states."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import torch

from paraqa_utils import audio
from paraqa_utils.finetune import label_readout
from paraqa_utils.text import dominant_label

TRANSCRIBE = ("Please write out the words in this recording.", "Give a word-for-word transcript of the clip.",
              "Type out what you hear being said.")
DESCRIBE = ("Who is talking here, in what mood, and what do they say?",
            "Describe the voice in this recording and report its words.")
GENDER_Q = ("Does this voice belong to a man or a woman?", "Tell me the speaker's gender.")
EMOTION_Q = ("What mood does the speaker's voice carry?", "Which feeling comes through in how this is said?")
NOUN = {"female": "A woman", "male": "A man"}

# ------------------------------------------------------------------------------------------------ data
def labelled_segments(clip: dict[str, Any], ann: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The corpus's own segments when it has labels, else the annotator's (unlabelled audio)."""
    segs = clip.get("segments") or []
    if clip.get("has_emotion_labels", True) and any(s.get("emotion") for s in segs):
        return segs
    return (ann or {}).get("segments") or segs


def _pick(options: Sequence[str], *key: str) -> str:
    h = int(hashlib.sha256("|".join(key).encode()).hexdigest()[:8], 16)
    return options[h % len(options)]


def _describe(segs: list[dict[str, Any]]) -> str:
    parts = []
    for k, s in enumerate(s for s in segs if (s.get("text") or "").strip()):
        who = NOUN.get(s.get("gender") or "", "Someone")
        mood = f", sounding {s['emotion']}," if s.get("emotion") else ""
        parts.append(f"{'Then ' + who[0].lower() + who[1:] if k else who}{mood} says: \"{s['text'].strip()}\"")
    return " ".join(parts)


def examples(clips: dict[str, dict], anns: dict[str, dict], max_clips: int = 0) -> list[dict[str, Any]]:
    """The base's training rows (03's row format) from the train split's clips, in clip-id order."""
    rows = []
    train = [c for c in sorted(clips) if clips[c].get("split") == "train"]
    for cid in train[:max_clips] if max_clips else train:
        clip = clips[cid]
        segs = labelled_segments(clip, anns.get(cid))
        text = " ".join(s["text"].strip() for s in clip.get("segments", []) if (s.get("text") or "").strip())
        base = {"condition": "base", "clip_id": cid, "audio_path": clip["audio_path"], "explicit_block": None}
        tasks = []
        if text:
            tasks.append(("transcribe", _pick(TRANSCRIBE, cid, "t"), text))
            if all(s.get("gender") and s.get("emotion") for s in segs):
                tasks.append(("describe", _pick(DESCRIBE, cid, "d"), _describe(segs)))
        gen, emo = dominant_label(segs, "gender"), dominant_label(segs, "emotion")
        if gen in NOUN and len({s.get("gender") for s in segs}) == 1:
            tasks.append(("gender", _pick(GENDER_Q, cid, "g"), f"{NOUN[gen]}: the speaker is {gen}."))
        if emo:
            tasks.append(("emotion", _pick(EMOTION_Q, cid, "e"), f"The speaker sounds {emo}."))
        rows += [{**base, "example_id": f"base:{task}:{cid}", "task": task, "instruction": q, "target": t}
                 for task, q, t in tasks]
    return rows


def leakage(rows: list[dict[str, Any]], clips: dict[str, dict]) -> dict[str, Any]:
    """Clips, speakers and sentences of the base's rows that belong to the dev or test split (all must be 0)."""
    held = [c for c in clips.values() if c.get("split") in ("dev", "test")]
    held_spk = {s.get("speaker") for c in held for s in c.get("segments", []) if s.get("speaker")}
    held_sent = {s.get("sentence_id") for c in held for s in c.get("segments", []) if s.get("sentence_id")}
    used = {r["clip_id"] for r in rows}
    segs = [s for c in used for s in clips[c].get("segments", [])]
    out = {"n_clips": len(used), "n_held_out_clips": sum(clips[c].get("split") != "train" for c in used),
           "n_held_out_speakers": len({s.get("speaker") for s in segs} & held_spk),
           "n_held_out_sentences": len({s.get("sentence_id") for s in segs} & held_sent)}
    out["clean"] = not (out["n_held_out_clips"] or out["n_held_out_speakers"] or out["n_held_out_sentences"])
    return out


def label_classes(clips: dict[str, dict], anns: dict[str, dict]) -> dict[str, list[str]]:
    """Gender and emotion classes of the train split's labels (a facet with fewer than 2 classes is left out)."""
    seen: dict[str, set] = {"gender": set(), "emotion": set()}
    for cid, clip in clips.items():
        if clip.get("split") == "train":
            for s in labelled_segments(clip, anns.get(cid)):
                for f in seen:
                    if s.get(f):
                        seen[f].add(str(s[f]))
    return {f: sorted(v) for f, v in seen.items() if len(v) >= 2}


# ------------------------------------------------------------------------------------------------ heads
def fit_label_heads(model: Any, cache: Any, clips: dict[str, dict], anns: dict[str, dict], run_dir: Path,
                    clip_ids: Sequence[str], seed: int) -> dict[str, Any]:
    """Fit the label read-out on pooled encoder states of the train clips: each labelled segment, and each whole
    clip with its dominant labels (test items ask about whole clips)."""
    from paraqa_utils.finetune.speech_llm import ENCODER_STRIDE, MEL_HOP

    per_s = audio.SAMPLE_RATE_HZ / (ENCODER_STRIDE * MEL_HOP)  # encoder frames a second (50)
    pairs = [(audio.content_hash(audio.resolve_audio(run_dir, clips[c]["audio_path"])),
              audio.resolve_audio(run_dir, clips[c]["audio_path"])) for c in clip_ids]
    feats, labels = [], {f: [] for f in model.label_readout.facets}
    for start in range(0, len(pairs), 32):
        part = clip_ids[start:start + 32]
        for cid, st in zip(part, cache.states_for(pairs[start:start + 32])):
            segs = labelled_segments(clips[cid], anns.get(cid))
            views = [(st, {f: dominant_label(segs, f) for f in labels})]
            for s in segs:
                a, b = int(float(s.get("start_s", 0)) * per_s), int(float(s.get("end_s", 0)) * per_s)
                if b - a >= 10:
                    views.append((st[a:b], {f: s.get(f) for f in labels}))
            for v, lab in views:
                feats.append(label_readout.pooled(v))
                for f in labels:
                    labels[f].append(lab[f])
    acc = model.label_readout.fit(torch.stack(feats), labels, seed=seed)
    return {"n_views": len(feats), "train_accuracy": {f: round(a, 4) for f, a in acc.items()}}

