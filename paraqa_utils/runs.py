"""Run directories: creation (never overwritten), hashing, stage bookkeeping and hash-checked upstream reads."""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from paraqa_utils.params import stage_config
from paraqa_utils.stages import REPO_ROOT, STAGES, stage_name

STAGE_FILE = "stage.json"
METRICS_FILE = "metrics.json"
# Folders inside a stage dir that hold caches, not artifacts: not hashed, not checked downstream.
UNHASHED_DIRS = ("_cache",)


class UpstreamError(RuntimeError):
    """An upstream artifact is missing, unfinished, or does not match the hash its stage recorded."""


def outputs_dir() -> Path:
    """Root for runs and caches (outputs/ in the checkout)."""
    return REPO_ROOT / "outputs"


def runs_dir() -> Path:
    """Where new runs go; PARAQA_RUNS relocates them (tests use a temp folder)."""
    return Path(os.environ.get("PARAQA_RUNS") or outputs_dir() / "runs")


def cache_dir() -> Path:
    """Converted models and other reusable caches; PARAQA_CACHE relocates it."""
    return Path(os.environ.get("PARAQA_CACHE") or outputs_dir() / "cache")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def git_info(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit, short sha and dirty flag of the checkout ('nogit' outside a repository)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "sha7": "nogit", "dirty": None}
    return {"commit": commit, "sha7": commit[:7], "dirty": dirty}


def make_run_dir(profile: str, run_id: str | None = None, root: Path | None = None) -> Path:
    """Create `<utc-time>_<profile>_<sha7>` (or `run_id`) exclusively: an existing run is never reused."""
    root = Path(root or runs_dir())
    root.mkdir(parents=True, exist_ok=True)
    if run_id is None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        run_id = f"{stamp}_{profile.replace('/', '-')}_{git_info()['sha7']}"
    path = root / run_id
    try:
        path.mkdir()
    except FileExistsError:
        raise FileExistsError(f"run directory {path} already exists; runs are never overwritten "
                              f"(use --resume {run_id} to continue it, or pick another --run-id)") from None
    return path


def find_run(run_id: str, root: Path | None = None) -> Path:
    """A run by id (folder name) or by path."""
    p = Path(run_id)
    if p.is_dir() and (p / "manifest.json").exists():
        return p
    cand = Path(root or runs_dir()) / run_id
    if not (cand / "manifest.json").exists():
        raise FileNotFoundError(f"no run '{run_id}' (looked for {cand}/manifest.json)")
    return cand


