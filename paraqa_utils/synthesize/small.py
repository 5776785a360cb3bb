"""Stage 02's small-model prompt profile (`prompt_profile: small`): one pair per call, for generators such as the
embedded SmolLM2-135M that cannot follow the large profile's multi-pair prompt.

Each planned pair gets one stretch of speech (consecutive segments with the same emotion and gender), its words and
its voice said in plain words the model can copy (no time codes, no numbers), two worked examples of the same
question type as earlier chat turns (`prompts/small_pairs_v1.yaml`, our wording), and a JSON grammar that leaves
only a question ending in "?" and an answer. The evidence of a pair is the stretch it was given, not a number the
model writes. Pairs are single-observation ("simple"): the plan's multi-step share is not asked of a small model.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from paraqa_utils import runs
from paraqa_utils.llm import LLMRequest, LLMResult, schema_error
from paraqa_utils.prompts import path as prompt_path
from paraqa_utils.text import UNUSABLE_EMOTIONS, segment_words

PROFILES = ("auto", "small", "large")
TYPES = ("C", "CE", "CG", "E", "D", "G")
MAX_WORDS = 30  # words of one stretch shown to the model (longer stretches are cut at a word)
CHUNK_WORDS = 8  # a stretch is cut into pieces of at least this many words [decided]
MIN_WORDS = 3  # a stretch with fewer words gives a C/CE/CG question nothing to be about
GENDER_NOUN = {"female": "a woman", "male": "a man"}
GENDER_SLOT = {"female": "woman|female", "male": "man|male"}
# (low, middle, high) words per dimension, cut at 0.4 / 0.6 of the annotator's 0-1 scale [decided]
DELIVERY = (("arousal", ("quiet", "even", "lively")), ("dominance", ("hesitant", "steady", "forceful")),
            ("valence", ("strained", "plain", "bright")))
NEEDS = {"C": "words", "CE": "emotion", "CG": "gender", "E": "emotion", "D": "emotion", "G": "gender"}


class SmallPromptError(ValueError):
    """A small-profile prompt file without a system text, an input template or examples for a type."""


@dataclass(frozen=True)
class SmallPrompt:
    path: Path
    sha256: str
    system: str
    input: str
    types: dict  # type -> {"ask": str, "examples": [{words, voice, delivery, question, answer}]}

    @property
    def name(self) -> str:
        return self.path.name

    def messages(self, question_type: str, words: str, voice: str) -> list[dict[str, str]]:
        """System, the type's worked examples as earlier turns, then this stretch."""
        spec = self.types[question_type]
        msgs = [{"role": "system", "content": self.system}]
        for ex in spec["examples"]:
            shown = f"{ex['voice']}; {ex['delivery']}" if ex.get("delivery") else ex["voice"]
            msgs.append({"role": "user", "content": self.user(spec["ask"], ex["words"], shown)})
            msgs.append({"role": "assistant", "content": json.dumps(
                {"question": ex["question"], "answer": ex["answer"]})})
        msgs.append({"role": "user", "content": self.user(spec["ask"], words, voice)})
        return msgs

    def user(self, ask: str, words: str, voice: str) -> str:
        return self.input.replace("$words", words).replace("$voice", voice).replace("$ask", ask)


def load_small_prompt(name: str | Path) -> SmallPrompt:
    path = prompt_path(name)
    data = yaml.safe_load(path.read_text()) or {}
    problems = [f"no '{k}' text" for k in ("system", "input") if not str(data.get(k) or "").strip()]
    types = data.get("types") or {}
    problems += [f"type {t}: needs 'ask' and at least one example with words, voice, question, answer"
                 for t in TYPES if not (types.get(t, {}).get("ask") and types[t].get("examples") and all(
                     all(ex.get(k) for k in ("words", "voice", "question", "answer")) for ex in types[t]["examples"]))]
    if problems:
        raise SmallPromptError(f"{path.name}: " + "; ".join(problems))
    return SmallPrompt(path, runs.sha256_file(path), data["system"].strip(), data["input"].strip(), types)


def resolve_profile(profile: str, llm_base_url: str) -> str:
    """`auto` is `small` for the embedded generator (no `llm_base_url`) and `large` for a user's endpoint."""
    if profile not in PROFILES:
        raise ValueError(f"prompt_profile: '{profile}' is not one of {', '.join(PROFILES)}")
    return profile if profile != "auto" else ("large" if llm_base_url.strip() else "small")


