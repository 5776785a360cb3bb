"""Stage 02 (the implicit method): prompts from annotated transcripts, one LLM call per clip and kind, QA records.

Two kinds (PAPER.md step 2): `cpqa` (contextual paralinguistic QA: content C, content+emotion CE, content+gender CG)
and `pqa_star` (paralinguistic QA without the contextual reasoning: emotion E, delivery D, gender G). Each call
asks for a planned mix of question types and of simple vs multi-step reasoning [decided], returns JSON checked
against a schema, and every QA keeps its clip, segments, model, prompt file and hash, sampling and cache key.
The post-filters live in `filters`.
"""
from __future__ import annotations

import dataclasses
import math
import random
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from paraqa_utils import runs
from paraqa_utils.synthesize import small
from paraqa_utils.params import check_types
from paraqa_utils.text import UNUSABLE_EMOTIONS, segment_words
from paraqa_utils.prompts import path as prompt_path
from paraqa_utils.llm import LLMClient, LLMRequest, LLMResult, schema_error

QUESTION_TYPES = {"cpqa": ("C", "CE", "CG"), "pqa_star": ("E", "D", "G")}
REASONING = ("simple", "multi_step")
SPAN = re.compile(r"^\s*\[\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*s\s*\]")


@dataclass(frozen=True)
class Prompt:
    """A versioned template: `=== system ===` / `=== user ===` sections with `$name` placeholders."""
    path: Path
    text: str
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    def render(self, **values: Any) -> list[dict[str, str]]:
        parts = re.split(r"^=== (system|user) ===\s*$", self.text, flags=re.M)
        msgs = [{"role": role, "content": string.Template(body.strip()).substitute(values)}
                for role, body in zip(parts[1::2], parts[2::2])]
        if not msgs or msgs[-1]["role"] != "user":
            raise ValueError(f"{self.name}: a prompt needs '=== user ===' (and optionally '=== system ===') sections")
        return msgs


def load_prompt(name: str | Path) -> Prompt:
    path = prompt_path(name)
    return Prompt(path, path.read_text(), runs.sha256_file(path))


MAX_QUESTION_CHARS, MAX_ANSWER_CHARS = 300, 600  # schema bounds of one pair


@dataclass
class SynthesizeConfig:
    """Everything that shapes the requests (and so the cache keys): each field a parameter of 02_synthesize.ipynb
    of the same name, with no default here (its one default is the notebook's parameters cell)."""
    kinds: list  # of QUESTION_TYPES' keys
    max_clips: int  # 0: every kept clip
    n_qa_cpqa_per_clip: int
    n_qa_pqa_star_per_clip: int
    # CPQA mix implied by the paper's per-type scores (~16 % C, 65 % CE, 19 % CG); PQA* mix is ours [decided].
    cpqa_type_weights: dict
    pqa_star_type_weights: dict
    multi_step_fraction: float
    temperature: float
    top_p: float
    max_tokens: int
    cpqa_prompt: str
    pqa_star_prompt: str
    prompt_profile: str  # small, large, or auto (small for the embedded generator); see synthesize.small
    small_prompt: str  # the small profile's prompt file (one for both kinds)
    seed: int

    def __post_init__(self) -> None:
        problems = check_types(self)
        if not problems:
            problems = [f"kinds: unknown kind '{k}' (known: {', '.join(QUESTION_TYPES)})" for k in self.kinds
                        if k not in QUESTION_TYPES]
            problems += [f"prompt_profile: '{self.prompt_profile}' is not one of {', '.join(small.PROFILES)}"
                         ] if self.prompt_profile not in small.PROFILES else []
        if problems:
            raise ValueError("synthesis settings:\n  - " + "\n  - ".join(problems))

    @property
    def n_qa(self) -> dict[str, int]:
        """Pairs asked per clip, by kind."""
        return {kind: getattr(self, f"n_qa_{kind}_per_clip") for kind in QUESTION_TYPES}

    @property
    def prompt_files(self) -> dict[str, str]:
        """The prompt file of each kind under the resolved profile (call `with_profile` first for `auto`)."""
        if self.prompt_profile == "small":
            return dict.fromkeys(QUESTION_TYPES, self.small_prompt)
        return {kind: getattr(self, f"{kind}_prompt") for kind in QUESTION_TYPES}

    @property
    def type_weights(self) -> dict[str, dict[str, float]]:
        return {kind: getattr(self, f"{kind}_type_weights") for kind in QUESTION_TYPES}

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed}


def with_profile(cfg: SynthesizeConfig, llm_base_url: str) -> SynthesizeConfig:
    """The settings with `auto` resolved: `small` for the embedded generator, `large` for a user's endpoint."""
    return dataclasses.replace(cfg, prompt_profile=small.resolve_profile(cfg.prompt_profile, llm_base_url))


