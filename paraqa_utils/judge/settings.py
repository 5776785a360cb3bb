"""Stage 05's settings: every knob of 05_judge.ipynb, checked once, passed to the steps as one object."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from paraqa_utils.judge.graded import GRADED_DIR
from paraqa_utils.judge.llm_judge import RUBRICS
from paraqa_utils.judge.scorers import SCORERS
from paraqa_utils.params import check_types

JUDGE_KEYS = ("name", "base_url", "model", "api_key_env")  # what one judge endpoint is described by
EXTRA_DEFAULT_KEY_ENV = "OPENAI_API_KEY"  # an extra judge that names no key variable reads this one


@dataclass
class JudgeSettings:
    """Every knob of stage 05, each a parameter of 05_judge.ipynb of the same name and with no default here:
    its one default is the notebook's parameters cell (build it with `stage.config(JudgeSettings, globals())`
    or `params.stage_config(JudgeSettings, "05_judge", {...})`)."""
    seed: int
    judge_base_url: str  # empty: the embedded llama.cpp server; else an OpenAI-compatible endpoint
    judge_model: str
    judge_api_key_env: str  # the variable holding the key, never the key
    judge_name: str
    extra_judges: list  # more judges: {"name", "base_url", "model"[, "api_key_env"]} each
    rubrics: list  # 0-5 rubrics
    binary_rubric: str  # the 0/1 rubric on the label sets
    rubrics_on_label_sets: bool
    n_judge_runs: int
    judge_temperature: float
    judge_max_tokens: int
    concurrency: int
    judge_server_threads: int  # 0: all cores
    timeout_s: float
    max_retries: int
    max_items_per_set: int  # -1: all
    n_swap_probes: int  # model-answer swap probes (information)
    n_good_probes: int  # known-good answers scored with their own and another item's reference (validity's check)
    offline_scorers: list  # offline judges by name (judge/scorers.py): learned_v2 (default), facets_v2
    llm_graded_sets: list  # graded sets (judge/graded/<name>.jsonl) the LLM judges are scored on; [] for none
    llm_graded_max_items: int  # items per graded set the LLM judges score (-1: all)
    min_label_similarity: float
    price_table: dict  # model -> [usd per 1M prompt tokens, usd per 1M completion tokens]

    def __post_init__(self) -> None:
        problems = check_types(self)
        if problems:  # the value checks below assume the right types
            raise ValueError("judge settings:\n  - " + "\n  - ".join(problems))
        graded = [r for r, top in RUBRICS.items() if top > 1]
        binary = [r for r, top in RUBRICS.items() if top == 1]
        checks = [(bool(self.rubrics) and all(r in graded for r in self.rubrics),
                   f"rubrics={self.rubrics!r}: one or more 0-5 rubrics of {', '.join(graded)}"),
                  (self.binary_rubric in binary, f"binary_rubric={self.binary_rubric!r}: one of {', '.join(binary)}"),
                  (bool(self.judge_name.strip()), "judge_name is empty: it names the judge's scores and cache"),
                  (self.n_judge_runs >= 1, f"n_judge_runs={self.n_judge_runs}: must be >= 1"),
                  (self.judge_temperature >= 0, f"judge_temperature={self.judge_temperature}: must be >= 0"),
                  (self.judge_max_tokens >= 1, f"judge_max_tokens={self.judge_max_tokens}: must be >= 1"),
                  (self.concurrency >= 1, f"concurrency={self.concurrency}: must be >= 1"),
                  (self.judge_server_threads >= 0, f"judge_server_threads={self.judge_server_threads}: >= 0 (0: all)"),
                  (self.timeout_s > 0, f"timeout_s={self.timeout_s}: must be > 0"),
                  (self.max_retries >= 0, f"max_retries={self.max_retries}: must be >= 0"),
                  (self.max_items_per_set >= -1, f"max_items_per_set={self.max_items_per_set}: >= 0, or -1 for all"),
                  (self.n_swap_probes >= 0, f"n_swap_probes={self.n_swap_probes}: must be >= 0"),
                  (self.n_good_probes >= 0, f"n_good_probes={self.n_good_probes}: must be >= 0"),
                  (all(x in SCORERS for x in self.offline_scorers),
                   f"offline_scorers={self.offline_scorers!r}: names of {', '.join(SCORERS)}"),
                  (all(isinstance(x, str) and (GRADED_DIR / f"{x}.jsonl").is_file() for x in self.llm_graded_sets),
                   f"llm_graded_sets={self.llm_graded_sets!r}: names of sets in judge/graded/ "
                   f"({', '.join(sorted(p.stem for p in GRADED_DIR.glob('*.jsonl')))})"),
                  (self.llm_graded_max_items >= -1, f"llm_graded_max_items={self.llm_graded_max_items}: >= 0, or -1"),
                  (-1 <= self.min_label_similarity <= 1,
                   f"min_label_similarity={self.min_label_similarity}: a cosine similarity, within -1..1"),
                  *extra_judge_checks(self.extra_judges, self.judge_name)]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ValueError("judge settings:\n  - " + "\n  - ".join(problems))

    @property
    def specs(self) -> list[dict[str, Any]]:
        """The judge endpoints in order: the main judge (empty base_url: the embedded server), then the extras,
        each with all of JUDGE_KEYS."""
        main = {"name": self.judge_name, "base_url": self.judge_base_url, "model": self.judge_model,
                "api_key_env": self.judge_api_key_env}
        return [main, *({"api_key_env": EXTRA_DEFAULT_KEY_ENV, **extra} for extra in self.extra_judges)]


def extra_judge_checks(extra: list[Any], main_name: str) -> list[tuple[bool, str]]:
    """(ok, message) per problem of the extra judges: a mapping each, with a name, base_url and model (strings),
    no unknown key, and a name no other judge has (scores, ledgers and caches are kept per name)."""
    checks: list[tuple[bool, str]] = []
    names = [main_name]
    for i, spec in enumerate(extra):
        where = f"extra_judges[{i}]"
        if not isinstance(spec, dict):
            checks.append((False, f"{where}={spec!r}: a mapping with {', '.join(JUDGE_KEYS[:3])}"))
            continue
        for key in spec:
            if key not in JUDGE_KEYS:
                hint = difflib.get_close_matches(str(key), JUDGE_KEYS, n=1)
                checks.append((False, f"{where}: unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint
                                                                       else f"; known: {', '.join(JUDGE_KEYS)}")))
        missing = [k for k in JUDGE_KEYS[:3] if not isinstance(spec.get(k), str)]
        checks.append((not missing, f"{where}: needs {', '.join(missing)} as string(s) (base_url '' = embedded)"))
        checks.append((isinstance(spec.get("api_key_env", ""), str),
                       f"{where}: api_key_env is the name of an environment variable, a string"))
        if isinstance(spec.get("name"), str):
            checks.append((spec["name"] not in names, f"{where}: judge name {spec['name']!r} is used twice"))
            names.append(spec["name"])
    return checks
