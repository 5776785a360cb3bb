"""Exports of training files and test sets for other trainers, and loaders for human-written QA sets."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from paraqa_utils import runs

AUDIO_TAG = "<audio>"  # the placeholder LLaMA-Factory and ms-swift expand into audio features
FORMATS = ("chat", "llamafactory", "swift", "hf")


class ExportError(RuntimeError):
    pass


def user_text(rec: dict[str, Any]) -> str:
    """The user turn after the audio: explicit block (if any) then the instruction/question."""
    q = rec.get("instruction") or rec.get("question") or ""
    return f"{rec['explicit_block']}\n{q}" if rec.get("explicit_block") else q


def _abs_audio(rec: dict[str, Any], run_dir: Path) -> str:
    # plain string joins: Path.resolve() per row cost ~70 % of export time (bench/bench_merge.py)
    p = rec["audio_path"]
    return p if os.path.isabs(p) else os.path.join(str(run_dir), p)


def meta(rec: dict[str, Any]) -> dict[str, Any]:
    """What every exported row keeps, so a score can be joined back to its item: id, condition, task, clip_id."""
    return {"id": rec.get("example_id") or rec.get("item_id"), "condition": rec.get("condition"),
            "task": rec.get("task") or rec.get("test_set") or "", "clip_id": rec.get("clip_id")}


def to_chat(rec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Our chat form: OpenAI-style content parts, the audio as a part with its path."""
    target = rec.get("target", rec.get("reference"))
    msgs = [{"role": "user", "content": [{"type": "audio", "audio_path": _abs_audio(rec, run_dir)},
                                         {"type": "text", "text": user_text(rec)}]}]
    if target is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
    return {**meta(rec), "messages": msgs}


