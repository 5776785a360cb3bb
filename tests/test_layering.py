"""The package's layering, read from every module's imports with ast (function-level imports included).

Core (flat modules) <- llm/ <- one subpackage per stage; a stage imports only the core, llm and itself; testing/ is
for tests and bench; no import circles; no private names across modules; small modules; one class per name.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "paraqa_utils"
STAGE_PACKAGES = ("corpus", "annotate", "synthesize", "explicit_merge", "finetune", "judge", "analysis")
MAX_LINES = 300


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def imports(root: Path, mods: dict[str, Path]) -> list[tuple[str, str, list[str], int]]:
    """(importer, imported module, names taken from it, line) for every import of the package, at any depth."""
    top = root.name
    out = []
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out += [(name, a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == top]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                if base.split(".")[0] != top:
                    continue
                for a in node.names:  # `from pkg import submodule` is an import of the submodule
                    sub = f"{base}.{a.name}"
                    out.append((name, sub, [], node.lineno) if sub in mods else (name, base, [a.name], node.lineno))
    return out


def layer_of(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) == 1 or parts[1] == "prompts" or (len(parts) == 2 and parts[1] not in (*STAGE_PACKAGES, "llm",
                                                                                             "testing")):
        return "core"
    return parts[1]


def violations(root: Path) -> list[str]:
    mods = modules(root)
    edges = imports(root, mods)
    found: list[str] = []
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst, names, line in edges:
        rel = f"{mods[src].relative_to(root.parent)}:{line}"
        if dst != src:
            graph[src].add(dst)
        a, b = layer_of(src), layer_of(dst)
        if b == "testing" and a != "testing":
            found.append(f"{rel}: {src} imports {dst} (testing/ is for tests and bench only)")
        elif a == "core" and b != "core":
            found.append(f"{rel}: core module {src} imports {dst} ({b} sits above the core)")
        elif a == "llm" and b not in ("core", "llm"):
            found.append(f"{rel}: {src} imports {dst} (llm/ may import only the core)")
        elif a in STAGE_PACKAGES and b not in ("core", "llm", a):
            found.append(f"{rel}: stage package {a} imports {dst} (a stage imports only the core, llm and itself)")
        for n in names:
            if n.startswith("_") and not n.startswith("__"):
                found.append(f"{rel}: {src} imports private name {dst}.{n}")
    # attribute access to a private name through an imported module: `mod._name`
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        bound = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == root.name:
                for a in node.names:
                    if f"{node.module}.{a.name}" in mods:
                        bound[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {name} uses private name "
                             f"{bound[node.value.id]}.{node.attr}")
    # circles (Tarjan's strongly connected components)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append("import circle: " + " -> ".join(sorted(comp)))

    for v in list(mods):
        if v not in index:
            visit(v)
    return found


def test_layering_holds():
    assert violations(PACKAGE) == []


def test_the_check_catches_circles_private_names_and_layer_breaks(tmp_path):
    pkg = tmp_path / "paraqa_utils"
    for d in ("", "corpus", "annotate", "testing"):
        (pkg / d).mkdir(parents=True, exist_ok=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "runs.py").write_text("def f():\n    from paraqa_utils.annotate import steps\n")
    (pkg / "annotate" / "steps.py").write_text("from paraqa_utils.annotate.cache import _key\n")
    (pkg / "annotate" / "cache.py").write_text("def g():\n    from paraqa_utils.annotate import steps\n"
                                               "    return steps._hidden\n_key = 1\n")
    (pkg / "corpus" / "loaders.py").write_text("from paraqa_utils.annotate import cache\n"
                                               "from paraqa_utils.testing import fakes\n")
    (pkg / "testing" / "fakes.py").write_text("")
    found = "\n".join(violations(pkg))
    assert "import circle: paraqa_utils.annotate.cache -> paraqa_utils.annotate.steps" in found
    assert "private name paraqa_utils.annotate.cache._key" in found
    assert "private name paraqa_utils.annotate.steps._hidden" in found
    assert "core module paraqa_utils.runs imports paraqa_utils.annotate.steps" in found
    assert "stage package corpus imports paraqa_utils.annotate.cache" in found
    assert "testing/ is for tests and bench only" in found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small_and_names_no_tests(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path.name} is over {MAX_LINES} lines: split it"
    tree = ast.parse(path.read_text())
    assert not [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]


def test_one_class_per_name():
    seen: dict[str, list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                seen[node.name].append(str(path.relative_to(PACKAGE)))
    assert {n: where for n, where in seen.items() if len(where) > 1} == {}


def test_stage_folders_match_notebooks():
    from paraqa_utils.stages import STAGES

    assert tuple(s.split("_", 1)[1] for s in STAGES) == STAGE_PACKAGES
    for pkg in STAGE_PACKAGES:
        assert (PACKAGE / pkg / "__init__.py").exists(), pkg
