"""The runner on seven tiny notebooks with the real kernel: params, failure, resume, kill, --only."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from paraqa_utils import pipeline, runs
from paraqa_utils.stages import REPO_ROOT, STAGES
from tests.conftest import make_notebook


def cli(*args, nb_dir):
    return pipeline.main([*args, "--notebooks-dir", str(nb_dir)])


def log_lines(nb_dir):
    p = nb_dir / "log.txt"
    return p.read_text().split() if p.exists() else []


def test_full_run_writes_run_directory(runs_root, tiny_notebooks, tiny_profile):
    assert cli("--profile", str(tiny_profile), "--run-id", "r1", "--set", "05_judge.label=j",
               nb_dir=tiny_notebooks) == 0
    run = runs_root / "r1"
    man = json.loads((run / "manifest.json").read_text())
    assert [man["stages"][s]["status"] for s in STAGES] == ["done"] * 7
    assert man["git"]["sha7"] and man["packages"]["papermill"] and man["host"]["cpu_count"] >= 1
    for s in STAGES:
        assert (run / "notebooks" / f"{s}.ipynb").exists()
        flat = yaml.safe_load((run / "params" / f"{s}.yaml").read_text())
        assert flat["run_dir"] == str(run) and flat["scale"] == 2
        assert man["stages"][s]["overhead_s"] >= 0
    assert yaml.safe_load((run / "params/01_annotate.yaml").read_text())["label"] == "b"
    assert yaml.safe_load((run / "params/05_judge.yaml").read_text())["label"] == "j"
    # every artifact in the manifest matches the file on disk
    for rel, digest in man["artifacts"].items():
        assert runs.sha256_file(run / rel) == digest
    assert (run / "06_analysis/out.txt").read_text().count("\n") == 7  # each stage read its predecessor
    assert json.loads((run / "00_corpus/metrics.json").read_text()) == {"scale": 2, "n_lines": 1}


def test_failed_stage_is_recorded_and_resume_finishes(runs_root, tiny_notebooks, tiny_profile, capsys):
    (tiny_notebooks / "fail_03_explicit_merge").touch()
    assert cli("--profile", str(tiny_profile), "--run-id", "r2", nb_dir=tiny_notebooks) == 1
    err = capsys.readouterr().err
    assert "boom in 03_explicit_merge" in err and "--resume r2" in err
    run = runs_root / "r2"
    man = json.loads((run / "manifest.json").read_text())
    assert man["stages"]["03_explicit_merge"]["status"] == "failed"
    assert "04_finetune" not in man["stages"]
    executed = json.loads((run / "notebooks/03_explicit_merge.ipynb").read_text())
    assert "boom in 03_explicit_merge" in json.dumps(executed)  # the executed notebook keeps the error
    (tiny_notebooks / "fail_03_explicit_merge").unlink()
    assert cli("--resume", "r2", nb_dir=tiny_notebooks) == 0
    assert log_lines(tiny_notebooks) == list(STAGES)  # 00..02 were not redone
    man = json.loads((run / "manifest.json").read_text())
    assert man["stages"]["03_explicit_merge"]["attempts"] == 2
    assert all(man["stages"][s]["status"] == "done" for s in STAGES)


def test_killed_run_resumes_without_redoing(runs_root, tiny_notebooks, tiny_profile):
    (tiny_notebooks / "sleep_02_synthesize").write_text("60")
    env = {**os.environ, "PARAQA_RUNS": str(runs_root)}
    cmd = [sys.executable, "-m", "paraqa_utils.pipeline", "--profile", str(tiny_profile), "--run-id", "r3",
           "--notebooks-dir", str(tiny_notebooks)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = runs_root / "r3" / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if manifest.exists() and json.loads(manifest.read_text())["stages"].get("02_synthesize", {}) \
                .get("status") == "running" and (runs_root / "r3/02_synthesize/stage.json").exists():
            break
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("runner never reached 02_synthesize")
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: runner and kernel, as an OOM kill would
    proc.wait()
    assert json.loads(manifest.read_text())["stages"]["02_synthesize"]["status"] == "running"
    (tiny_notebooks / "sleep_02_synthesize").unlink()
    assert cli("--resume", "r3", nb_dir=tiny_notebooks) == 0
    assert log_lines(tiny_notebooks) == list(STAGES)
    man = json.loads(manifest.read_text())
    assert man["stages"]["00_corpus"]["attempts"] == 1 and man["stages"]["02_synthesize"]["attempts"] == 2


def test_only_reruns_a_stage_and_marks_downstream_stale(runs_root, tiny_notebooks, tiny_profile):
    assert cli("--profile", str(tiny_profile), "--run-id", "r4", nb_dir=tiny_notebooks) == 0
    assert cli("--resume", "r4", "--only", "05", nb_dir=tiny_notebooks) == 0
    man = json.loads((runs_root / "r4/manifest.json").read_text())
    assert man["stages"]["05_judge"]["attempts"] == 2
    assert man["stages"]["06_analysis"]["status"] == "stale"
    assert cli("--resume", "r4", nb_dir=tiny_notebooks) == 0  # resume redoes only the stale stage
    assert log_lines(tiny_notebooks) == [*STAGES, "05_judge", "06_analysis"]


def test_bad_invocations(runs_root, tiny_notebooks, tiny_profile, capsys):
    assert cli("--profile", "no_such_profile", nb_dir=tiny_notebooks) == 2
    assert "unknown profile" in capsys.readouterr().err
    assert cli("--profile", str(tiny_profile), "--set", "00_corpus.sacle=3", nb_dir=tiny_notebooks) == 2
    assert "'sacle'" in capsys.readouterr().err
    assert cli("--profile", str(tiny_profile), "--run-id", "r5", "--only", "00", nb_dir=tiny_notebooks) == 0
    assert cli("--profile", str(tiny_profile), "--run-id", "r5", nb_dir=tiny_notebooks) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert cli("--resume", "r5", "--set", "common.scale=3", nb_dir=tiny_notebooks) == 2
    assert cli("--resume", "nope", nb_dir=tiny_notebooks) == 2
    # a run started with --only 00 cannot run 01 alone in a fresh run: its upstream is missing
    assert cli("--profile", str(tiny_profile), "--run-id", "r6", "--only", "01", nb_dir=tiny_notebooks) == 1
    assert "00_corpus has not run" in capsys.readouterr().err


def test_kernel_runs_encrypted_so_its_plain_tcp_warning_is_gone(runs_root, tiny_notebooks, tiny_profile, capfd):
    # Without CurveZMQ keys ipykernel prints "[IPKernelApp] WARNING | Kernel is running over TCP without encryption.
    # ..." once per stage, straight to the stderr it shares with the runner (pipeline.kernel_config has the keys made).
    body = ("import os\nfrom ipykernel.kernelapp import IPKernelApp\n"
            "stage.write_metrics(encrypted=IPKernelApp.instance().curve_secretkey is not None)\n"
            "os.write(2, b'[IPKernelApp] WARNING | another kernel warning\\n')\nstage.finish()")
    make_notebook(tiny_notebooks / "00_corpus.ipynb", "00_corpus", 'run_dir = ""\nscale = 1\nlabel = "a"', body)
    assert cli("--profile", str(tiny_profile), "--run-id", "r7", "--only", "00", nb_dir=tiny_notebooks) == 0
    err = capfd.readouterr().err
    assert "another kernel warning" in err  # the kernel's stderr still reaches ours: nothing else is hidden
    assert "without encryption" not in err
    assert json.loads((runs_root / "r7/00_corpus/metrics.json").read_text()) == {"encrypted": True}
