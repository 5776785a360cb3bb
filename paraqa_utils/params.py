"""Profiles (params/*.yaml): load, inherit, override, and validate against each notebook's parameters cell."""
from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

import yaml

from paraqa_utils.stages import STAGES, NOTEBOOKS_DIR, notebook_path, stage_name

PARAMS_DIR = Path(__file__).resolve().parents[1] / "params"
# Keys the runner injects into every notebook; a profile may not set them.
RUNNER_KEYS = ("run_dir",)
TOP_LEVEL_KEYS = ("description", "extends", "common", *STAGES)


class ParamsError(ValueError):
    """A profile or an override that cannot be used; the message names the key, file and notebook."""


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Names and literal defaults of the single cell tagged `parameters` in a notebook."""
    nb = json.loads(Path(path).read_text())
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParamsError(f"{Path(path).name}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    src = "".join(cells[0]["source"]) if isinstance(cells[0]["source"], list) else cells[0]["source"]
    out: dict[str, Any] = {}
    for node in ast.parse(src).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ParamsError(f"{Path(path).name}: parameters cell may only hold `name = literal` lines "
                              f"(line {node.lineno})")
        try:
            out[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError as exc:
            raise ParamsError(f"{Path(path).name}: parameter '{node.targets[0].id}' is not a literal") from exc
    return out


def all_notebook_parameters(notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, dict[str, Any]]:
    return {s: notebook_parameters(notebook_path(s, notebooks_dir)) for s in STAGES}


def _profile_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise ParamsError(f"profile file not found: {p}")
        return p
    cand = PARAMS_DIR / f"{name_or_path}.yaml"
    if not cand.exists():
        known = sorted(x.stem for x in PARAMS_DIR.glob("*.yaml")) + sorted(
            f"exp/{x.stem}" for x in (PARAMS_DIR / "exp").glob("*.yaml"))
        raise ParamsError(f"unknown profile '{name_or_path}': no {cand.name} in params/ (known: {', '.join(known)})")
    return cand


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path.name}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path.name}: a profile must be a mapping of blocks, got {type(data).__name__}")
    for key, block in data.items():
        if key not in TOP_LEVEL_KEYS:
            hint = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
            raise ParamsError(f"{path.name}: unknown top-level key '{key}'"
                              + (f" (did you mean '{hint[0]}'?)" if hint else f"; allowed: {', '.join(TOP_LEVEL_KEYS)}"))
        if key not in ("description", "extends") and not isinstance(block, dict):
            raise ParamsError(f"{path.name}: block '{key}' must be a mapping")
    return data


def load_profile(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Resolved profile {'name', 'description', 'common': {...}, '<stage>': {...}} with `extends:` applied."""
    path = _profile_path(name_or_path).resolve()
    if path in _seen:
        raise ParamsError(f"{path.name}: circular 'extends' chain: {' -> '.join(p.name for p in (*_seen, path))}")
    data = _read_yaml(path)
    if "extends" in data:
        parent_ref = data["extends"]
        parent_file = (path.parent / parent_ref) if str(parent_ref).endswith((".yaml", ".yml")) else parent_ref
        base = load_profile(parent_file, (*_seen, path))
    else:
        base = {"common": {}, **{s: {} for s in STAGES}}
    out = copy.deepcopy(base)
    for block in ("common", *STAGES):
        out[block].update(copy.deepcopy(data.get(block) or {}))
    out["name"] = path.stem
    out["description"] = data.get("description", base.get("description", ""))
    return out


