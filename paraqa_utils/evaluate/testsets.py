"""Test sets for `python -m paraqa_utils.evaluate`: a ParaQA run's, a JSONL/CSV file, or a Hugging Face dataset.

    run:<run id or folder>[:set,set]   03's test_<set>.jsonl of a run (default: the open-ended cpqa_* sets)
    <file>.jsonl | <file>.csv          audio path + question + reference (+ label, question_type, id)
    hf:<hub id or folder>[@split]      `load_from_disk` for a folder, else `load_dataset`; a DatasetDict needs a
                                       split (the only split is taken); the AudioBench layout, flat or nested
                                       (`context` audio, `instruction`, `answer`; or each {text, audio})
A column is mapped by name (CANDIDATES) and by the kind of its values: a struct (a dict that is not audio) is
replaced by its child of the field's kind, so nested `context` = {text, audio} gives audio from `context.audio`.
Audio may be a path, bytes or a decoded array; arrays and bytes are written once to WAV under the cache.
Every loaded item: {id, test_set, audio_path, question, reference, question_type, label, explicit_block}.
"""
from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from paraqa_utils import runs

FIELDS = ("audio", "question", "reference", "question_type", "label", "id")
CANDIDATES = {  # our field -> column names tried in order (dotted names reach into nested columns)
    "audio": ("audio_path", "audio", "context", "context.audio", "audio.path", "path", "wav"),
    "question": ("question", "instruction", "prompt", "query", "text.question"),
    "reference": ("reference", "answer", "target", "response", "text.answer", "other_attributes.answer"),
    "question_type": ("question_type", "type", "category", "other_attributes.question_type"),
    "label": ("label", "emotion", "gender"),
    "id": ("id", "item_id", "uid", "example_id"),
}
REQUIRED = ("audio", "question")
OPEN_SETS = ("cpqa_ref", "cpqa_llm", "cpqa_human")


class TestSetError(ValueError):
    """A test set that cannot be read or mapped; the message lists what was found."""


def parse_mapping(spec: str) -> dict[str, str]:
    """'question=instruction,reference=answer' -> {'question': 'instruction', 'reference': 'answer'}."""
    out = {}
    for item in filter(None, (x.strip() for x in (spec or "").split(","))):
        field, sep, column = item.partition("=")
        if not sep or field not in FIELDS:
            raise TestSetError(f"--map {item!r}: use FIELD=COLUMN with FIELD one of {', '.join(FIELDS)}")
        out[field] = column.strip()
    return out


def is_audio(v: Any) -> bool:
    """An audio dict: array, bytes or path (datasets' undecoded Audio is {bytes, path}, a decoded one {array, ...})."""
    return isinstance(v, dict) and bool({"array", "bytes", "path"} & set(v))


def is_struct(v: Any) -> bool:
    return isinstance(v, dict) and not is_audio(v)


