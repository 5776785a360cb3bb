"""Numbered notebooks stay short stories: no outputs, one literal parameters cell, no logic, no machine paths."""
import ast
import json
import re
from pathlib import Path

import papermill as pm
import pytest

from paraqa_utils.params import notebook_parameters
from paraqa_utils.stages import KERNEL_NAME, NOTEBOOKS_DIR, STAGES

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
ABS_PATH = re.compile(r"(?<![\w.])/(?:home|root|work|Users|tmp|mnt|data|opt)/")
MAX_CELL_LINES = 15  # a code cell is a step of the story; the parameters cell is exempt


def load(p: Path) -> dict:
    return json.loads(p.read_text())


def code_cells(nb: dict) -> list[str]:
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == "code"]


def test_numbered_without_gaps_and_one_per_stage():
    names = [p.stem for p in NOTEBOOKS]
    assert names == list(STAGES)
    nums = [int(n[:2]) for n in names]
    assert nums == list(range(len(nums)))
    assert all(re.fullmatch(r"\d\d_[a-z_]+", n) for n in names)


def _is_parameters(nb: dict, src: str) -> bool:
    return any("parameters" in c.get("metadata", {}).get("tags", []) and
               ("".join(c["source"]) if isinstance(c["source"], list) else c["source"]) == src
               for c in nb["cells"] if c["cell_type"] == "code")


def problems(nb: dict, name: str) -> list[str]:
    """Everything wrong with one notebook's structure (empty list = clean)."""
    out = []
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != KERNEL_NAME:
        out.append(f"kernel is not '{KERNEL_NAME}'")
    first = nb["cells"][0] if nb["cells"] else {}
    if first.get("cell_type") != "markdown" or not "".join(first.get("source", "")).startswith("# "):
        out.append("first cell must be a markdown title")
    for c in nb["cells"]:
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None):
            out.append("committed outputs")
            break
    for src in code_cells(nb):
        try:
            tree = ast.parse(src)  # also rejects IPython magics and shell escapes (%cd, !pip)
        except SyntaxError:
            out.append(f"not plain Python (magic or shell escape?): {src[:40]!r}")
            continue
        if [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                                        ast.Lambda))]:
            out.append("def/class/lambda: logic belongs in paraqa_utils")
        if "sys.path" in src or "os.chdir" in src:
            out.append("sys.path/os.chdir edits")
        flow = [type(n).__name__.lower() for n in tree.body if isinstance(n, (ast.For, ast.AsyncFor, ast.While, ast.If))]
        if flow:
            out.append(f"{'/'.join(sorted(set(flow)))} statement in a cell: loops and branches belong in paraqa_utils")
        if len(src.strip().splitlines()) > MAX_CELL_LINES and not _is_parameters(nb, src):
            out.append(f"a code cell of {len(src.strip().splitlines())} lines (at most {MAX_CELL_LINES}): {src[:40]!r}")
    if ABS_PATH.search(json.dumps(nb)):
        out.append("absolute machine path")
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean(path):
    assert problems(load(path), path.name) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_literal_and_papermill_reads_it(path):
    params = notebook_parameters(path)  # exactly one tagged cell, `name = literal` lines only
    assert list(params)[0] == "run_dir" and params["run_dir"] == ""
    assert "seed" in params and isinstance(params["seed"], int)
    inspected = pm.inspect_notebook(str(path))
    assert set(inspected) == set(params), "papermill must parse every parameter line"
    nb = load(path)
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "parameters" in first_code["metadata"].get("tags", []), "the parameters cell comes first"


def test_hygiene_check_catches_each_problem():
    """The check above can fail: each kind of defect, planted in a clean notebook, is reported."""
    import copy
    base = load(NOTEBOOKS[-1])
    assert problems(base, "x") == []
    plants = {
        "committed outputs": lambda nb: nb["cells"][1].update(execution_count=3),
        "magic": lambda nb: nb["cells"][2].update(source="%cd /x\nimport os"),
        "def/class": lambda nb: nb["cells"][2].update(source="def f():\n    return 1"),
        "sys.path": lambda nb: nb["cells"][2].update(source="import sys\nsys.path.insert(0, 'x')"),
        "absolute machine path": lambda nb: nb["cells"][2].update(source="p = '" + "/" + "home/alice/data'"),
        "kernel": lambda nb: nb["metadata"]["kernelspec"].update(name="python3"),
        "for statement": lambda nb: nb["cells"][2].update(source="for x in range(3):\n    print(x)"),
        "if statement": lambda nb: nb["cells"][2].update(source="if True:\n    print(1)"),
        "while statement": lambda nb: nb["cells"][2].update(source="while False:\n    pass"),
        "a code cell of 16 lines": lambda nb: nb["cells"][2].update(source="\n".join(f"x{i} = {i}" for i in range(16))),
    }
    for what, plant in plants.items():
        nb = copy.deepcopy(base)
        plant(nb)
        found = problems(nb, "x")
        assert any(what.split()[0].rstrip("/") in f or what in f for f in found), (what, found)
