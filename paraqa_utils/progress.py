"""Progress a person can follow from a log: stage bars report to a file that the runner prints periodically.

Inside a notebook every long loop uses `progress.tqdm` (a tqdm: bars in JupyterLab as before). When the runner
sets PARAQA_PROGRESS_FILE, each bar also writes {desc, n, total, elapsed_s} there, at most once a second; the
runner's `Reporter` prints one line per interval (stage, step, items done/total, elapsed, ETA), which is what a
batch log or CI shows when stdout is not a terminal.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm as _tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

ENV = "PARAQA_PROGRESS_FILE"
WRITE_EVERY_S = 1.0


class tqdm(_tqdm):  # noqa: N801 (a drop-in for tqdm)
    """tqdm that also reports to the runner's progress file (when there is one)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._report_path = os.environ.get(ENV)
        self._report_t = 0.0
        super().__init__(*args, **kwargs)
        self._report(force=True)

    def update(self, n: float | None = 1) -> bool | None:
        out = super().update(n)
        self._report()
        return out

    def close(self) -> None:
        self._report(force=True)
        super().close()

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if (not getattr(self, "_report_path", None) or getattr(self, "n", None) is None or not hasattr(self, "desc")
                or (not force and now - self._report_t < WRITE_EVERY_S)):
            return  # no runner listening, or a bar torn down before it was fully built
        self._report_t = now
        elapsed = self._time() - self.start_t if getattr(self, "start_t", None) else 0.0  # tqdm's own clock
        record = {"desc": self.desc or "", "n": self.n, "total": self.total, "elapsed_s": round(elapsed, 2),
                  "unit": self.unit, "wall": time.time()}
        tmp = f"{self._report_path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            Path(tmp).write_text(json.dumps(record))
            os.replace(tmp, self._report_path)
        except OSError:  # progress is a courtesy: it never fails the work
            pass


def fmt_s(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def describe(stage: str, stage_elapsed_s: float, record: dict[str, Any] | None) -> str:
    """One line: stage, the current step with done/total and its ETA (when the total is known), elapsed time."""
    line = f"[....] {stage}  elapsed {fmt_s(stage_elapsed_s)}"
    if not record:
        return line
    n, total, spent = record.get("n") or 0, record.get("total"), record.get("elapsed_s") or 0.0
    unit = record.get("unit") or "it"
    step = f"{record.get('desc') or 'working'}: {n:g}/{total:g} {unit}" if total else f"{record.get('desc')}: {n:g} {unit}"
    if total and n:
        step += f" ({100 * n / total:.0f} %, ETA {fmt_s(spent / n * (total - n))})"
    return f"{line}  {step}"


class Reporter:
    """While a stage runs, print `describe(...)` every `interval_s` seconds (a daemon thread)."""

    def __init__(self, stage: str, path: Path, interval_s: float, log: Callable[[str], Any] = print):
        self.stage, self.path, self.interval_s, self.log = stage, Path(path), interval_s, log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self) -> "Reporter":
        self.path.unlink(missing_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def current(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.log(describe(self.stage, time.monotonic() - self._t0, self.current()))
