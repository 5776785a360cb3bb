"""The set-up files agree with each other: environment.yml mirrors requirements, torch stays pinned."""
import re

import yaml

from paraqa_utils.stages import REPO_ROOT


def reqs(name):
    return [l.strip() for l in (REPO_ROOT / "requirements" / name).read_text().splitlines()
            if l.strip() and not l.startswith("#")]


def test_environment_yml_mirrors_base_requirements():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == reqs("base.txt")


def test_torch_is_pinned_exactly():
    torch = [r for r in reqs("base.txt") if re.match(r"torch\b", r)]
    assert torch == ["torch==2.13.0"]


def test_ci_runs_make_test_and_refuses_empty_runs():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "passed" in ci
    mk = (REPO_ROOT / "Makefile").read_text()
    for target in ("setup:", "demo:", "test:", "smoke:", "lab:"):
        assert target in mk
    assert 'GGML_NATIVE=OFF' in mk
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def test_outputs_is_ignored_except_readme():
    gi = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert "outputs/*" in gi and "!outputs/README.md" in gi
    assert (REPO_ROOT / "outputs" / "README.md").exists()


def lab_command(tmp_path, uid):
    """`make -n lab` with `id -u` answering uid (a stub first on PATH); -o setup: print lab's recipe alone."""
    import os
    import subprocess

    stub = tmp_path / f"uid{uid}"
    stub.mkdir()
    (stub / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (stub / "id").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}
    res = subprocess.run(["make", "-n", "-o", "setup", "lab"], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    return res.stdout.split()


def test_make_lab_passes_allow_root_only_as_root(tmp_path):
    # JupyterLab exits with "Running as root is not recommended" unless --allow-root (containers, CI images run as root)
    as_root = lab_command(tmp_path, 0)
    assert as_root[as_root.index("lab") - 1].endswith("/jupyter") and "--allow-root" in as_root
    as_user = lab_command(tmp_path, 1000)
    assert "lab" in as_user and "--allow-root" not in as_user
