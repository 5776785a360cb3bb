"""The offline (no-LLM) judges by name: `learned_v2` (the default) and `facets_v2` (the rules it replaced, kept so
earlier runs can be recomputed). Both give 05's judgment rows and their figures on our graded sets.

(`learned_v1`, commit c21ce36, was the same head trained without dev_v3 and with fewer quantity and emotion forms;
graded/README.md has its figures. It is not kept: no run used it.)"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from paraqa_utils import runs, text
from paraqa_utils.judge import graded, offline
from paraqa_utils.text import Embed

DEFAULT = "learned_v2"
SCORERS = ("learned_v2", "facets_v2")
# the graded sets each scorer was built on (dev) and the ones it never saw (held out; the blind one scored once)
DEV = {"facets_v2": graded.DEV_FILES, "learned_v2": (*graded.DEV_FILES, graded.DEV_V2_FILE, graded.DEV_V3_FILE)}
HELDOUT = {"facets_v2": (graded.HELDOUT_FILE,),
           "learned_v2": (graded.HELDOUT_FILE, graded.BLIND_FILE, graded.BLIND_V4_FILE)}


class UnknownScorer(ValueError):
    pass


def judge_name(scorer: str) -> str:
    return f"offline/{scorer}"


def check(scorer: str) -> str:
    if scorer not in SCORERS:
        raise UnknownScorer(f"offline scorer {scorer!r}: one of {', '.join(SCORERS)}")
    return scorer


class Offline:
    """One offline scorer: grades(items) -> 0-5 floats; version names exactly what scored."""

    def __init__(self, scorer: str = DEFAULT, embed: Embed | None = None, encoder: Any = None):
        self.scorer = check(scorer)
        self.name = judge_name(scorer)
        if scorer == "facets_v2":
            self._facets = offline.FacetScorer(embed)
            rules = Path(offline.__file__).read_bytes() + Path(text.__file__).read_bytes()
            self.sha = hashlib.sha256(rules).hexdigest()
            self.version = f"facets_v2@{self.sha[:12]}"
        else:
            from paraqa_utils.judge.learned import LearnedScorer

            self._learned = LearnedScorer(encoder)
            self.version = self._learned.version
            self.sha = self._learned.head.meta["training_sha256"]

    def grades(self, items: Sequence[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
        """(0-5 scores, a short explanation each)."""
        if not items:
            return np.zeros(0), []
        if self.scorer == "facets_v2":
            found = self._facets.score(items)
            return (np.array([f.grade for f in found], dtype=float),
                    [f"content {f.content:.2f}, facet {f.facet}, similarity {f.similarity:.2f}" for f in found])
        s = self._learned.score(items)
        return s, [f"learned score {x:.2f} of 5" for x in s]

    def rows(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """05's judgment rows: `score` the 0-5 grade rounded, `score_100` = 20 x the unrounded one, always parsed;
        `judge_model` is the scorer's version. Probes are scored like the rest."""
        s, why = self.grades(items)
        return [{"item_id": it["item_id"], "condition": it["condition"], "test_set": it["test_set"],
                 "question_type": it.get("question_type"), "judge": self.name, "rubric": self.scorer,
                 "judge_model": self.version, "prompt_sha256": self.sha, "sampling": None, "run": 0,
                 "score": int(round(float(x))), "score_100": round(20 * float(x), 2), "parse_ok": True,
                 "parse_note": "", "raw": "", "answer_chars": len(it.get("answer") or ""), "explanation": w,
                 "probe": it.get("probe")} for it, x, w in zip(items, s, why)]

    def graded_figures(self) -> dict[str, Any]:
        """{dev, heldout: {spearman, n, passed, sets: {file: {spearman, n}}}} on our hand-graded sets; kept in
        outputs/cache/judge/figures/ under the hash of the scorer's version, its code and the sets' bytes, so a machine
        computes them once per scorer."""
        files = [Path(p) for p in (*DEV[self.scorer], *HELDOUT[self.scorer])]
        code = self.sha if self.scorer == "facets_v2" else self._learned.code_sha()  # today's code, not the model's
        key = hashlib.sha256("\0".join([self.version, code, *(hashlib.sha256(f.read_bytes()).hexdigest()
                                                            for f in files)]).encode()).hexdigest()[:24]
        cached = runs.cache_dir() / "judge" / "figures" / f"{self.scorer}-{key}.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        out = self._figures()
        runs.write_json(cached, out)
        return out

    def _figures(self) -> dict[str, Any]:
        out = {}
        for part, paths in (("dev", DEV[self.scorer]), ("heldout", HELDOUT[self.scorer])):
            per, allg, alls = {}, [], []
            for p in paths:
                items = graded.load_graded(p)
                g, s = [it["grade"] for it in items], list(self.grades(items)[0])
                per[Path(p).stem] = graded.agreement(g, s)
                allg, alls = allg + g, alls + s
            worst = min((v["spearman"] for v in per.values() if v["spearman"] is not None), default=None)
            out[part] = {**graded.agreement(allg, alls), "worst_set_spearman": worst, "sets": per}
            if part == "heldout":  # the check needs every held-out set at the bar, not only their union
                out[part]["passed"] = worst is not None and worst >= graded.MIN_SPEARMAN
        return out
