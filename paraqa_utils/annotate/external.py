"""The `ext:<name>` annotator: any program in its own process and environment (FunASR's emotion2vec+, WhisperX...),
spoken to in JSONL over stdin/stdout, cached per clip and recorded like the in-process backends.

The protocol (paraqa_utils/testing/external_annotator.py implements it; the README shows a config):
  in, one line per clip:  {"task": "emotion"|"gender"|"dimensional", "clip_id": ..., "audio_path": <absolute>,
                           "windows": [[start_s, end_s], ...]}          (stdin is closed after the last clip)
  out, one line per clip: {"clip_id": ..., "labels": [<label per window>], "scores": [{label: p}, ...]}
                          dimensional labels are {"valence": v, "arousal": a, "dominance": d}, each 0-1;
                          or {"clip_id": ..., "error": "<why this clip cannot be labelled>"}
  exit code 0; anything on stderr goes to the stage's log.
A clip that gets no valid line is retried in a new process (crash, hang past `timeout_s`, malformed line), up to
`retries` times; then it is recorded with its reason and its windows abstain from the vote. The stage goes on.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from paraqa_utils import runs
from paraqa_utils.annotate.cache import audio_tag, cache_key
from paraqa_utils.annotate.recognisers import map_labels
from paraqa_utils.text import DIMENSIONS

DEFAULTS = {"timeout_s": 600.0, "retries": 1}


def command_of(name: str, spec: Any) -> list[str]:
    """The annotator's command line from its `external_annotators` entry (a string or a list, under "command")."""
    cmd = spec.get("command") if isinstance(spec, dict) else None
    cmd = shlex.split(cmd) if isinstance(cmd, str) else cmd
    if not cmd or not all(isinstance(x, str) for x in cmd):
        raise ValueError(f"external_annotators['{name}'] needs a 'command' (a string or a list of strings), "
                         f"got {spec!r}")
    return list(cmd)