def delivery_words(seg: dict[str, Any]) -> str:
    """'quiet, hesitant and strained' from the segment's dimensions (0-1), or '' when it has none."""
    words = [w[(v >= 0.4) + (v > 0.6)] for dim, w in DELIVERY if (v := seg.get(dim)) is not None]
    return ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else "".join(words)


def stretches(ann: dict[str, Any]) -> list[dict[str, Any]]:
    """Runs of consecutive segments with the same emotion and gender, cut at segment boundaries into pieces of at
    least CHUNK_WORDS words (so a long one-mood clip gives several things to ask about), with words and voice."""
    segs, said = ann.get("segments") or [], segment_words(ann)
    pieces: list[list[int]] = []
    for i, s in enumerate(segs):
        same = pieces and all(segs[pieces[-1][-1]].get(k) == s.get(k) for k in ("emotion", "gender"))
        if same and sum(len(said[j]) for j in pieces[-1]) < CHUNK_WORDS:
            pieces[-1].append(i)
        elif same and sum(len(said[j]) for j in range(i, len(segs))) < CHUNK_WORDS and all(
                segs[j].get(k) == s.get(k) for j in range(i, len(segs)) for k in ("emotion", "gender")):
            pieces[-1].append(i)  # a short tail of the same voice joins the piece before it
        else:
            pieces.append([i])
    out = []
    for idx in pieces:
        ws = [w for i in idx for w in said[i]]
        mid = segs[idx[len(idx) // 2]]
        emotion = mid.get("emotion") if mid.get("emotion") not in UNUSABLE_EMOTIONS else None
        voice = ", ".join(x for x in (GENDER_NOUN.get(mid.get("gender") or ""),
                                      f"sounding {emotion}" if emotion else "") if x) or "a voice"
        dims = {d: sum(segs[i][d] for i in idx) / len(idx) for d in ("valence", "arousal", "dominance")
                if all(segs[i].get(d) is not None for i in idx)}
        delivery = delivery_words(dims)
        out.append({"segments": idx, "words": " ".join(ws[:MAX_WORDS]), "n_words": len(ws), "emotion": emotion,
                    "gender": mid.get("gender"), "voice": f"{voice}; {delivery}" if delivery else voice})
    return out


def usable(st: dict[str, Any], question_type: str) -> bool:
    need = NEEDS[question_type]
    return st["n_words"] >= MIN_WORDS and (need == "words" or bool(st[need]))


def assign(plan: Sequence[tuple[str, str]], sts: list[dict[str, Any]], seed: str) -> list[int | None]:
    """A stretch index per planned pair: the usable ones in a seeded order, each used once before any repeats."""
    rng, used = random.Random(seed), [0] * len(sts)
    order = list(range(len(sts)))
    rng.shuffle(order)
    out: list[int | None] = []
    for qtype, _ in plan:
        cands = [i for i in order if usable(sts[i], qtype)]
        pick = min(cands, key=lambda i: used[i]) if cands else None
        if pick is not None:
            used[pick] += 1
        out.append(pick)
    return out


TEXT = r'[^"\\]'  # a character the JSON grammar may put in a slot (no quote or backslash to escape)
TEXT_Q = TEXT.replace("]", "?]")  # ... and no question mark before the end
QUESTION = {"type": "string", "pattern": rf"^[A-Z]{TEXT_Q}{{8,160}}[?]$"}  # one question, ends in ?


def slot_pattern(opener: str) -> str:
    """An answer that opens with `opener` (which names the label), then a word break and the model's own words."""
    return rf"^{opener}([^a-zA-Z\"\\]{TEXT}{{0,200}})?$"


# How a question of each type may open (our design): the grammar fixes the first words, the model writes the rest.
# {who} is "the man" / "the woman" from the annotation, or "the speaker" without one.
OPENERS = {"C": "What (does|did) {who} (say|mention|talk about|ask)",
           "CE": "(Why|How) (does|did) {who} (sound|feel)",
           "CG": "(Who|Which voice) (says|mentions|asks|talks about)",
           "E": "(How does|What feeling does|Which mood does) (the|this) (voice|speaker)",
           "D": "(How|In what way) (does|is) (the|this) (voice|speaker|delivery)",
           "G": "(Is|Does) (the|this) (voice|speaker)"}
# How the answer of a label-bearing type opens: it names the annotated emotion or gender, the rest is the model's.
ANSWER_OPENERS = {"CE": "({he}|{who_cap}) (sounds|seems|feels|is) {label}",
                  "E": "(The voice|{he}) (sounds|seems) {label}",
                  "CG": "(The|A) ({label})", "G": "(It is|That is) (a|the) ({label})"}


def schema(question_type: str, stretch: dict[str, Any]) -> dict[str, Any]:
    """The reply's grammar: a question that opens the way its type asks (OPENERS) and ends in "?", and an answer that, for the label-bearing types, names the stretch's annotated emotion (CE, E) or
    gender (CG, G): the slots a small model otherwise gets wrong."""
    need = NEEDS[question_type]
    who = {"female": "the woman", "male": "the man"}.get(stretch.get("gender") or "", "the speaker")
    question = {"type": "string", "pattern": rf"^{OPENERS[question_type].format(who=who)} {TEXT_Q}{{3,120}}[?]$"}
    he = {"female": "She", "male": "He"}.get(stretch.get("gender") or "", "The speaker")
    answer = {"type": "string", "pattern": rf"^[A-Z]{TEXT}{{2,250}}$"}
    if question_type in ANSWER_OPENERS:
        label = stretch["emotion"] if need == "emotion" else GENDER_SLOT[stretch["gender"]]
        answer = {"type": "string", "pattern": slot_pattern(ANSWER_OPENERS[question_type].format(
            he=he, who=who, who_cap=who[0].upper() + who[1:], label=label))}
    return {"type": "object", "additionalProperties": False, "required": ["question", "answer"],
            "properties": {"question": question, "answer": answer}}


def requests(ann: dict[str, Any], kind: str, plan: Sequence[tuple[str, str]], prompt: SmallPrompt,
             sampling: dict[str, Any]) -> tuple[list[LLMRequest], list[dict[str, Any]]]:
    """One request per planned pair that has a stretch to be about; a reject for each that has none."""
    sts = stretches(ann)
    reqs, rejects = [], []
    for i, ((qtype, _), pick) in enumerate(zip(plan, assign(plan, sts, f"{sampling.get('seed')}:{kind}:{ann['clip_id']}"))):
        if pick is None:
            rejects.append({"clip_id": ann["clip_id"], "kind": kind, "qa_id": f"{kind}-{ann['clip_id']}-{i:02d}",
                            "filter": "input", "reason": f"no stretch with >= {MIN_WORDS} words and the "
                                                         f"{NEEDS[qtype]} a {qtype} question needs: no call made"})
            continue
        st = sts[pick]
        # the seed moves with the pair, so two pairs about one stretch are two draws, not one cached reply
        draw = {**sampling, "seed": int(sampling.get("seed") or 0) + i}
        reqs.append(LLMRequest(messages=prompt.messages(qtype, st["words"], st["voice"]),
                               json_schema=schema(qtype, st), schema_name=f"{kind}_pair", **draw,
                               tag={"clip_id": ann["clip_id"], "kind": kind, "index": i, "question_type": qtype,
                                    "segments": st["segments"], "sampling": draw}))
    return reqs, rejects


def to_record(res: LLMResult, ann: dict[str, Any], prompt: SmallPrompt,
              json_schema: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pair of one reply, or a reject naming what broke (the call, the grammar, a slot)."""
    tag = res.tag
    qa_id = f"{tag['kind']}-{ann['clip_id']}-{tag['index']:02d}"
    base = {"clip_id": ann["clip_id"], "kind": tag["kind"], "qa_id": qa_id, "cache_key": res.key}
    if not isinstance(res.data, dict):
        return [], [{**base, "filter": "llm", "reason": f"{res.error_kind}: {res.error}"}]
    if err := schema_error(json_schema, res.data):
        return [], [{**base, "filter": "schema", "reason": f"small-profile reply: {err}",
                     "question": res.data.get("question")}]
    return [{"qa_id": qa_id, "clip_id": ann["clip_id"], "split": ann.get("split"), "kind": tag["kind"],
             "question_type": tag["question_type"], "reasoning": "simple",
             "question": res.data["question"].strip(), "answer": res.data["answer"].strip(),
             "evidence_segments": tag["segments"], "model": res.model, "prompt_profile": "small",
             "prompt_file": prompt.name, "prompt_sha256": prompt.sha256, "sampling": tag["sampling"],
             "cache_key": res.key}], []
