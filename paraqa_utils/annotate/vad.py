"""Voice activity (silero VAD, embedded ONNX) and fixed-length windows with context (paper §1)."""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from paraqa_utils.audio import SAMPLE_RATE_HZ


@dataclass(frozen=True)
class Window:
    """One annotation window: the labelled span plus the wider span its features are computed on."""
    start_s: float
    end_s: float
    ctx_start_s: float
    ctx_end_s: float
    region: int  # index of the voice-activity region it belongs to

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


_VAD_LOCAL = threading.local()


def _vad_model(onnx_path: str):
    """One silero ONNX session per thread: the wrapper keeps recurrent state, so threads must not share it."""
    cached = getattr(_VAD_LOCAL, "models", {})
    if onnx_path not in cached:
        import torch
        n_threads = torch.get_num_threads()
        from silero_vad.utils_vad import OnnxWrapper  # importing silero_vad sets torch to 1 thread ...
        torch.set_num_threads(n_threads)  # ... which would silently slow every later torch model down
        cached[onnx_path] = OnnxWrapper(onnx_path, force_onnx_cpu=True)
        _VAD_LOCAL.models = cached
    return cached[onnx_path]


def speech_regions(audio: np.ndarray, onnx_path: str | Path, threshold: float = 0.5,
                   min_speech_ms: int = 250, min_silence_ms: int = 300, pad_ms: int = 30,
                   sample_rate_hz: int = SAMPLE_RATE_HZ) -> list[tuple[float, float]]:
    """Voice-activity regions (start_s, end_s) from silero VAD's own `get_speech_timestamps`."""
    import torch
    from silero_vad.utils_vad import get_speech_timestamps

    model = _vad_model(str(onnx_path))
    stamps = get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(audio)), model, threshold=threshold, sampling_rate=sample_rate_hz,
        min_speech_duration_ms=min_speech_ms, min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms)
    # Sample indices, not get_speech_timestamps' rounded seconds: times stay exact to the sample.
    return [(s["start"] / sample_rate_hz, s["end"] / sample_rate_hz) for s in stamps]


def make_windows(regions: list[tuple[float, float]], duration_s: float, window_s: float = 2.0,
                 context_s: float = 1.0) -> list[Window]:
    """Cut each region into windows of about `window_s`, each seeing `context_s` more audio on both sides.

    The paper labels 2 s windows with 1 s of context each side. We split a region into
    round(length / window_s) equal parts (at least one), so no window is a sliver and none is cut mid-way;
    a region shorter than `window_s` is one window.
    """
    if window_s <= 0 or context_s < 0:
        raise ValueError(f"window_s must be > 0 and context_s >= 0, got {window_s}, {context_s}")
    out: list[Window] = []
    for i, (start, end) in enumerate(regions):
        start, end = max(0.0, start), min(duration_s, end)
        if end <= start:
            continue
        n = max(1, int(round((end - start) / window_s)))
        step = (end - start) / n
        for k in range(n):
            ws, we = start + k * step, start + (k + 1) * step if k < n - 1 else end
            out.append(Window(round(ws, 3), round(we, 3), round(max(0.0, ws - context_s), 3),
                              round(min(duration_s, we + context_s), 3), i))
    return out


def overlap_s(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    """Length of the intersection of two spans (0 when they do not meet)."""
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))


def best_overlap(start_s: float, end_s: float, spans: list[dict]) -> int | None:
    """Index of the span (dict with start_s/end_s) that overlaps [start_s, end_s] most; None if none does."""
    best, best_ov = None, 0.0
    for i, s in enumerate(spans):
        if s.get("start_s") is None or s.get("end_s") is None:
            continue
        ov = overlap_s(start_s, end_s, float(s["start_s"]), float(s["end_s"]))
        if ov > best_ov:
            best, best_ov = i, ov
    return best


