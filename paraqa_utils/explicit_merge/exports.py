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


def to_chat(rec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Our chat form: OpenAI-style content parts, the audio as a part with its path."""
    target = rec.get("target", rec.get("reference"))
    msgs = [{"role": "user", "content": [{"type": "audio", "audio_path": _abs_audio(rec, run_dir)},
                                         {"type": "text", "text": user_text(rec)}]}]
    if target is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
    return {"id": rec.get("example_id") or rec.get("item_id"), "messages": msgs}


def to_tagged(rec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The `messages` + `audios` layout with an <audio> tag in the text: read by LLaMA-Factory and ms-swift."""
    target = rec.get("target", rec.get("reference"))
    msgs = [{"role": "user", "content": f"{AUDIO_TAG}{user_text(rec)}"}]
    if target is not None:
        msgs.append({"role": "assistant", "content": target})
    return {"messages": msgs, "audios": [_abs_audio(rec, run_dir)]}


def _stream_write(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, n = path.with_suffix(path.suffix + ".tmp"), 0
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def export_file(src: Path, out_dir: Path, run_dir: Path, formats: Iterable[str]) -> dict[str, int]:
    """Export one training file or test set (streamed line by line) in each requested format."""
    name, counts = Path(src).stem, {}
    run_dir = Path(run_dir).resolve()
    for fmt in formats:
        if fmt not in FORMATS:
            raise ExportError(f"unknown export format '{fmt}'; choose from {', '.join(FORMATS)}")
        if fmt == "chat":
            counts[fmt] = _stream_write(out_dir / "chat" / f"{name}.jsonl",
                                        (to_chat(r, run_dir) for r in runs.read_jsonl(src)))
        elif fmt in ("llamafactory", "swift"):
            counts[fmt] = _stream_write(out_dir / fmt / f"{name}.jsonl",
                                        (to_tagged(r, run_dir) for r in runs.read_jsonl(src)))
        elif fmt == "hf":
            from datasets import Dataset, Features, Value

            def gen() -> Iterator[dict[str, Any]]:
                for r in runs.read_jsonl(src):
                    yield {"id": r.get("example_id") or r.get("item_id"), "audio_path": _abs_audio(r, run_dir),
                           "prompt": user_text(r), "target": r.get("target", r.get("reference")) or "",
                           "task": r.get("task") or r.get("test_set") or "", "clip_id": r["clip_id"]}
            import tempfile
            with tempfile.TemporaryDirectory() as cache:  # arrow scratch files stay out of the artifacts
                # explicit features: an empty test set (no test-split QA) still exports, with its schema
                feats = Features({k: Value("string") for k in ("id", "audio_path", "prompt", "target", "task", "clip_id")})
                ds = (Dataset.from_generator(gen, features=feats, cache_dir=cache) if Path(src).stat().st_size
                      else Dataset.from_dict({k: [] for k in feats}, features=feats))
                ds.save_to_disk(str(out_dir / "hf" / name))
                counts[fmt] = len(ds)
    return counts


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
