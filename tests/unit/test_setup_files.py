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
