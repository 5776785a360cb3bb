"""Word-timed transcripts: the corpus reference aligned to speech, faster-whisper (packed), transformers Whisper."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from paraqa_utils import assets
from paraqa_utils.annotate.vad import overlap_s
from paraqa_utils.audio import SAMPLE_RATE_HZ

ASR_BACKENDS = ("reference", "faster-whisper", "transformers")
Word = dict[str, Any]  # {"w": str, "start_s": float, "end_s": float}


class AsrError(RuntimeError):
    """An ASR model that cannot be loaded; the message says what was tried and what to pass instead."""


# --- reference -----------------------------------------------------------------------------------------------
def reference_words(segments: Sequence[dict], regions: Sequence[tuple[float, float]],
                    duration_s: float) -> list[Word]:
    """Spread each corpus segment's words over the speech detected inside it, in proportion to their length.

    Only approximate times (no forced aligner is embedded), but every word lands inside real speech of its own
    segment, which is what window-level label inheritance needs.
    """
    words: list[Word] = []
    for seg in segments:
        tokens = (seg.get("text") or "").split()
        if not tokens:
            continue
        s0 = float(seg["start_s"]) if seg.get("start_s") is not None else 0.0
        s1 = float(seg["end_s"]) if seg.get("end_s") is not None else duration_s
        spans = [(max(a, s0), min(b, s1)) for a, b in regions if overlap_s(a, b, s0, s1) > 0] or [(s0, s1)]
        total = sum(b - a for a, b in spans)
        weights = np.array([len(t) + 1 for t in tokens], dtype=float)
        edges = np.concatenate([[0.0], np.cumsum(weights) / weights.sum() * total])
        for tok, e0, e1 in zip(tokens, edges[:-1], edges[1:]):
            words.append({"w": tok, "start_s": round(_speech_time(spans, e0), 3),
                          "end_s": round(_speech_time(spans, e1), 3)})
    return words


def _speech_time(spans: Sequence[tuple[float, float]], t: float) -> float:
    """Clip time reached after `t` seconds of speech, walking through `spans` in order."""
    for a, b in spans:
        if t <= b - a:
            return a + t
        t -= b - a
    return spans[-1][1]


# --- faster-whisper ------------------------------------------------------------------------------------------
def load_faster_whisper(spec: str = "", n_workers: int = 1, cpu_threads: int = 1,
                        device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """A faster-whisper model ('' = embedded Whisper base, or a CTranslate2 folder, or a size name) + provenance."""
    from faster_whisper import WhisperModel

    path = assets.resolve_model("whisper_ct2", spec)
    try:
        # int8 on CPU (the measured embedded setting); float16 on a GPU
        model = WhisperModel(path, device=device, compute_type="int8" if device == "cpu" else "float16",
                             cpu_threads=cpu_threads, num_workers=n_workers)
    except Exception as exc:
        raise AsrError(f"could not load faster-whisper model '{spec or 'embedded'}' ({path}): "
                       f"{type(exc).__name__}: {exc}. Pass '' for the embedded Whisper base, a local CTranslate2 "
                       "folder, or a model size (downloaded by faster-whisper where the hub is reachable).") from None
    info = {"id": "whisper-base-ct2 (embedded)" if spec.strip() in assets.EMBEDDED else spec, "path": path}
    if spec.strip() in assets.EMBEDDED:
        info["sha256"] = assets.WHISPER_BASE_CT2.sha256["model.bin"]
    return model, info


def plan_packs(durations_s: Sequence[float], pack_s: float, gap_s: float) -> list[list[int]]:
    """Group clips so each group, with silent gaps between, fits in `pack_s` seconds (first fit, longest first).

    Whisper always encodes 30 s; a 5 s clip alone wastes five sixths of that work. Packing several short clips
    into one window (separated by silence) makes ASR about five times cheaper here (measured in
    bench/bench_annotate.py). `pack_s <= 0` = one clip per group; a clip longer than `pack_s` is alone.
    """
    if pack_s <= 0:
        return [[i] for i in range(len(durations_s))]
    packs: list[list[int]] = []
    used: list[float] = []
    for i in sorted(range(len(durations_s)), key=lambda k: -durations_s[k]):
        d = durations_s[i]
        for j, u in enumerate(used):
            if u + gap_s + d <= pack_s:
                packs[j].append(i)
                used[j] = u + gap_s + d
                break
        else:
            packs.append([i])
            used.append(d)
    return packs


def transcribe_faster_whisper(model: Any, audios: Sequence[np.ndarray], language: str | None = "en",
                              beam_size: int = 1, gap_s: float = 1.0,
                              stats: dict[str, int] | None = None) -> list[list[Word]]:
    """Transcribe one pack of clips in a single call; each word goes back to the clip its midpoint falls in.

    A clip of a pack that got no words is transcribed again alone (measured: Whisper skipped a sentence that
    repeated its pack neighbour's, and transcribed it alone); `stats["asr_retried_alone"]` counts these calls.
    """
    out = _transcribe_pack(model, audios, language, beam_size, gap_s)
    if len(audios) > 1:
        for k, words in enumerate(out):
            if not words and len(audios[k]):
                out[k] = _transcribe_pack(model, [audios[k]], language, beam_size, gap_s)[0]
                if stats is not None:
                    stats["asr_retried_alone"] = stats.get("asr_retried_alone", 0) + 1
    return out


def _transcribe_pack(model: Any, audios: Sequence[np.ndarray], language: str | None, beam_size: int,
                     gap_s: float) -> list[list[Word]]:
    gap = np.zeros(int(gap_s * SAMPLE_RATE_HZ), dtype=np.float32)
    offsets, parts, t = [], [], 0.0
    for k, a in enumerate(audios):
        offsets.append((t, t + len(a) / SAMPLE_RATE_HZ))
        parts += [a] if k == len(audios) - 1 else [a, gap]
        t += len(a) / SAMPLE_RATE_HZ + gap_s
    segments, _ = model.transcribe(np.concatenate(parts), language=language or None, beam_size=beam_size,
                                   word_timestamps=True, condition_on_previous_text=False, vad_filter=False)
    out: list[list[Word]] = [[] for _ in audios]
    for seg in segments:
        for w in seg.words or []:
            text = w.word.strip()
            if not text:
                continue
            mid = (w.start + w.end) / 2
            # nearest clip by distance of the word's midpoint to the clip's span (0 inside it)
            k = min(range(len(offsets)), key=lambda j: max(offsets[j][0] - mid, mid - offsets[j][1], 0.0))
            a, b = offsets[k]
            out[k].append({"w": text, "start_s": round(min(max(w.start - a, 0.0), b - a), 3),
                           "end_s": round(min(max(w.end - a, 0.0), b - a), 3)})
    return out


# --- transformers --------------------------------------------------------------------------------------------
def load_transformers_asr(spec: str = "", cpu_threads: int = 1, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """A transformers ASR pipeline ('' = embedded Whisper base converted to transformers, a path, a hub id)."""
    import torch
    from transformers import pipeline

    path = assets.resolve_model("whisper", spec)
    torch.set_num_threads(max(1, cpu_threads))
    try:
        pipe = pipeline("automatic-speech-recognition", model=path, device=device)
    except Exception as exc:
        raise AsrError(f"could not load transformers ASR model '{spec or 'embedded'}' ({path}): "
                       f"{type(exc).__name__}: {exc}") from None
    return pipe, {"id": "whisper-base-hf (embedded)" if spec.strip() in assets.EMBEDDED else spec, "path": path}


def transcribe_transformers(pipe: Any, audio: np.ndarray, language: str | None = "en") -> list[Word]:
    """Word timestamps from the pipeline's cross-attention alignment (Whisper) or CTC offsets."""
    kwargs: dict[str, Any] = {"return_timestamps": "word"}
    if language and getattr(pipe, "type", "") == "seq2seq_whisper":
        kwargs["generate_kwargs"] = {"language": language, "task": "transcribe"}
    if len(audio) > 30 * SAMPLE_RATE_HZ:
        kwargs["chunk_length_s"] = 30
    out = pipe({"raw": audio, "sampling_rate": SAMPLE_RATE_HZ}, **kwargs)
    dur = len(audio) / SAMPLE_RATE_HZ
    words = []
    for ch in out.get("chunks") or []:
        text = ch["text"].strip()
        s, e = ch.get("timestamp") or (None, None)
        if not text or s is None:
            continue
        e = dur if e is None else e
        words.append({"w": text, "start_s": round(min(float(s), dur), 3), "end_s": round(min(float(e), dur), 3)})
    return words
