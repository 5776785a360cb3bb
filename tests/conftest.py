"""Shared fixtures: tiny notebooks for runner tests, and a temp runs folder so tests never touch outputs/runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from paraqa_utils.stages import REPO_ROOT, STAGES


EXTERNAL_MODEL = "qwen2_audio_tiny"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole pipeline on params/smoke.yaml, once per session: (run folder, runner stdout). One model the run does
    not train, a tiny random Qwen2-Audio (`external_models`), answers the test sets beside the trained conditions:
    the pipeline path of `paraqa_utils.evaluate`'s models."""
    import json

    from paraqa_utils.testing.tiny_models import save_tiny_qwen2_audio

    root = tmp_path_factory.mktemp("runs")
    qwen = save_tiny_qwen2_audio(tmp_path_factory.mktemp("qwen"))
    env = {**os.environ, "PARAQA_RUNS": str(root)}
    external = json.dumps({EXTERNAL_MODEL: f"hf:{qwen}#max_new_tokens=8"})
    proc = subprocess.run([sys.executable, "-m", "paraqa_utils.pipeline", "--profile", "smoke", "--run-id", "smoke",
                           "--set", f"04_finetune.external_models={external}"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "smoke", proc.stdout


@pytest.fixture()
def runs_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    monkeypatch.setenv("PARAQA_RUNS", str(root))
    return root


def make_notebook(path: Path, stage: str, params: str, body: str) -> None:
    nb = new_notebook()
    nb.metadata = {"kernelspec": {"name": "paraqa", "display_name": "Python (paraqa)", "language": "python"}}
    nb.cells = [new_markdown_cell(f"# {stage} (test)"),
                new_code_cell(params, metadata={"tags": ["parameters"]}),
                new_code_cell(f"from paraqa_utils import runs\nstage = runs.open_stage(run_dir, '{stage}')"),
                new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture()
def tiny_notebooks(tmp_path) -> Path:
    """Seven fast notebooks with the real stage names; each reads its predecessor's artifact (hash-checked).

    Behaviour is steered by files in the folder, so one test can make a stage fail, then fix it:
    `fail_<stage>` makes that stage raise; `sleep_<stage>` makes it wait that many seconds.
    """
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    for i, stage in enumerate(STAGES):
        read_prev = f"prev = stage.input('{STAGES[i - 1]}/out.txt').read_text()\n" if i else "prev = ''\n"
        body = (read_prev +
                "import pathlib, time\n"
                f"ctl = pathlib.Path({str(nb_dir)!r})\n"
                f"if (ctl / 'fail_{stage}').exists():\n    raise RuntimeError('boom in {stage}')\n"
                f"if (ctl / 'sleep_{stage}').exists():\n    time.sleep(float((ctl / 'sleep_{stage}').read_text()))\n"
                f"(stage.dir / 'out.txt').write_text(prev + '{stage} x' + str(scale) + '\\n')\n"
                f"with open(ctl / 'log.txt', 'a') as f:\n    f.write('{stage}\\n')\n"
                "stage.write_metrics(scale=scale, n_lines=len((stage.dir / 'out.txt').read_text().splitlines()))\n"
                "stage.finish()")
        make_notebook(nb_dir / f"{stage}.ipynb", stage, 'run_dir = ""\nscale = 1\nlabel = "a"', body)
    return nb_dir


@pytest.fixture()
def tiny_profile(tmp_path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text("description: tiny\ncommon:\n  scale: 2\n01_annotate:\n  label: b\n")
    return p


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: one thread avoids oversubscription on a shared 2-core machine (up to 10x faster there)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> tuple[str, str]:
    """(whisper_dir, llm_dir): tiny random models saved as ordinary checkpoint folders, loaded via from_pretrained."""
    from paraqa_utils.testing.tiny_models import save_tiny_models

    whisper_dir, llm_dir = save_tiny_models(tmp_path_factory.mktemp("tiny_models"))
    return str(whisper_dir), str(llm_dir)


@pytest.fixture(scope="session")
def fake_merged_run(tmp_path_factory):
    """make(n_train, n_test): a finished fake 03_explicit_merge stage of espeak-ng clips, built once per size."""
    import shutil

    from paraqa_utils.testing.fake_stages import make_fake_merge

    made: dict[tuple[int, int], Path] = {}

    def make(n_train: int, n_test: int) -> Path:
        if shutil.which("espeak-ng") is None:
            pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
        if (n_train, n_test) not in made:
            made[(n_train, n_test)] = tmp_path_factory.mktemp("run")
            make_fake_merge(made[(n_train, n_test)], n_train_clips=n_train, n_test_clips=n_test)
        return made[(n_train, n_test)]
    return make
