"""Stage 01's heavy steps: per-clip analysis, ASR and window labels, run in parallel and cached per clip."""
from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from paraqa_utils.progress import tqdm

from paraqa_utils import assets, runs, text
from paraqa_utils.audio import SAMPLE_RATE_HZ, AudioError, load_audio, rms_dbfs
from paraqa_utils.annotate import align, asr, features, recognisers, vad
from paraqa_utils.annotate.cache import audio_tag, cache_key, save_npy
from paraqa_utils.annotate import external
from paraqa_utils.annotate.acoustic_fit import feature_matrix, needs_labels, train_recogniser
from paraqa_utils.annotate.checkpoint import hf_predict
from paraqa_utils.text import DIMENSIONS

_MODELS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


@dataclass
class Prepared:
    """Per-clip analysis: status/reason, duration, speech regions, windows and features per kind."""
    clips: dict[str, dict[str, Any]]
    compute_s: dict[str, float] = field(default_factory=dict)  # compute seconds per component (cache misses)
    audio_s: dict[str, float] = field(default_factory=dict)    # audio seconds those seconds were spent on
    n_cached: int = 0
    wall_s: float = 0.0


def whisper_model(spec: str, n_workers: int, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """One shared faster-whisper model per spec (its num_workers lets our threads call it concurrently)."""
    with _LOCK:
        key = ("fw", spec, n_workers, device)
        if key not in _MODELS:
            _MODELS[key] = asr.load_faster_whisper(spec, n_workers=n_workers, device=device,
                                                   cpu_threads=max(1, (os.cpu_count() or 2) // n_workers))
        return _MODELS[key]


def _failed(reason: str) -> dict[str, Any]:
    return {"status": "reject", "reason": reason, "duration_s": None, "regions": [], "windows": [], "feats": {}}


def feature_kinds(cfg: Any) -> list[str]:
    """Every feature kind some acoustic backend needs."""
    kinds: list[str] = []
    for b in [b for bs in cfg.backends.values() for b in bs if b.startswith("acoustic")]:
        spec = (recognisers.AcousticRecogniser.load(b[len("acoustic@"):]).features if b.startswith("acoustic@")
                else b.split(":", 1)[1] if ":" in b else cfg.acoustic_features)
        kinds += features.parse_kinds(spec)
    return sorted(set(kinds))


def _parallel(fn: Callable, items: Sequence, n_workers: int, desc: str) -> list:
    with ThreadPoolExecutor(max_workers=n_workers) as ex:
        return list(tqdm(ex.map(fn, items), total=len(items), desc=desc, leave=False))


def prepare(stage: runs.Stage, clips: Sequence[dict], cfg: Any) -> Prepared:
    """Check audio, find speech (silero VAD), cut windows, compute features; each clip cached on its own."""
    t0 = time.perf_counter()
    kinds = feature_kinds(cfg)
    onnx = str(assets.silero_vad_onnx())
    stage.record_model("voice_activity", "silero-vad (embedded onnx)",
                       sha256=assets.SILERO_VAD.sha256["silero_vad.onnx"])
    seg_params = [cfg.min_rms_dbfs, cfg.vad_threshold, cfg.vad_min_speech_ms, cfg.vad_min_silence_ms, cfg.window_s,
                  cfg.context_s]
    seg_dir = stage.cache / "segments" / cache_key(seg_params)
    fw_spec = cfg.asr_model if cfg.asr_backend == "faster-whisper" else ""
    feat_dirs = {k: stage.cache / "features" / cache_key(seg_params, k, fw_spec if k == "whisper" else "") for k in kinds}
    prep = Prepared({})
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    if "whisper" in kinds:
        whisper_model(fw_spec, cfg.n_workers, cfg.device)

    def work(clip: dict) -> tuple[str, dict, bool]:
        cid, tag, audio, hit = clip["clip_id"], audio_tag(clip["audio_file"]), None, True
        seg_file = seg_dir / f"{cid}-{tag}.json"
        if seg_file.exists():
            entry = runs.read_json(seg_file)
        else:
            hit = False
            t = time.perf_counter()
            try:
                audio = load_audio(clip["audio_file"])
                dur = len(audio) / SAMPLE_RATE_HZ
                level = rms_dbfs(audio)
                regions = [] if level < cfg.min_rms_dbfs else vad.speech_regions(
                    audio, onnx, cfg.vad_threshold, cfg.vad_min_speech_ms, cfg.vad_min_silence_ms)
                reason = (f"silent audio ({level:.0f} dBFS < {cfg.min_rms_dbfs:g})" if level < cfg.min_rms_dbfs
                          else None if regions else "no speech found by voice activity detection")
                entry = {"status": "reject" if reason else "ok", "reason": reason, "duration_s": round(dur, 3),
                         "regions": regions, "windows": [w.as_dict() for w in vad.make_windows(
                             regions, dur, cfg.window_s, cfg.context_s)] if not reason else []}
                with _LOCK:
                    acc["vad"][0] += time.perf_counter() - t
                    acc["vad"][1] += dur
            except AudioError as exc:
                entry = {"status": "reject", "reason": str(exc), "duration_s": None, "regions": [], "windows": []}
            except Exception as exc:  # a clip is the unit of failure: record it, do not cache it (a rerun retries)
                return cid, _failed(f"analysis failed ({type(exc).__name__}: {exc})"), False
            runs.write_json(seg_file, entry)
        entry["windows"] = [vad.Window(**w) for w in entry["windows"]]
        entry["feats"] = {}
        for kind in kinds if entry["status"] == "ok" else []:
            f = feat_dirs[kind] / f"{cid}-{tag}.npy"
            if f.exists():
                entry["feats"][kind] = np.load(f)
                continue
            hit = False
            t = time.perf_counter()
            try:
                audio = load_audio(clip["audio_file"]) if audio is None else audio
                model = whisper_model(fw_spec, cfg.n_workers, cfg.device)[0] if kind == "whisper" else None
                entry["feats"][kind] = features.clip_features([kind], audio, entry["windows"], model)[kind]
            except Exception as exc:
                return cid, _failed(f"{kind} features failed ({type(exc).__name__}: {exc})"), False
            save_npy(f, entry["feats"][kind])
            with _LOCK:
                acc[f"features:{kind}"][0] += time.perf_counter() - t
                acc[f"features:{kind}"][1] += entry["duration_s"]
        return cid, entry, hit

    for cid, entry, hit in _parallel(work, clips, cfg.n_workers, "segments + features"):
        prep.clips[cid] = entry
        prep.n_cached += hit
    failed = [e["reason"] for e in prep.clips.values() if " failed (" in (e["reason"] or "")]
    if clips and len(failed) == len(clips):  # every clip failing the same way is a bug or a setup problem
        raise RuntimeError(f"every clip failed; first: {failed[0]}")
    prep.compute_s = {k: round(v[0], 3) for k, v in acc.items()}
    prep.audio_s = {k: round(v[1], 3) for k, v in acc.items()}
    prep.wall_s = round(time.perf_counter() - t0, 3)
    return prep


def transcribe(stage: runs.Stage, clips: Sequence[dict], prep: Prepared, cfg: Any) -> tuple[dict, dict]:
    """Words with times per clip ({clip_id: [{w, start_s, end_s}]}) and ASR figures (WER, compute, cache)."""
    t0 = time.perf_counter()
    ok = [c for c in clips if prep.clips[c["clip_id"]]["status"] == "ok"]
    words: dict[str, list] = {}
    info: dict[str, Any] = {"backend": cfg.asr_backend, "n_cached": 0, "compute_s": 0.0, "audio_s": 0.0}
    if cfg.asr_backend == "reference":
        for c in ok:
            p = prep.clips[c["clip_id"]]
            words[c["clip_id"]] = asr.reference_words(c.get("segments") or [], p["regions"], p["duration_s"])
        info["model"] = {"id": "corpus reference transcript"}
    else:
        if cfg.asr_backend == "faster-whisper":
            model, info["model"] = whisper_model(cfg.asr_model, cfg.n_workers, cfg.device)
        else:
            model, info["model"] = _cached(("tf-asr", cfg.asr_model, cfg.device), lambda: asr.load_transformers_asr(
                cfg.asr_model, os.cpu_count() or 1, cfg.device))
        stage.record_model("asr", info["model"]["id"], backend=cfg.asr_backend,
                           **{k: v for k, v in info["model"].items() if k == "sha256"})
        cdir = stage.cache / "asr" / cache_key(cfg.asr_backend, info["model"]["id"], cfg.asr_language, cfg.asr_beam_size,
                                          cfg.asr_pack_s, cfg.asr_gap_s)
        files = {c["clip_id"]: cdir / f"{c['clip_id']}-{audio_tag(c['audio_file'])}.json" for c in ok}
        todo = []
        for c in ok:
            if files[c["clip_id"]].exists():
                words[c["clip_id"]] = runs.read_json(files[c["clip_id"]])
                info["n_cached"] += 1
            else:
                todo.append(c)
        durs = [prep.clips[c["clip_id"]]["duration_s"] for c in todo]
        pack_s = cfg.asr_pack_s if cfg.asr_backend == "faster-whisper" else 0.0
        packs = [[todo[i] for i in p] for p in asr.plan_packs(durs, pack_s, cfg.asr_gap_s)]

        info["errors"], retried = {}, {}  # retried: pack members that got no words, transcribed again alone

        def work(pack: list[dict]) -> float:
            t = time.perf_counter()
            try:
                audios = [load_audio(c["audio_file"]) for c in pack]
                if cfg.asr_backend == "faster-whisper":
                    out = asr.transcribe_faster_whisper(model, audios, cfg.asr_language, cfg.asr_beam_size,
                                                        cfg.asr_gap_s, retried)
                else:
                    out = [asr.transcribe_transformers(model, a, cfg.asr_language) for a in audios]
            except Exception as exc:  # recorded per clip (a rerun retries: nothing is cached)
                for c in pack:
                    info["errors"][c["clip_id"]] = f"asr failed ({type(exc).__name__}: {exc})"
                    words[c["clip_id"]] = []
                return time.perf_counter() - t
            for c, ws in zip(pack, out):
                runs.write_json(files[c["clip_id"]], ws)
                words[c["clip_id"]] = ws
            return time.perf_counter() - t

        n_par = cfg.n_workers if cfg.asr_backend == "faster-whisper" else 1  # HF pipelines are not thread-safe
        info["compute_s"] = round(sum(_parallel(work, packs, n_par, "transcripts")), 3)
        info["audio_s"] = round(sum(durs), 3)
        info["n_packs"] = len(packs)
        info["n_retried_alone"] = retried.get("asr_retried_alone", 0)
        if cfg.asr_align_model:  # the ASR words re-timed by CTC forced alignment (annotate.align), cached per clip
            aligner = _cached(("ctc", cfg.asr_align_model, cfg.device), lambda: align.CtcAligner(cfg.asr_align_model, cfg.device))
            stage.record_model("aligner", cfg.asr_align_model)
            aligned, info["align_errors"] = align.align_clips(aligner, ok, words, stage.cache / "align" /
                                                              cache_key(cfg.asr_align_model, cdir.name))
            words.update(aligned)
        refs = {c["clip_id"]: " ".join(s.get("text") or "" for s in c.get("segments") or []).strip() for c in ok}
        with_ref = [c for c in ok if refs[c["clip_id"]]]
        hyp = {cid: " ".join(w["w"] for w in words[cid]) for cid in refs}
        info["wer"] = text.wer([refs[c["clip_id"]] for c in with_ref], [hyp[c["clip_id"]] for c in with_ref])
        test = [c for c in with_ref if c.get("split") == "test"]
        info["wer_test"] = text.wer([refs[c["clip_id"]] for c in test], [hyp[c["clip_id"]] for c in test])
    info["wall_s"] = round(time.perf_counter() - t0, 3)
    return words, info


def _cached(key: tuple, make: Callable) -> Any:
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = make()
        return _MODELS[key]


def ground_truth(clips: Sequence[dict], prep: Prepared, label_map: dict[str, str]) -> tuple[dict, list[dict]]:
    """Global window index {(clip_id, k): i} and each window's corpus labels (from its most-overlapping segment)."""
    index, gt = {}, []
    for c in clips:
        p = prep.clips[c["clip_id"]]
        for k, w in enumerate(p["windows"] if p["status"] == "ok" else []):
            segs = c.get("segments") or []
            j = vad.best_overlap(w.start_s, w.end_s, segs)
            s = segs[j] if j is not None else {}
            row = {"split": c.get("split"), "emotion": s.get("emotion"), "gender": s.get("gender"),
                   "dimensional": None if any(s.get(d) is None for d in DIMENSIONS) else
                   [float(s[d]) for d in DIMENSIONS]}
            for task in ("emotion", "gender"):
                if row[task] is not None:
                    row[task] = recognisers.map_labels([row[task]], task, label_map, source="corpus labels")[0]
            index[(c["clip_id"], k)] = len(gt)
            gt.append(row)
    return index, gt


def label_windows(stage: runs.Stage, clips: Sequence[dict], prep: Prepared, cfg: Any) -> dict[str, Any]:
    """Every backend's labels for every window, plus the final (voted / averaged) label per task."""

    t0 = time.perf_counter()
    label_map = recognisers.parse_label_map(cfg.label_map)
    index, gt = ground_truth(clips, prep, label_map)
    out: dict[str, Any] = {"index": index, "gt": gt, "recognisers": {}, "compute_s": {}, "annotator_failures": {}}
    needs_labels(cfg, gt)
    order = sorted(index, key=index.get)
    trained: dict[str, recognisers.AcousticRecogniser] = {}
    for task in ("emotion", "gender", "dimensional"):
        members = {}
        for b in cfg.backends[task]:
            t = time.perf_counter()
            if b == "labels":
                members[b] = ([row[task] for row in gt], [1.0 if row[task] is not None else None for row in gt])
            elif b.startswith("acoustic@"):  # a recogniser trained on another, labelled corpus: needs no labels here
                rec = recognisers.AcousticRecogniser.load(b[len("acoustic@"):])
                members[b] = rec.predict(task, feature_matrix(prep, order, rec.features))
                stage.record_model(f"{task}:{b}", b[len("acoustic@"):], trained=rec.info,
                                   sha256=runs.sha256_file(b[len("acoustic@"):]))
            elif b.startswith("acoustic"):
                spec = b.split(":", 1)[1] if ":" in b else cfg.acoustic_features
                if spec not in trained:
                    trained[spec] = train_recogniser(stage, prep, gt, order, spec, cfg.seed)
                    out["recognisers"][spec] = trained[spec].info
                labs, confs = trained[spec].predict(task, feature_matrix(prep, order, spec))
                for i, lab, conf in zip(trained[spec].train_idx, *trained[spec].oof[task]):
                    labs[i], confs[i] = lab, conf  # train windows: out-of-fold predictions
                members[b] = (labs, confs)
            elif b.startswith("ext:"):
                name = b.split(":", 1)[1]
                members[b] = external.predict(stage, clips, prep, name, cfg.external_annotators[name], task, label_map,
                                              order, out["annotator_failures"].setdefault(f"{task}:{b}", {}))
            else:
                members[b] = hf_predict(stage, clips, prep, b.split(":", 1)[1], task, label_map, order, cfg.device,
                                        cfg.trust_remote_code)
            out["compute_s"][f"{task}:{b}"] = round(time.perf_counter() - t, 3)
        single = len(members) == 1
        final = (recognisers.mean_dimensions([m[0] for m in members.values()]), [None] * len(gt)) \
            if task == "dimensional" else recognisers.vote(list(members.values()))
        name = next(iter(members)) if single else f"ensemble({'+'.join(members)})"
        out[task] = {"members": members, "final": final, "name": name}
    out["backends"] = {"asr": cfg.asr_backend if cfg.asr_backend == "reference" else
                       f"{cfg.asr_backend}:{cfg.asr_model or 'embedded'}",
                       "emotion": out["emotion"]["name"], "gender": out["gender"]["name"],
                       "vad": out["dimensional"]["name"], "voice_activity": "silero-vad (embedded onnx)"}
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    return out