def to_tagged(rec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The `messages` + `audios` layout with an <audio> tag in the text: read by LLaMA-Factory and ms-swift."""
    target = rec.get("target", rec.get("reference"))
    msgs = [{"role": "user", "content": f"{AUDIO_TAG}{user_text(rec)}"}]
    if target is not None:
        msgs.append({"role": "assistant", "content": target})
    return {**meta(rec), "messages": msgs, "audios": [_abs_audio(rec, run_dir)]}


def tag_problem(rec: dict[str, Any]) -> str | None:
    """A literal <audio> in generated text would become a second audio slot in LLaMA-Factory and ms-swift."""
    for field in ("explicit_block", "instruction", "question", "target", "reference"):
        if AUDIO_TAG in str(rec.get(field) or ""):
            return f"a literal {AUDIO_TAG} in its {field} (the trainers read it as an audio placeholder)"
    return None


def variants(src: Path) -> dict[str, Any]:
    """Output name -> row transform. A test set becomes two files, `_plain` (no explicit labels: what a baseline
    or an external model is scored on) and `_explicit`; a training file keeps its condition's own prompts."""
    name = Path(src).stem
    if not name.startswith("test_"):
        return {name: lambda r: r}
    return {f"{name}_plain": lambda r: {**r, "explicit_block": None}, f"{name}_explicit": lambda r: r}


def _stream_write(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, n = path.with_suffix(path.suffix + ".tmp"), 0
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def export_file(src: Path, out_dir: Path, run_dir: Path, formats: Iterable[str],
                rejects: list[dict[str, Any]] | None = None) -> dict[str, dict[str, int]]:
    """Export one training file or test set (streamed line by line) in each requested format; returns rows
    written per output name and format. Rows with a literal <audio> in their text are left out and appended to
    `rejects` with the reason."""
    run_dir, formats = Path(run_dir).resolve(), list(formats)
    for fmt in formats:
        if fmt not in FORMATS:
            raise ExportError(f"unknown export format '{fmt}'; choose from {', '.join(FORMATS)}")
    bad = {}
    for r in runs.read_jsonl(src):
        if (why := tag_problem(r)) is not None:
            bad[meta(r)["id"]] = {**meta(r), "file": Path(src).name, "reason": why}
    if rejects is not None:
        rejects += list(bad.values())

    def rows(fn: Any) -> Iterator[dict[str, Any]]:
        return (fn(r) for r in runs.read_jsonl(src) if meta(r)["id"] not in bad)

    counts: dict[str, dict[str, int]] = {}
    for name, fn in variants(src).items():
        counts[name] = {}
        for fmt in formats:
            if fmt == "chat":
                counts[name][fmt] = _stream_write(out_dir / "chat" / f"{name}.jsonl",
                                                  (to_chat(r, run_dir) for r in rows(fn)))
            elif fmt in ("llamafactory", "swift"):
                counts[name][fmt] = _stream_write(out_dir / fmt / f"{name}.jsonl",
                                                  (to_tagged(r, run_dir) for r in rows(fn)))
            else:
                counts[name][fmt] = _write_hf(out_dir / "hf" / name, [
                    {**meta(r), "audio_path": _abs_audio(r, run_dir), "prompt": user_text(r),
                     "target": r.get("target", r.get("reference")) or ""} for r in rows(fn)])
    return counts


def _write_hf(path: Path, records: list[dict[str, Any]]) -> int:
    from datasets import Dataset, Features, Value

    # explicit features: an empty test set (no test-split QA) still exports, with its schema; from_list keeps the
    # table in memory, so no arrow scratch files land among the artifacts
    feats = Features({k: Value("string") for k in ("id", "condition", "task", "clip_id", "audio_path", "prompt",
                                                   "target")})
    ds = Dataset.from_list(records, features=feats) if records else Dataset.from_dict({k: [] for k in feats},
                                                                                    features=feats)
    ds.save_to_disk(str(path))
    return len(ds)


def write_llamafactory_info(out_dir: Path, names: Iterable[str]) -> Path:
    """dataset_info.json so LLaMA-Factory finds each exported file (sharegpt layout, OpenAI-style roles)."""
    info = {n: {"file_name": f"{n}.jsonl", "formatting": "sharegpt",
                "columns": {"messages": "messages", "audios": "audios"},
                "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                         "assistant_tag": "assistant"}} for n in names}
    path = out_dir / "llamafactory" / "dataset_info.json"
    runs.write_json(path, info)
    return path


def load_human_qa(path: str | Path, audio_root: str | Path | None = None) -> list[dict[str, Any]]:
    """A human-written QA set as test items: a JSONL file, or a `datasets` save_to_disk folder.

    Expected fields (first found wins): audio path `audio_path`|`audio`|`context` (a path string, or a dict
    with `path`); question `question`|`instruction`; answer `answer`|`reference`; optional `question_type`.
    """
    p = Path(path)
    if not p.exists():
        raise ExportError(f"human QA set not found: {p}")
    if p.is_dir():
        from datasets import load_from_disk
        rows: Iterable[dict[str, Any]] = load_from_disk(str(p))
    else:
        rows = runs.read_jsonl(p)
    items = []
    for i, r in enumerate(rows):
        audio = next((r[k] for k in ("audio_path", "audio", "context") if r.get(k)), None)
        if isinstance(audio, dict):
            audio = audio.get("path")
        q = next((r[k] for k in ("question", "instruction") if r.get(k)), None)
        a = next((r[k] for k in ("answer", "reference") if r.get(k)), None)
        missing = [n for n, v in (("audio", audio), ("question", q), ("answer", a)) if not v]
        if missing:
            raise ExportError(f"{p.name} row {i}: missing {', '.join(missing)} (fields present: {sorted(r)})")
        audio_p = Path(audio) if Path(audio).is_absolute() or audio_root is None else Path(audio_root) / audio
        items.append({"item_id": f"cpqa_human:{r.get('id', i)}", "test_set": "cpqa_human",
                      "question_type": r.get("question_type"), "clip_id": str(r.get("clip_id") or Path(audio).stem),
                      "audio_path": str(audio_p), "question": q, "reference": a, "label": None,
                      "explicit_block": None})
    return items
