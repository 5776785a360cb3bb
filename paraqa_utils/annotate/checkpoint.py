"""The `hf:<checkpoint>` annotator: any transformers audio-classification model over windows, cached per clip; a
checkpoint with its own code (joint emotion + V/A/D, as MERaLiON-SER-v1) only with trust_remote_code."""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
from paraqa_utils.progress import tqdm

from paraqa_utils import runs
from paraqa_utils.audio import excerpt, load_audio
from paraqa_utils.annotate import joint_ser
from paraqa_utils.annotate.cache import audio_tag, cache_key
from paraqa_utils.annotate.recognisers import HfAudioModel, RecogniserError

_LOADED: dict[tuple, HfAudioModel | joint_ser.JointSER] = {}


def load(spec: str, task: str, label_map: dict[str, str], device: str = "cpu",
         trust_remote_code: bool = False) -> HfAudioModel | joint_ser.JointSER:
    """The loaded model for (spec, task): one JointSER serves emotion and dimensional alike."""
    import os

    src = joint_ser.local_or_hub(spec)
    try:
        conf = joint_ser.config_dict(src)
    except RecogniserError:
        conf = {}  # unreadable: HfAudioModel says why it cannot load
    joint = joint_ser.ships_code(conf)
    if joint and not trust_remote_code:
        joint_ser.refuse_untrusted(spec, conf)
    if joint and task == "gender":
        raise RecogniserError(f"checkpoint '{spec}' ships its own code for emotion and valence/arousal/dominance; "
                              "01 reads no gender from it: give gender_backends another backend")
    key = (spec, "joint" if joint else task, json.dumps(label_map, sort_keys=True), device)
    if key not in _LOADED:
        threads = os.cpu_count() or 1
        _LOADED[key] = (joint_ser.JointSER(spec, src, conf, label_map, cpu_threads=threads, device=device) if joint
                        else HfAudioModel(spec, task, label_map, cpu_threads=threads, device=device))
    return _LOADED[key]


def hf_predict(stage: runs.Stage, clips: Sequence[dict], prep: Any, spec: str, task: str,
               label_map: dict[str, str], order: Sequence[tuple[str, int]], device: str = "cpu",
               trust_remote_code: bool = False) -> tuple[list, list]:
    """(labels, confidences) for the windows in `order`; each window is scored with its context span."""
    model = load(spec, task, label_map, device, trust_remote_code)
    if isinstance(model, joint_ser.JointSER):
        return _joint_predict(stage, clips, prep, model, task, label_map, order)
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


def _joint_predict(stage: runs.Stage, clips: Sequence[dict], prep: Any, model: joint_ser.JointSER, task: str,
                   label_map: dict[str, str], order: Sequence[tuple[str, int]]) -> tuple[list, list]:
    """Both tasks from one forward pass per window: the per-clip cache holds emotion and V/A/D together, so the
    second task listed reads what the first computed."""
    stage.record_model(f"{task}:hf:{model.spec}", model.spec, **model.provenance())
    cdir = stage.cache / "hf" / cache_key(model.spec, "joint", label_map)
    by_clip: dict[str, dict] = {}
    for c in tqdm([c for c in clips if prep.clips[c["clip_id"]]["status"] == "ok"], desc=f"hf {task} (joint)",
                  leave=False):
        cid = c["clip_id"]
        f = cdir / f"{cid}-{audio_tag(c['audio_file'])}.json"
        if f.exists():
            by_clip[cid] = runs.read_json(f)
            continue
        audio = load_audio(c["audio_file"], model.sample_rate_hz)
        ex = [excerpt(audio, w.ctx_start_s, w.ctx_end_s, model.sample_rate_hz) for w in prep.clips[cid]["windows"]]
        ex = [np.pad(x, (0, max(0, model.sample_rate_hz // 10 - len(x)))) for x in ex]
        by_clip[cid] = model.predict(ex)
        runs.write_json(f, by_clip[cid])
    if task == "dimensional":
        rows = [by_clip[cid]["dimensional"][k] for cid, k in order]
        if rows and all(r is None for r in rows):
            raise RecogniserError(f"checkpoint '{model.spec}' returned no `dims` output: it gives emotion only; "
                                  "give dimensional_backends another backend")
        return rows, [None] * len(rows)
    return [by_clip[cid]["emotion"][k] for cid, k in order], [by_clip[cid]["emotion_conf"][k] for cid, k in order]
