"""The `hf:<checkpoint>` annotator: any transformers audio-classification model over windows, cached per clip."""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
from paraqa_utils.progress import tqdm

from paraqa_utils import runs
from paraqa_utils.audio import excerpt, load_audio
from paraqa_utils.annotate.cache import audio_tag, cache_key
from paraqa_utils.annotate.recognisers import HfAudioModel

_LOADED: dict[tuple, HfAudioModel] = {}


def load(spec: str, task: str, label_map: dict[str, str], device: str = "cpu") -> HfAudioModel:
    key = (spec, task, json.dumps(label_map, sort_keys=True), device)
    if key not in _LOADED:
        import os
        _LOADED[key] = HfAudioModel(spec, task, label_map, cpu_threads=os.cpu_count() or 1, device=device)
    return _LOADED[key]


def hf_predict(stage: runs.Stage, clips: Sequence[dict], prep: Any, spec: str, task: str,
               label_map: dict[str, str], order: Sequence[tuple[str, int]], device: str = "cpu") -> tuple[list, list]:
    """(labels, confidences) for the windows in `order`; each window is scored with its context span."""
    model = load(spec, task, label_map, device)
    stage.record_model(f"{task}:hf:{spec}", spec, labels=model.labels)

    cdir = stage.cache / "hf" / cache_key(spec, task, label_map)
    by_clip: dict[str, tuple[list, list]] = {}
    for c in tqdm([c for c in clips if prep.clips[c["clip_id"]]["status"] == "ok"], desc=f"hf {task}", leave=False):
        cid = c["clip_id"]
        f = cdir / f"{cid}-{audio_tag(c['audio_file'])}.json"
        if f.exists():
            by_clip[cid] = tuple(runs.read_json(f))
            continue
        audio = load_audio(c["audio_file"], model.sample_rate_hz)
        ex = [excerpt(audio, w.ctx_start_s, w.ctx_end_s, model.sample_rate_hz)
              for w in prep.clips[cid]["windows"]]
        # Checkpoints with convolutional front ends reject inputs shorter than their receptive field.
        ex = [np.pad(x, (0, max(0, model.sample_rate_hz // 10 - len(x)))) for x in ex]
        by_clip[cid] = model.predict(ex)
        runs.write_json(f, list(by_clip[cid]))
    labels = [by_clip[cid][0][k] for cid, k in order]
    confs = [by_clip[cid][1][k] for cid, k in order]
    return labels, confs
