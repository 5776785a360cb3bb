"""Progress off a terminal: stage bars report to a file, the runner prints stage, done/total, elapsed and ETA."""
import json
import time

from paraqa_utils import pipeline, progress
from paraqa_utils.stages import STAGES
from tests.conftest import make_notebook


def test_bars_report_done_total_and_elapsed(tmp_path, monkeypatch):
    f = tmp_path / "p.json"
    monkeypatch.setenv(progress.ENV, str(f))
    monkeypatch.setattr(progress, "WRITE_EVERY_S", 0.0)
    bar = progress.tqdm(total=8, desc="transcribing", unit="clip", disable=False)
    time.sleep(0.2)
    bar.update(3)
    rec = json.loads(f.read_text())
    assert 0.15 < rec["elapsed_s"] < 5  # seconds since the bar started, on tqdm's own clock
    assert (rec["desc"], rec["n"], rec["total"], rec["unit"]) == ("transcribing", 3, 8, "clip")
    list(progress.tqdm(range(4), desc="loop"))
    assert json.loads(f.read_text())["n"] == 4  # a closed bar leaves its final count


def test_no_file_no_writes(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    assert list(progress.tqdm(range(3), disable=True)) == [0, 1, 2]
    assert list(tmp_path.iterdir()) == []


def test_describe_gives_eta_from_the_current_rate():
    line = progress.describe("01_annotate", 95, {"desc": "asr", "n": 10, "total": 40, "elapsed_s": 20, "unit": "clip"})
    assert line == "[....] 01_annotate  elapsed 1m35s  asr: 10/40 clip (25 %, ETA 1m00s)"
    assert progress.describe("05_judge", 3, None) == "[....] 05_judge  elapsed 3s"
    assert "7 it" in progress.describe("x", 1, {"desc": "d", "n": 7, "total": None, "elapsed_s": 1, "unit": "it"})


def test_the_runner_prints_progress_lines_while_a_stage_runs(tmp_path, runs_root, monkeypatch, capsys):
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    body = ("import time\nfrom paraqa_utils import progress\n"
            "for _ in progress.tqdm(range(12), desc='working', unit='item'):\n    time.sleep(0.25)\n"
            "stage.finish()")
    for s in STAGES:
        make_notebook(nb_dir / f"{s}.ipynb", s, 'run_dir = ""', body if s == "00_corpus" else "stage.finish()")
    profile = tmp_path / "p.yaml"
    profile.write_text("description: progress\n")
    monkeypatch.setenv("PARAQA_PROGRESS_S", "0.5")
    assert pipeline.main(["--profile", str(profile), "--run-id", "p", "--only", "00_corpus",
                          "--notebooks-dir", str(nb_dir)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[....] 00_corpus")]
    assert lines, "no progress line while the stage ran"
    assert any("working: " in ln and "/12 item" in ln and "ETA" in ln for ln in lines), lines
    assert not (runs_root / "p" / ".progress.json").exists()
