"""emotion2vec+ through FunASR, as an `ext:` annotator of 01 (run in its own environment: make annotator-env NAME=funasr).

    .venv-annotators/funasr/bin/python paraqa_utils/annotate/ext_funasr.py [--model emotion2vec/emotion2vec_plus_large]
                                                                           [--hub hf|ms] [--device cpu|cuda]

Reads 01's JSONL requests on stdin and answers one line per clip on stdout (the protocol of
paraqa_utils/annotate/external.py): per window the label with the highest score, and every class's score. It is
run as a script, never imported by ParaQA: it needs only FunASR, numpy and soundfile. emotion2vec+ names its
classes bilingually ("生气/angry"); 01 reads the English part, and `label_map` maps the rest (e.g. other:neutral).
Not run in CI: FunASR and the weights are not reachable offline (tested instead: the protocol, with
paraqa_utils/testing/external_annotator.py in its own process).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import soundfile as sf

RATE = 16000  # emotion2vec+ takes 16 kHz mono


def to_16k(audio: np.ndarray, sr: int) -> np.ndarray:
    if sr == RATE:
        return audio
    t = np.arange(int(len(audio) * RATE / sr)) * (sr / RATE)
    return np.interp(t, np.arange(len(audio)), audio).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emotion2vec/emotion2vec_plus_large")
    ap.add_argument("--hub", default="hf", help="hf (Hugging Face) or ms (ModelScope)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from funasr import AutoModel  # the isolated environment's

    model = AutoModel(model=args.model, hub=args.hub, device=args.device, disable_update=True)
    for line in sys.stdin:
        req = json.loads(line)
        cid = req["clip_id"]
        try:
            audio, sr = sf.read(req["audio_path"], dtype="float32", always_2d=True)
            audio = to_16k(audio.mean(axis=1), sr)
            labels, scores = [], []
            for start, end in req["windows"]:
                x = audio[int(start * RATE):int(end * RATE)]
                if len(x) < RATE // 10:
                    raise ValueError(f"window {start:.2f}-{end:.2f} s is shorter than 0.1 s")
                res = model.generate(x, granularity="utterance", extract_embedding=False)[0]
                best = int(np.argmax(res["scores"]))
                labels.append(res["labels"][best])
                scores.append({lab: round(float(s), 4) for lab, s in zip(res["labels"], res["scores"])})
            print(json.dumps({"clip_id": cid, "labels": labels, "scores": scores}), flush=True)
        except Exception as exc:  # one clip's failure is its own reply; the others go on
            print(json.dumps({"clip_id": cid, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
