"""Per-window acoustic features: eGeMAPS descriptors (openSMILE) and mean-pooled Whisper-encoder states."""
from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from paraqa_utils.annotate.vad import SAMPLE_RATE_HZ, Window

FEATURE_KINDS = ("egemaps", "whisper")
LLD_HOP_S = 0.01       # openSMILE eGeMAPS low-level descriptors come every 10 ms
WHISPER_HOP_S = 0.02   # one Whisper encoder frame per 20 ms (1500 frames per 30 s)
WHISPER_CHUNK_S = 30.0
_SMILE_LOCAL = threading.local()


def parse_kinds(spec: str) -> tuple[str, ...]:
    """'egemaps+whisper' -> ('egemaps', 'whisper'); unknown names are an error naming the allowed ones."""
    kinds = tuple(k.strip() for k in spec.replace(",", "+").split("+") if k.strip())
    bad = [k for k in kinds if k not in FEATURE_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown acoustic feature kind(s) {bad or [spec]}; use {' | '.join(FEATURE_KINDS)} "
                         "or several joined with '+'")
    return kinds


def _smile():
    """One openSMILE extractor per thread (each call builds its own SMILE instance; the object is cheap)."""
    if not hasattr(_SMILE_LOCAL, "smile"):
        import opensmile
        _SMILE_LOCAL.smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                             feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    return _SMILE_LOCAL.smile


def egemaps_llds(audio: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> tuple[np.ndarray, list[str]]:
    """eGeMAPS v02 low-level descriptors for a whole clip: (n_frames, 25) at 10 ms, and their names."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Segment too short" is handled below by the frame count
        df = _smile().process_signal(audio, sample_rate_hz)
    return df.to_numpy(dtype=np.float32), [str(c) for c in df.columns]


def egemaps_window_features(llds: np.ndarray, names: Sequence[str], windows: Sequence[Window]) -> np.ndarray:
    """Summarise the descriptors over each window's context span (computed once per clip, then sliced).

    Running openSMILE's own functionals once per window costs ~0.3 s each (one SMILE instance per call);
    slicing one pass of descriptors is ~50x cheaper and keeps what matters for emotion: level and spread of
    every descriptor, F0 and loudness percentiles, voicing share and a speaking-rate proxy.
    """
    names = list(names)
    f0 = names.index("F0semitoneFrom27.5Hz_sma3nz")
    loud = names.index("Loudness_sma3")
    voiced_only = [i for i, n in enumerate(names) if n.endswith("nz")]
    out = []
    for w in windows:
        a = int(w.ctx_start_s / LLD_HOP_S)
        b = max(a + 1, int(np.ceil(w.ctx_end_s / LLD_HOP_S)))
        x = llds[a:b]
        if len(x) == 0:
            out.append(np.zeros(len(names) * 2 + 11, dtype=np.float32))
            continue
        voiced = x[:, f0] > 0
        mean, std = x.mean(axis=0), x.std(axis=0)
        if voiced.any():  # the *nz descriptors are 0 in unvoiced frames: summarise voiced frames only
            xv = x[voiced]
            mean[voiced_only], std[voiced_only] = xv[:, voiced_only].mean(axis=0), xv[:, voiced_only].std(axis=0)
            f0p = np.percentile(xv[:, f0], [20, 50, 80])
        else:
            mean[voiced_only], std[voiced_only], f0p = 0.0, 0.0, np.zeros(3)
        lp = np.percentile(x[:, loud], [20, 50, 80])
        lx = x[:, loud]
        peaks = np.sum((lx[1:-1] > lx[:-2]) & (lx[1:-1] >= lx[2:]) & (lx[1:-1] > lp[1])) if len(lx) > 2 else 0
        dur = len(x) * LLD_HOP_S
        extra = [*f0p, f0p[2] - f0p[0], *lp, lp[2] - lp[0], voiced.mean(), peaks / dur, dur]
        out.append(np.concatenate([mean, std, np.asarray(extra, dtype=np.float32)]))
    return np.nan_to_num(np.vstack(out).astype(np.float32)) if out else np.zeros((0, len(names) * 2 + 11), np.float32)


def egemaps_feature_names(lld_names: Sequence[str]) -> list[str]:
    return ([f"{n}_mean" for n in lld_names] + [f"{n}_std" for n in lld_names]
            + ["f0_p20", "f0_p50", "f0_p80", "f0_range", "loud_p20", "loud_p50", "loud_p80", "loud_range",
               "voiced_share", "loudness_peaks_per_s", "span_s"])


def whisper_states(model: Any, audio: np.ndarray) -> np.ndarray:
    """Encoder states (n_frames, d) of a faster-whisper `WhisperModel` for a clip, 30 s chunk by chunk.

    Whisper's encoder only knows 30 s inputs, so each chunk is padded to 30 s and only the frames that cover
    real audio are kept.
    """
    from faster_whisper.audio import pad_or_trim

    chunk = int(WHISPER_CHUNK_S * SAMPLE_RATE_HZ)
    states = []
    for a in range(0, max(1, len(audio)), chunk):
        piece = audio[a:a + chunk]
        mel = pad_or_trim(model.feature_extractor(piece))
        enc = np.asarray(model.encode(mel))[0]  # (1500, d)
        n = min(len(enc), int(np.ceil(len(piece) / SAMPLE_RATE_HZ / WHISPER_HOP_S)))
        states.append(enc[:max(1, n)])
    return np.vstack(states).astype(np.float32)


def whisper_window_features(states: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """Mean-pool the encoder frames inside each window's context span."""
    out = []
    for w in windows:
        a = min(len(states) - 1, int(w.ctx_start_s / WHISPER_HOP_S))
        b = max(a + 1, int(np.ceil(w.ctx_end_s / WHISPER_HOP_S)))
        out.append(states[a:b].mean(axis=0))
    return np.vstack(out).astype(np.float32) if out else np.zeros((0, states.shape[1]), np.float32)


def clip_features(kinds: Sequence[str], audio: np.ndarray, windows: Sequence[Window],
                  whisper_model: Any = None) -> dict[str, np.ndarray]:
    """All requested feature kinds for one clip's windows: {kind: (n_windows, dim)}."""
    out: dict[str, np.ndarray] = {}
    if "egemaps" in kinds:
        llds, names = egemaps_llds(audio)
        out["egemaps"] = egemaps_window_features(llds, names, windows)
    if "whisper" in kinds:
        if whisper_model is None:
            raise ValueError("whisper features need a faster-whisper WhisperModel")
        out["whisper"] = whisper_window_features(whisper_states(whisper_model, audio), windows)
    return out