def _jsonable(obj: Any) -> Any:
    """numpy/pathlib values to plain JSON; NaN/inf to null so the files stay strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, data: Any) -> None:
    """Atomic write: a reader (or a kill) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(_jsonable(data), f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a sibling temp folder that replaces ``out_dir`` only if the block succeeds."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling (same filesystem) so the final rename is atomic; readers never see a half-written model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        old = None
        if out_dir.exists():
            # rename(2) cannot replace a non-empty directory: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rename(out_dir, old)  # replaces the empty placeholder
        try:
            os.rename(tmp, out_dir)
        except BaseException:
            if old is not None:
                os.rename(old, out_dir)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Atomic JSON-lines write; returns the record count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    n = 0
    with os.fdopen(fd, "w") as f:
        for rec in records:
            f.write(json.dumps(_jsonable(rec), ensure_ascii=False, allow_nan=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a single flushed line (resumable outputs; a torn last line is skipped on read)."""
    with open(path, "a") as f:
        f.write(json.dumps(_jsonable(record), ensure_ascii=False, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path) as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                return  # the last line was torn by a kill: the record is simply not there yet
            raise


def hash_tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under a stage folder, keyed by path relative to it (caches excluded)."""
    out: dict[str, str] = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or rel.parts[0] in UNHASHED_DIRS or p.name == STAGE_FILE or p.name.startswith("."):
            continue
        out[rel.as_posix()] = sha256_file(p)
    return out


class Stage:
    """One stage's folder in a run: its outputs, metrics and the record of what it read and used."""

    def __init__(self, run_dir: Path, name: str):
        self.run_dir = Path(run_dir)
        self.name = stage_name(name)
        self.dir = self.run_dir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self.record: dict[str, Any] = {
            "stage": self.name, "status": "running", "implemented": True, "started_utc": utc_now(),
            "inputs": {}, "models": {}, "prompts": {}}
        write_json(self.dir / STAGE_FILE, self.record)

    @property
    def cache(self) -> Path:
        """A per-stage folder for resumable caches (not hashed as artifacts)."""
        p = self.dir / "_cache"
        p.mkdir(exist_ok=True)
        return p

    def input(self, relpath: str) -> Path:
        """Path of an upstream artifact `<stage>/<file>`, after checking it against its stage's recorded hash."""
        upstream, _, inner = relpath.partition("/")
        upstream = stage_name(upstream)
        if STAGES.index(upstream) >= STAGES.index(self.name):
            raise UpstreamError(f"{self.name} may only read earlier stages, not {upstream}")
        rec_path = self.run_dir / upstream / STAGE_FILE
        hint = f"run it first: python -m paraqa_utils.pipeline --resume {self.run_dir.name} --only {upstream}"
        if not rec_path.exists():
            raise UpstreamError(f"{upstream} has not run in {self.run_dir}; {hint}")
        rec = read_json(rec_path)
        if rec.get("status") != "done":
            raise UpstreamError(f"{upstream} is '{rec.get('status')}' in {self.run_dir.name}, not done; {hint}")
        path = self.run_dir / upstream / inner
        expected = rec.get("outputs", {}).get(inner)
        if expected is None:
            raise UpstreamError(f"{upstream} recorded no artifact '{inner}' (it has: "
                                f"{', '.join(sorted(rec.get('outputs', {}))[:10])})")
        if not path.exists():
            raise UpstreamError(f"{relpath} is recorded by {upstream} but missing on disk")
        actual = sha256_file(path)
        if actual != expected:
            raise UpstreamError(f"{relpath} changed since {upstream} wrote it: recorded sha256 {expected}, "
                                f"now {actual}; rerun {upstream}")
        self.record["inputs"][relpath] = actual
        return path

    def config(self, cls: type, namespace: dict[str, Any], **fixed: Any) -> Any:
        """This stage's `cls` built from the notebook's own parameters (pass `globals()`); see params.stage_config."""
        return stage_config(cls, self.name, namespace, **fixed)

    def upstream_metrics(self, upstream: str) -> dict[str, Any]:
        return read_json(self.input(f"{stage_name(upstream)}/{METRICS_FILE}"))

    def record_model(self, role: str, model_id: str, **info: Any) -> None:
        self.record["models"][role] = {"id": str(model_id), **info}

    def record_prompt(self, path: Path) -> str:
        digest = sha256_file(path)
        self.record["prompts"][Path(path).name] = digest
        return digest

    def write_metrics(self, **metrics: Any) -> dict[str, Any]:
        """Merge figures into metrics.json (what tests and the analysis stage read)."""
        path = self.dir / METRICS_FILE
        current = read_json(path) if path.exists() else {}
        current.update(metrics)
        write_json(path, current)
        return current

    def finish(self, implemented: bool = True) -> dict[str, Any]:
        """Mark the stage done and record the sha256 of every artifact it wrote."""
        if not (self.dir / METRICS_FILE).exists():
            self.write_metrics()
        self.record.update(
            status="done", implemented=implemented, finished_utc=utc_now(),
            duration_s=round(time.time() - self.started, 3), outputs=hash_tree(self.dir))
        write_json(self.dir / STAGE_FILE, self.record)
        return self.record


def open_stage(run_dir: str | Path, name: str) -> Stage:
    """What a notebook's setup cell calls. An empty run_dir (interactive Run All) makes a scratch run."""
    if not run_dir:
        run_dir = make_run_dir("interactive")
    return Stage(Path(run_dir), name)
