"""python -m paraqa_utils.corpus manifest: a label-free manifest of a folder of audio, read back by 00's loader."""
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from paraqa_utils.corpus import loaders as L
from paraqa_utils.corpus.__main__ import main


def tone(path, seconds=1.0, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, 0.1 * np.sin(2 * np.pi * 220 * t), sr)


def test_a_folder_of_audio_becomes_a_manifest_the_loader_takes_without_labels(tmp_path, capsys):
    audio = tmp_path / "tv"
    for rel in ("ep1/a.wav", "ep1/b.flac", "ep2/a.wav"):
        tone(audio / rel)
    (audio / "ep1" / "notes.txt").write_text("not audio")
    assert main(["manifest", "--audio-dir", str(audio), "--out", str(tmp_path / "tv" / "manifest.csv")]) == 0
    table = pd.read_csv(tmp_path / "tv" / "manifest.csv")
    assert list(table.columns) == ["clip_id", "audio_path"]
    assert sorted(table["clip_id"]) == ["ep1_a", "ep1_b", "ep2_a"]  # same stem in two folders: distinct ids
    assert all(not p.startswith("/") for p in table["audio_path"])  # under the manifest's folder: relative
    items, rejects = L.load_manifest(tmp_path / "tv" / "manifest.csv")
    assert rejects == [] and len(items) == 3
    assert all(s["emotion"] is None and s["gender"] is None for i in items for s in i["segments"])
    assert all(i["path"].is_file() for i in items)
    assert "3 clips" in capsys.readouterr().out


def test_a_manifest_elsewhere_keeps_absolute_paths(tmp_path):
    tone(tmp_path / "audio" / "x.wav")
    assert main(["manifest", "--audio-dir", str(tmp_path / "audio"), "--out", str(tmp_path / "m" / "m.csv")]) == 0
    path = pd.read_csv(tmp_path / "m" / "m.csv")["audio_path"][0]
    assert path == str((tmp_path / "audio" / "x.wav").resolve())


@pytest.mark.parametrize("case", ["missing", "empty", "same_stem"])
def test_bad_folders_are_refused_with_the_reason(tmp_path, capsys, case):
    folder = tmp_path / "audio"
    if case != "missing":
        folder.mkdir()
    if case == "same_stem":
        tone(folder / "a.wav")
        tone(folder / "a.flac")
    assert main(["manifest", "--audio-dir", str(folder), "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    expected = {"missing": "is not a folder", "empty": "no audio files", "same_stem": "same clip_id"}[case]
    assert expected in err and not (tmp_path / "m.csv").exists()
