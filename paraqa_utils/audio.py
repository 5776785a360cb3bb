"""The one audio reader: resolve a manifest path, read mono float32 at 16 kHz, header facts and a content hash."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE_HZ = 16000  # Whisper, silero VAD and every emotion checkpoint we load work at 16 kHz
_BLOCK_FRAMES = 1 << 16  # frames per read: long recordings are streamed, never read whole into a bytes object


class AudioError(ValueError):
    """Audio that cannot be used (missing, unreadable, empty, non-finite); the message says which."""


def resolve_audio(run_dir: str | Path, audio_path: str | Path) -> Path:
    """A manifest's audio_path as a file: relative paths are run-local (00's contract), absolute ones a corpus."""
    p = Path(audio_path)
    return p if p.is_absolute() else Path(run_dir) / p


def info(path: str | Path) -> dict[str, Any]:
    """Header facts without decoding: frames, sample rate, channels, duration; AudioError when unreadable."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file missing: {path}")
    try:
        i = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types on anything it cannot parse
        raise AudioError(f"unreadable audio ({type(exc).__name__}: {str(exc)[:120]})") from None
    return {"frames": int(i.frames), "sample_rate_hz": int(i.samplerate), "channels": int(i.channels),
            "duration_s": i.frames / i.samplerate if i.samplerate else 0.0}


def n_samples(path: str | Path, sample_rate_hz: int = SAMPLE_RATE_HZ) -> int:
    """Length after resampling, from the header: ceil(frames * rate / sr), exactly what load_audio returns."""
    i = info(path)
    return -(-i["frames"] * sample_rate_hz // i["sample_rate_hz"])


def resample(audio: np.ndarray, sr: int, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Polyphase, anti-aliased resampling (scipy imports in ms, unlike librosa); a no-op at the target rate."""
    if int(sr) == int(sample_rate_hz):
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(int(sr), int(sample_rate_hz))
    return resample_poly(audio, sample_rate_hz // g, int(sr) // g).astype(np.float32)


def load_audio(path: str | Path, sample_rate_hz: int = SAMPLE_RATE_HZ, check: bool = True,
               clip: bool = True) -> np.ndarray:
    """Mono float32 at `sample_rate_hz`, n_samples(path) long; AudioError for anything untrustworthy.

    Channels are averaged, blocks streamed; `check` refuses empty and non-finite audio; `clip` keeps samples in
    [-1, 1) (off for TTS pieces, whose resampling overshoot the clip's own soft limiter shapes later).
    """
    import soundfile as sf

    i = info(path)
    try:
        with sf.SoundFile(str(path)) as f:
            blocks = [b.mean(axis=1) for b in f.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True)]
    except Exception as exc:
        raise AudioError(f"unreadable audio ({type(exc).__name__}: {str(exc)[:120]})") from None
    audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if check and audio.size == 0:
        raise AudioError("audio has no samples")
    if check and not np.isfinite(audio).all():
        raise AudioError("audio contains NaN or infinite samples")
    audio = resample(audio, i["sample_rate_hz"], sample_rate_hz)
    n = -(-i["frames"] * sample_rate_hz // i["sample_rate_hz"]) if i["sample_rate_hz"] else 0
    audio = np.pad(audio, (0, max(0, n - len(audio))))[:n]
    # opensmile converts to int16 by multiplying: values at or above 1.0 would wrap around.
    return np.clip(audio, -1.0, 32767 / 32768).astype(np.float32) if clip else audio.astype(np.float32)


def content_hash(path: str | Path, n_hex: int = 24) -> str:
    """sha256 of the file's bytes, read in blocks: cache keys that survive renames and refuse edited audio."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:n_hex]


def excerpt(audio: np.ndarray, start_s: float, end_s: float, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """The samples between two times (clipped to the clip)."""
    a = max(0, int(round(start_s * sample_rate_hz)))
    b = min(len(audio), int(round(end_s * sample_rate_hz)))
    return audio[a:b]


def rms_dbfs(audio: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20 * np.log10(rms) if rms > 0 else float("-inf")
