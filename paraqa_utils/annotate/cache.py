"""Stage 01's per-clip cache naming: keys from settings, audio content tags, atomic array files."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from paraqa_utils import audio, runs

CACHE_VERSION = "1"  # bump when a cached computation changes meaning


def cache_key(*parts: Any) -> str:
    """A short, stable folder name for one combination of settings."""
    return runs.sha256_text(json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str))[:12]


def audio_tag(path: str | Path) -> str:
    """Content hash of a clip's audio, so a changed file never reuses stale cache entries."""
    return audio.content_hash(path, 12) if Path(path).exists() else "missing"


def save_npy(path: Path, arr: np.ndarray) -> None:
    """Atomic: a killed run leaves either the whole cache file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)
