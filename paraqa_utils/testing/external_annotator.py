"""A small external annotator speaking 01's `ext:` protocol (JSONL on stdin -> JSONL on stdout), for tests and as
a template for wrapping FunASR, WhisperX or any model in its own environment. It needs only numpy and soundfile.

    python -m paraqa_utils.testing.external_annotator [--crash-once MARKER] [--hang-on CLIP] [--garble CLIP]
                                                      [--refuse CLIP] [--label-set ours|emotion2vec|foreign]

Its labels come from each window's loudness and zero-crossing rate: crude, but a real function of the audio.
--crash-once exits 1 after its first clip unless MARKER exists (then it creates MARKER), so a retry succeeds;
--hang-on sleeps on that clip; --garble writes a broken line for it; --refuse answers it with an error;
--label-set emotion2vec answers in emotion2vec+'s bilingual names ("生气/angry"), foreign in a vocabulary that needs
a label_map ("irritated", "gloomy").
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def window_features(audio: np.ndarray, sr: int, start: float, end: float) -> tuple[float, float]:
    x = audio[int(start * sr):max(int(end * sr), int(start * sr) + 1)]
    rms = float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0
    zcr = float(np.mean(np.abs(np.diff(np.sign(x))) > 0)) if len(x) > 1 else 0.0
    return rms, zcr


VOCAB = {"ours": ("angry", "sad", "female", "male"), "emotion2vec": ("生气/angry", "难过/sad", "female", "male"),
         "foreign": ("irritated", "gloomy", "woman", "man")}


def label(task: str, rms: float, zcr: float, vocab: str) -> tuple[object, dict]:
    if task == "dimensional":
        a = min(1.0, rms * 8)
        return {"valence": 0.5, "arousal": round(a, 4), "dominance": round(0.3 + a / 2, 4)}, {}
    angry, sad, female, male = VOCAB[vocab]
    lab = (female if zcr > 0.12 else male) if task == "gender" else (angry if rms > 0.08 else sad)
    return lab, {lab: 0.75}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crash-once", default="")
    ap.add_argument("--hang-on", default="")
    ap.add_argument("--garble", default="")
    ap.add_argument("--refuse", default="")
    ap.add_argument("--label-set", choices=tuple(VOCAB), default="ours")
    args = ap.parse_args()
    for n, line in enumerate(sys.stdin):
        req = json.loads(line)
        cid = req["clip_id"]
        if args.crash_once and n == 1 and not Path(args.crash_once).exists():
            Path(args.crash_once).touch()
            print("external annotator: simulated crash", file=sys.stderr)
            return 1
        if cid == args.hang_on:
            time.sleep(3600)
        if cid == args.garble:
            print('{"clip_id": "' + cid + '", "labels": [', flush=True)
            continue
        if cid == args.refuse:
            print(json.dumps({"clip_id": cid, "error": "clip too short for this model's window"}), flush=True)
            continue
        audio, sr = sf.read(req["audio_path"], dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        out = [label(req["task"], *window_features(audio, sr, s, e), args.label_set)
               for s, e in req["windows"]]
        print(json.dumps({"clip_id": cid, "labels": [o[0] for o in out], "scores": [o[1] for o in out]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