def parse_line(line: str, task: str, want: dict[str, int], label_map: dict[str, str], name: str) -> tuple[str, Any]:
    """(clip_id, (labels, confidences)) from one reply line, or (clip_id or "", "reason") for a bad one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        named = re.search(r'"clip_id"\s*:\s*"([^"]+)"', line)  # the reason goes to the clip the line names
        return (named.group(1) if named and named.group(1) in want else ""), \
            f"malformed line ({exc.msg}): {line[:80]!r}"
    cid = row.get("clip_id") if isinstance(row, dict) else None
    if cid not in want:
        return "", f"a line for an unknown clip_id {cid!r}"
    if row.get("error"):
        return cid, f"the annotator says: {str(row['error'])[:200]}"
    labels, scores = row.get("labels"), row.get("scores")
    if not isinstance(labels, list) or len(labels) != want[cid]:
        return cid, f"'labels' must list one label per window ({want[cid]}), got {str(labels)[:80]}"
    if task == "dimensional":
        if not all(isinstance(x, dict) and all(isinstance(x.get(d), (int, float)) for d in DIMENSIONS) for x in labels):
            return cid, f"dimensional labels must be {{valence, arousal, dominance}} numbers, got {str(labels[0])[:80]}"
        return cid, ([[min(1.0, max(0.0, float(x[d]))) for d in DIMENSIONS] for x in labels], [None] * len(labels))
    if not all(isinstance(x, str) for x in labels):
        return cid, f"{task} labels must be strings, got {str(labels)[:80]}"
    ours = map_labels(labels, task, label_map, source=f"external annotator '{name}'")  # LabelMapError lists them
    conf = [None] * len(labels)
    if isinstance(scores, list) and len(scores) == len(labels):
        conf = [round(float(s.get(lab, 0.0)), 4) if isinstance(s, dict) else None for s, lab in zip(scores, labels)]
    return cid, (ours, conf)


def call(cmd: list[str], requests: Sequence[dict], task: str, label_map: dict[str, str], name: str,
         timeout_s: float, log_path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """One process over these clips: (results by clip, reasons by clip for those without a valid line)."""
    want = {r["clip_id"]: len(r["windows"]) for r in requests}
    payload = "".join(json.dumps(r) + "\n" for r in requests)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"# {runs.utc_now()} {' '.join(cmd)} ({len(requests)} clips)\n")
        log.flush()
        try:
            proc = subprocess.run(cmd, input=payload, capture_output=True, text=True, encoding="utf-8",
                                  errors="replace", timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            out, why = exc.stdout or "", f"timed out after {timeout_s:g} s"
            out = out.decode() if isinstance(out, bytes) else out
        except OSError as exc:
            return {}, {cid: f"could not start {cmd[0]}: {exc}" for cid in want}
        else:
            out = proc.stdout
            log.write(proc.stderr)
            tail = (proc.stderr.strip().splitlines() or [""])[-1][:200]
            why = f"crashed (exit code {proc.returncode}): {tail}" if proc.returncode else "no line for this clip"
    results, reasons = {}, {}
    for line in filter(str.strip, out.splitlines()):
        cid, got = parse_line(line, task, want, label_map, name)
        if isinstance(got, str):
            if cid:
                reasons[cid] = got
            continue
        results[cid] = got
    return results, {cid: reasons.get(cid, why) for cid in want if cid not in results}


def predict(stage: runs.Stage, clips: Sequence[dict], prep: Any, name: str, spec: Any, task: str,
            label_map: dict[str, str], order: Sequence[tuple[str, int]],
            failures: dict[str, str]) -> tuple[list, list]:
    """(labels, confidences) for the windows in `order`; a clip that fails after its retries abstains (None)
    and its reason goes into `failures`. A label that does not map is an error (LabelMapError) for the stage."""
    cmd = command_of(name, spec)
    opts = {**DEFAULTS, **{k: v for k, v in spec.items() if k in DEFAULTS}}
    cdir = stage.cache / "ext" / cache_key(name, cmd, task, label_map)
    live = [c for c in clips if prep.clips[c["clip_id"]]["status"] == "ok"]
    files = {c["clip_id"]: cdir / f"{c['clip_id']}-{audio_tag(c['audio_file'])}.json" for c in live}
    by_clip = {cid: tuple(runs.read_json(f)) for cid, f in files.items() if f.exists()}
    todo = [{"task": task, "clip_id": c["clip_id"], "audio_path": str(Path(c["audio_file"]).resolve()),
             "windows": [[w.ctx_start_s, w.ctx_end_s] for w in prep.clips[c["clip_id"]]["windows"]]}
            for c in live if c["clip_id"] not in by_clip]
    t0, reasons = time.perf_counter(), {}
    log = stage.dir / "logs" / f"ext_{name}.log"
    for attempt in range(1 + int(opts["retries"])):
        # the first call takes every clip; a retry gives each clip left its own process, so one clip that hangs
        # or crashes the annotator costs only itself
        for batch in ([todo] if attempt == 0 else [[r] for r in todo]) if todo else []:
            got, why = call(cmd, batch, task, label_map, name, float(opts["timeout_s"]), log)
            reasons.update(why)
            for cid, res in got.items():
                runs.write_json(files[cid], list(res))
                by_clip[cid] = res
        todo = [r for r in todo if r["clip_id"] not in by_clip]
    failures.update({cid: f"ext:{name}: {why}" for cid, why in reasons.items() if cid not in by_clip})
    stage.record_model(f"{task}:ext:{name}", " ".join(cmd), protocol="paraqa-annotator-jsonl/1",
                       n_failed_clips=len([c for c in failures if c in files]), seconds=round(time.perf_counter() - t0, 3))
    labels = [by_clip[cid][0][k] if cid in by_clip else None for cid, k in order]
    confs = [by_clip[cid][1][k] if cid in by_clip else None for cid, k in order]
    return labels, confs