def load_annotations(path: Path, max_clips: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Kept clips (in file order, at most `max_clips` if > 0) and rejects for kept clips that have no words."""
    clips, rejects = [], []
    for ann in runs.read_jsonl(path):
        if not ann.get("kept"):
            continue
        if max_clips and len(clips) + len(rejects) >= max_clips:
            break
        if not any(str(w.get("w", "")).strip() for w in ann.get("words") or []):
            rejects.append({"clip_id": ann["clip_id"], "kind": "*", "filter": "input",
                            "reason": "annotation has no words: nothing to ask about, no call made"})
            continue
        clips.append(ann)
    return clips, rejects


def numbered_transcript(ann: dict[str, Any]) -> tuple[str, list[list[int]]]:
    """The clip's annotated transcript with numbered lines, and the segment indices each line covers.

    01_annotate merges runs of windows with equal labels into one line, so lines map to segments by time."""
    segs = ann.get("segments") or []
    lines = [ln for ln in (ann.get("annotated_transcript") or "").splitlines() if ln.strip()]
    if not lines:  # no serialised form: one plain line per segment, words by midpoint
        lines = []
        for s, ws in zip(segs, segment_words(ann)):
            lines.append(f"[{s['start_s']:.1f}-{s['end_s']:.1f} s] ({_label_text(s)}) {' '.join(ws) or '…'}")
    covered = []
    for ln in lines:
        m = SPAN.match(ln)
        t0, t1 = (float(m.group(1)) - 0.05, float(m.group(2)) + 0.05) if m else (math.inf, -math.inf)
        covered.append([i for i, s in enumerate(segs) if t0 <= (s["start_s"] + s["end_s"]) / 2 <= t1])
    return "\n".join(f"{i + 1}. {ln.strip()}" for i, ln in enumerate(lines)), covered


def _label_text(seg: dict[str, Any]) -> str:
    dims = " ".join(f"{d} {seg[d]:.2f}" for d in ("valence", "arousal", "dominance") if seg.get(d) is not None)
    return "; ".join(x for x in (seg.get("gender"), ", ".join(y for y in (seg.get("emotion"), dims) if y)) if x)


def available_types(kind: str, ann: dict[str, Any]) -> tuple[str, ...]:
    """Types the annotation can support: no emotion questions without a usable emotion, no gender ones without a gender."""
    segs = ann.get("segments") or []
    has_emotion = any(s.get("emotion") not in UNUSABLE_EMOTIONS for s in segs)
    has_gender = any(s.get("gender") for s in segs)
    needs = {"CE": has_emotion, "CG": has_gender, "E": has_emotion, "D": has_emotion, "G": has_gender}
    return tuple(t for t in QUESTION_TYPES[kind] if needs.get(t, True))


def pair_plan(kind: str, ann: dict[str, Any], cfg: SynthesizeConfig) -> list[tuple[str, str]]:
    """(type, reasoning) per requested pair: stratified sampling, so each type gets floor or ceil of n * weight
    per clip and the set-wide mix follows the weights; seeded per clip, so reruns ask the same."""
    n = cfg.n_qa[kind]
    types = available_types(kind, ann)
    weights = {t: cfg.type_weights[kind].get(t, 0.0) for t in types}
    if not sum(weights.values()):
        weights = dict.fromkeys(types, 1.0)
    rng = random.Random(f"{cfg.seed}:{kind}:{ann['clip_id']}")
    names, total, u = list(weights), sum(weights.values()), rng.random()
    bounds = [sum(list(weights.values())[:i + 1]) / total for i in range(len(names))]
    plan = [names[min(sum(b <= (u + k) / n for b in bounds), len(names) - 1)] for k in range(n)]
    n_multi = int(n * cfg.multi_step_fraction + rng.random())
    multi = set(rng.sample(range(n), min(n, n_multi)))
    rng.shuffle(plan)
    return [(t, REASONING[i in multi]) for i, t in enumerate(plan)]


def qa_item_schema(types: Sequence[str], n_lines: int, cfg: SynthesizeConfig) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False,
            "required": ["question_type", "reasoning", "question", "answer", "evidence"],
            "properties": {
                "question_type": {"type": "string", "enum": list(types)},
                "reasoning": {"type": "string", "enum": list(REASONING)},
                "question": {"type": "string", "minLength": 5, "maxLength": MAX_QUESTION_CHARS},
                "answer": {"type": "string", "minLength": 1, "maxLength": MAX_ANSWER_CHARS},
                # Line numbers out of range are dropped in to_records, not fed back: llama.cpp's grammar cannot
                # bound integers, and a stray number is no reason to lose the pair.
                "evidence": {"type": "array", "maxItems": max(1, n_lines), "items": {"type": "integer"}}}}


def qa_schema(types: Sequence[str], n_qa: int, n_lines: int, cfg: SynthesizeConfig) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["qa_pairs"],
            "properties": {"qa_pairs": {"type": "array", "minItems": n_qa, "maxItems": n_qa,
                                        "items": qa_item_schema(types, n_lines, cfg)}}}


def build_request(ann: dict[str, Any], kind: str, prompt: Prompt, cfg: SynthesizeConfig) -> LLMRequest:
    transcript, covered = numbered_transcript(ann)
    plan = pair_plan(kind, ann, cfg)
    duration = ann.get("duration_s") or max((s["end_s"] for s in ann.get("segments") or []), default=0.0)
    messages = prompt.render(transcript=transcript, n_qa=len(plan), duration_s=f"{duration:.0f}",
                             pair_plan="\n".join(f"{i + 1}. {t}, {r}" for i, (t, r) in enumerate(plan)))
    schema = qa_schema(available_types(kind, ann), len(plan), len(covered), cfg)
    return LLMRequest(messages=messages, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                      seed=cfg.seed, json_schema=schema, schema_name=f"{kind}_pairs",
                      tag={"clip_id": ann["clip_id"], "kind": kind, "covered": covered, "plan": plan})


def to_records(res: LLMResult, ann: dict[str, Any], kind: str, prompt: Prompt,
               cfg: SynthesizeConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """QA records from one reply; from an invalid reply the items that pass the item schema are kept."""
    covered = res.tag["covered"]
    base = {"clip_id": ann["clip_id"], "kind": kind}
    items = (res.data or {}).get("qa_pairs") if isinstance(res.data, dict) else None
    if not isinstance(items, list):
        return [], [{**base, "filter": "llm", "reason": f"{res.error_kind}: {res.error}", "cache_key": res.key}]
    item_schema = qa_item_schema(available_types(kind, ann), len(covered), cfg)
    qas, rejects = [], []
    for i, item in enumerate(items):
        qa_id = f"{kind}-{ann['clip_id']}-{i:02d}"
        if err := schema_error(item_schema, item):
            rejects.append({**base, "qa_id": qa_id, "filter": "schema", "cache_key": res.key,
                            "reason": f"item {i}: {err}",
                            "question": item.get("question") if isinstance(item, dict) else None})
            continue
        segs = sorted({s for line in item["evidence"] if 1 <= line <= len(covered) for s in covered[line - 1]})
        qas.append({"qa_id": qa_id, "clip_id": ann["clip_id"], "split": ann.get("split"), "kind": kind,
                    "question_type": item["question_type"], "reasoning": item["reasoning"],
                    "question": item["question"].strip(), "answer": item["answer"].strip(),
                    "evidence_segments": segs, "model": res.model, "prompt_profile": "large",
                    "prompt_file": prompt.name,
                    "prompt_sha256": prompt.sha256, "sampling": cfg.sampling(), "cache_key": res.key})
    if len(items) < cfg.n_qa[kind]:
        rejects.append({**base, "filter": "schema", "cache_key": res.key,
                        "reason": f"reply held {len(items)} of {cfg.n_qa[kind]} requested pairs"})
    return qas, rejects


def build_requests(ann: dict[str, Any], kind: str, prompt: Any,
                   cfg: SynthesizeConfig) -> tuple[list[LLMRequest], list[dict[str, Any]]]:
    """The requests of one clip and kind under the profile (large: one; small: one per planned pair), and rejects
    for planned pairs that could not be asked."""
    if cfg.prompt_profile == "small":
        return small.requests(ann, kind, pair_plan(kind, ann, cfg), prompt, cfg.sampling())
    return [build_request(ann, kind, prompt, cfg)], []


def generate(client: LLMClient, clips: Iterable[dict[str, Any]], cfg: SynthesizeConfig,
             prompts: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """All requests through the client (cached, resumable): one per clip and kind (large profile) or one per
    planned pair (small). Returns (qas, rejects, counts)."""
    if cfg.prompt_profile not in ("small", "large"):
        raise ValueError(f"prompt_profile '{cfg.prompt_profile}' is not resolved: call with_profile first")
    clips = list(clips)
    jobs, reqs, rejects = [], [], []
    for kind in cfg.kinds:
        for ann in clips:
            r, rej = build_requests(ann, kind, prompts[kind], cfg)
            jobs += [(ann, kind)] * len(r)
            reqs += r
            rejects += rej
    results = client.complete(reqs)
    qas = []
    for (ann, kind), req, res in zip(jobs, reqs, results):
        q, r = (small.to_record(res, ann, prompts[kind], dict(req.json_schema)) if cfg.prompt_profile == "small"
                else to_records(res, ann, kind, prompts[kind], cfg))
        qas += q
        rejects += r
    planned = Counter((kind, t) for kind in cfg.kinds for ann in clips for t, _ in pair_plan(kind, ann, cfg))
    counts = {"n_calls_ok": sum(r.ok for r in results), "n_calls_failed": sum(not r.ok for r in results),
              "prompt_profile": cfg.prompt_profile,
              "requested": {k: cfg.n_qa[k] * len(clips) for k in cfg.kinds},
              "planned_types": {f"{k}/{t}": n for (k, t), n in sorted(planned.items())}}
    return qas, rejects, counts