def flat_columns(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict columns as dotted names ('other_attributes.answer'); an audio dict stays whole too."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        out[prefix + k] = v
        if is_struct(v):
            out.update(flat_columns(v, f"{prefix}{k}."))
    return out


def fits(field: str, v: Any, strict: bool = False) -> bool:
    """Whether a value can be `field`: audio an audio value (or, unless strict, a path string), text a string (or,
    unless strict, a number); None (a missing value) fits anything unless strict."""
    if field == "audio":
        return is_audio(v) or not strict and (v is None or isinstance(v, str))
    return isinstance(v, str) or not strict and (v is None or isinstance(v, (int, float)))


def pick(field: str, col: str, sample: dict[str, Any]) -> str | None:
    """`col` when its value fits `field`; for a struct (a non-audio dict such as AudioBench's nested `context` =
    {text, audio}) its best-fitting dotted child: a strict fit first, then one named like a candidate."""
    if not is_struct(sample.get(col)):
        return col if fits(field, sample.get(col)) else None
    leaves = {n.split(".")[-1] for n in CANDIDATES[field]}
    kids = [k for k in sample if k.startswith(col + ".") and not is_struct(sample[k]) and fits(field, sample[k])]
    return min(kids, key=lambda k: (not fits(field, sample[k], True), k.split(".")[-1] not in leaves), default=None)


def choose_mapping(sample: dict[str, Any], override: dict[str, str], source: str) -> dict[str, str]:
    """Our field -> column: an override as given (a struct descends to its child), else the first candidate column
    whose value (`sample`: each flat column's first non-missing value) fits the field."""
    mapping = {f: pick(f, c, sample) or c for f, c in override.items()}
    for f, names in CANDIDATES.items():
        mapping.setdefault(f, next(filter(None, (pick(f, c, sample) for c in names if c in sample)), None))
    unknown = {f: c for f, c in override.items() if c not in sample}
    missing = [f for f in REQUIRED if not mapping.get(f)]
    if unknown or missing:
        raise TestSetError(f"{source}: cannot map {', '.join(missing + list(unknown))} (override with --map "
                           f"FIELD=COLUMN); available columns: {', '.join(sample)}")
    return {f: c for f, c in mapping.items() if c}


def audio_file(value: Any, cache: Path, root: Path) -> str:
    """A path for an audio value: a path string, {'path'}, {'bytes'} or {'array', 'sampling_rate'} (written once,
    named by its content hash)."""
    import soundfile as sf

    if isinstance(value, str):
        p = Path(value)
        return str(p if p.is_absolute() else root / p)
    if isinstance(value, dict) and value.get("array") is not None:
        arr = np.asarray(value["array"], dtype=np.float32)
        rate = int(value.get("sampling_rate") or 16000)
        name = hashlib.sha256(arr.tobytes() + str(rate).encode()).hexdigest()[:16]
        out = cache / f"{name}.wav"
        if not out.exists():
            cache.mkdir(parents=True, exist_ok=True)
            sf.write(out, arr, rate)
        return str(out)
    if isinstance(value, dict) and value.get("bytes"):
        data = value["bytes"]
        out = cache / f"{hashlib.sha256(data).hexdigest()[:16]}.wav"
        if not out.exists():
            cache.mkdir(parents=True, exist_ok=True)
            audio, rate = sf.read(io.BytesIO(data), dtype="float32")
            sf.write(out, audio, rate)
        return str(out)
    if isinstance(value, dict) and value.get("path"):
        return audio_file(value["path"], cache, root)
    raise TestSetError(f"an audio value of type {type(value).__name__} is neither a path, bytes nor an array")


def from_rows(rows: list[dict[str, Any]], name: str, source: str, override: dict[str, str], cache: Path,
              root: Path, echo: Any = print) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items, rejects): each row mapped onto our fields; a row without usable audio or question is a reject."""
    if not rows:
        return [], []
    sample: dict[str, Any] = {}
    for row in rows[:100]:  # a column's kind is read from its first non-missing value
        for k, v in flat_columns(row).items():
            sample[k] = v if sample.get(k) is None else sample[k]
    mapping = choose_mapping(sample, override, source)
    echo(f"{source}: columns {', '.join(sample)}; mapping {mapping}")
    items, rejects = [], []
    for n, row in enumerate(rows):
        flat = flat_columns(row)
        rid = str(flat.get(mapping.get("id", ""), "") or n)
        try:
            audio = audio_file(flat.get(mapping["audio"]), cache, root)
        except Exception as exc:  # a bad audio value is this item's reject, not the set's failure
            rejects.append({"id": f"{name}:{rid}", "reason": f"audio: {exc}"})
            continue
        question = str(flat.get(mapping["question"]) or "").strip()
        if not question:
            rejects.append({"id": f"{name}:{rid}", "reason": "empty question"})
            continue
        items.append({"id": f"{name}:{rid}", "test_set": name, "audio_path": audio, "question": question,
                      "reference": str(flat.get(mapping.get("reference", ""), "") or "").strip(),
                      "question_type": str(flat.get(mapping.get("question_type", ""), "") or "") or None,
                      "label": flat.get(mapping.get("label", "")), "explicit_block": None})
    return items, rejects


def load(spec: str, cache: Path, override: dict[str, str] | None = None,
         echo: Any = print) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """{test set name: (items, rejects)} for one --test-set SPEC."""
    override = override or {}
    if spec.startswith("run:"):
        run_id, _, sets = spec[4:].partition(":")
        try:  # a run id under outputs/runs, or any folder holding a finished 03_explicit_merge
            run = Path(run_id) if (Path(run_id) / "03_explicit_merge").is_dir() else runs.find_run(run_id)
        except FileNotFoundError as exc:
            raise TestSetError(f"--test-set {spec}: {exc}") from None
        names = [s for s in sets.split(",") if s] or [s for s in OPEN_SETS
                                                       if (run / "03_explicit_merge" / f"test_{s}.jsonl").exists()]
        out = {}
        for s in names:
            path = run / "03_explicit_merge" / f"test_{s}.jsonl"
            if not path.exists():
                raise TestSetError(f"{spec}: {path} does not exist")
            rows = [{**r, "id": r["item_id"].split(":", 1)[-1]} for r in runs.read_jsonl(path)]
            items, rejects = from_rows(rows, s, str(path), override, cache, run, echo)
            for it, r in zip(items, rows):  # 03's own fields: its explicit labels are kept apart, unused by default
                it.update(id=r["item_id"], explicit_block=r.get("explicit_block"), label=r.get("label"))
            out[s] = (items, rejects)
        return out
    if spec.startswith("hf:"):
        return {spec.split("/")[-1].split("@")[0]: from_rows(hf_rows(spec[3:]), spec.split("/")[-1].split("@")[0],
                                                             spec, override, cache, Path.cwd(), echo)}
    path = Path(spec)
    if not path.is_file():
        raise TestSetError(f"--test-set {spec!r}: no such file (or use run:<id> / hf:<dataset>)")
    rows = list(csv.DictReader(path.open(newline=""))) if path.suffix == ".csv" else list(runs.read_jsonl(path))
    return {path.stem: from_rows(rows, path.stem, spec, override, cache, path.parent, echo)}


def hf_rows(spec: str) -> list[dict[str, Any]]:
    """The rows of a Hugging Face dataset folder or hub id; 'NAME@split' picks a split of a DatasetDict."""
    import datasets

    name, _, split = spec.partition("@")
    ds = datasets.load_from_disk(name) if Path(name).exists() else datasets.load_dataset(name)
    if isinstance(ds, datasets.DatasetDict):
        if not split and len(ds) == 1:
            split = next(iter(ds))
        if split not in ds:
            raise TestSetError(f"hf:{spec}: choose a split with @SPLIT: it has {', '.join(ds)}")
        ds = ds[split]
    def undecoded(feat: Any) -> Any:  # every Audio, nested ones too: {bytes, path}, written to WAV by us (no decoder)
        if isinstance(feat, datasets.Audio):
            return datasets.Audio(decode=False)
        return {k: undecoded(v) for k, v in feat.items()} if isinstance(feat, dict) else feat

    features = datasets.Features(undecoded(ds.features))
    return [dict(r) for r in (ds if features == ds.features else ds.cast(features))]