def apply_overrides(profile: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `block.key=value` strings (value parsed as YAML); block is 'common' or a stage (name or number)."""
    out = copy.deepcopy(profile)
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ParamsError(f"--set expects block.key=value, got '{item}'")
        lhs, raw = item.split("=", 1)
        block, key = lhs.split(".", 1)
        block = "common" if block == "common" else stage_name(block)
        try:
            out[block][key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ParamsError(f"--set {item}: value is not valid YAML: {exc}") from exc
    return out


def _type_ok(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def validate(profile: dict[str, Any], nb_params: dict[str, dict[str, Any]]) -> None:
    """Every key must exist in the notebook it goes to, with a value of the default's type."""
    name = profile.get("name", "?")
    problems: list[str] = []
    every = {k for params in nb_params.values() for k in params}
    for key, value in profile["common"].items():
        if key in RUNNER_KEYS:
            problems.append(f"'{key}' is set by the runner and may not appear in a profile")
        elif key not in every:
            hint = difflib.get_close_matches(key, sorted(every), n=1)
            problems.append(f"common key '{key}' is a parameter of no notebook"
                            + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        else:
            for stage, params in nb_params.items():
                if key in params and not _type_ok(params[key], value):
                    problems.append(f"common key '{key}'={value!r}: notebook {stage}.ipynb expects "
                                    f"{type(params[key]).__name__}")
    for stage, params in nb_params.items():
        for key, value in profile[stage].items():
            if key in RUNNER_KEYS:
                problems.append(f"{stage}.{key} is set by the runner and may not appear in a profile")
            elif key not in params:
                hint = difflib.get_close_matches(key, sorted(params), n=1)
                problems.append(f"unknown key '{key}' in block '{stage}': notebook {stage}.ipynb has no such "
                                "parameter" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
            elif not _type_ok(params[key], value):
                problems.append(f"{stage}.{key}={value!r}: notebook {stage}.ipynb expects "
                                f"{type(params[key]).__name__} (default {params[key]!r})")
    if problems:
        raise ParamsError(f"profile '{name}':\n  - " + "\n  - ".join(problems))


def flat_params(profile: dict[str, Any], stage: str, nb_params: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """The exact parameters one notebook receives: its common keys, then its own block, then the run dir."""
    flat = {k: v for k, v in profile["common"].items() if k in nb_params}
    flat.update(profile[stage])
    flat["run_dir"] = run_dir
    return flat


def resolve(name_or_path: str | Path, overrides: list[str] | None = None,
            notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, Any]:
    """Load, override and validate a profile in one call (what the runner and the contract test use)."""
    profile = apply_overrides(load_profile(name_or_path), overrides or [])
    validate(profile, all_notebook_parameters(notebooks_dir))
    return profile


# --- stage configs built from a notebook's parameters (one default per knob) ----------------------------------
_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list}


def knob_fields(cls: type) -> list[str]:
    """A config dataclass's knobs: init fields without a default. Their only default is the notebook's."""
    return [f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]


def check_types(cfg: Any) -> list[str]:
    """Fields whose value does not have the annotated type (an int passes for a float, a bool never for an int)."""
    problems = []
    for f in dataclasses.fields(cfg):
        want = f.type if f.type in _TYPES.values() else _TYPES.get(str(f.type).split("[")[0].split("|")[0].strip())
        value = getattr(cfg, f.name)
        if want is None:
            continue
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) if want is float
              else isinstance(value, int) and not isinstance(value, bool) if want is int else isinstance(value, want))
        if not ok:
            problems.append(f"{f.name}={value!r}: expected {want.__name__}")
    return problems


def stage_config(cls: type, stage: str, values: dict[str, Any] | None = None, strict: bool = False,
                 notebooks_dir: Path = NOTEBOOKS_DIR, **fixed: Any) -> Any:
    """Build `cls` for one stage: each knob from `values` (a notebook's globals, a config file), else from the
    stage notebook's parameters cell, the one place its default lives; `fixed` sets the non-knob fields.

    A knob that the notebook does not declare is an error naming it; with `strict`, so is a key of `values`
    that is no field (a config file's typo), with the closest field name.
    """
    stage = stage_name(stage)
    defaults = notebook_parameters(notebook_path(stage, notebooks_dir))
    knobs = knob_fields(cls)
    undeclared = [k for k in knobs if k not in defaults]
    if undeclared:
        raise ParamsError(f"{cls.__name__} field(s) {undeclared} are not parameters of {stage}.ipynb: "
                          "declare each in its parameters cell (the one place a default lives)")
    values = dict(values or {})
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    if strict:
        unknown = [k for k in values if k not in names]
        if unknown:
            hints = [f"'{k}'" + (f" (did you mean '{m[0]}'?)" if (m := difflib.get_close_matches(k, names, 1)) else "")
                     for k in unknown]
            raise ParamsError(f"unknown {cls.__name__} key(s): {', '.join(hints)}")
    chosen = {k: values.get(k, defaults[k]) for k in knobs}
    chosen.update({k: v for k, v in values.items() if k in names and k not in knobs})
    chosen.update(fixed)
    return cls(**chosen)
