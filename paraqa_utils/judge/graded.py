"""Our hand-graded sets (judge/graded/) and how well a scorer's grades track them (Spearman)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

GRADED_DIR = Path(__file__).parent / "graded"
_DIR = GRADED_DIR
GRADED_FILE = _DIR / "graded_v1.jsonl"  # the set the offline scorer was first developed on
DEV_FILES = (GRADED_FILE, _DIR / "heldout_v1.jsonl")  # facets_v2 was revised looking at both: its dev sets
HELDOUT_FILE = _DIR / "heldout_v2.jsonl"  # written blind by the same rubric, scored once after the revision
DEV_V2_FILE = _DIR / "dev_v2.jsonl"  # a third dev set, written blind from the rubric: training data of the learned judge
DEV_V3_FILE = _DIR / "dev_v3.jsonl"  # a fourth one, by another author: training data too
BLIND_FILE = _DIR / "graded_v3.jsonl"  # written blind; held out (the first learned head was scored on it once)
BLIND_V4_FILE = _DIR / "graded_v4.jsonl"  # written blind; held out, scored once with the learned judge frozen
FIELDS = {"id": str, "question_type": str, "question": str, "reference": str, "answer": str, "grade": int}
MIN_SPEARMAN = 0.8  # a judge passes the graded-set check at or above this rank correlation


class GradedSetError(ValueError):
    """A graded-set line that cannot be used; the message names the file and line."""


def load_graded(path: str | Path = GRADED_FILE) -> list[dict[str, Any]]:
    """The graded items; a line that is not JSON, lacks a field, has a wrong type or a grade outside 0-5 is refused."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GradedSetError(f"{path}:{n}: not JSON ({exc.msg})") from None
        for field, kind in FIELDS.items():
            if field not in item:
                raise GradedSetError(f"{path}:{n}: missing field '{field}'")
            if not isinstance(item[field], kind) or (kind is int and isinstance(item[field], bool)):
                raise GradedSetError(f"{path}:{n}: '{field}' must be {kind.__name__}, not {type(item[field]).__name__}")
        if not 0 <= item["grade"] <= 5:
            raise GradedSetError(f"{path}:{n}: grade {item['grade']} is outside 0-5")
        out.append(item)
    return out


def agreement(grades: Sequence[float], scores: Sequence[float]) -> dict[str, Any]:
    """{spearman, n, passed, min_spearman}: rank correlation of a judge's scores with our grades (validation's
    correlations: None below 3 items or when either side is constant)."""
    from paraqa_utils.judge.validation import correlations

    rho = correlations(grades, scores)["spearman"]
    return {"spearman": None if rho is None else round(rho, 4), "n": len(grades),
            "passed": rho is not None and rho >= MIN_SPEARMAN, "min_spearman": MIN_SPEARMAN}
