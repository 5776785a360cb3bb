"""Build the per-condition training files and the test sets from run artifacts, streaming, with leakage guards."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from paraqa_utils.explicit_merge import labels as em
from paraqa_utils import runs
from paraqa_utils.text import dominant_label
from paraqa_utils.explicit_merge import exports
from paraqa_utils.explicit_merge.config import MergeConfig

TEST_SETS = ("cpqa_ref", "cpqa_llm", "emotion", "gender", "asr")


def index_by_clip(records: Iterable[dict[str, Any]], what: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["clip_id"] in out:
            raise em.MergeError(f"duplicate clip_id '{r['clip_id']}' in {what}")
        out[r["clip_id"]] = r
    return out


def clip_order(clip_ids: Iterable[str], seed: int) -> list[str]:
    """A seeded order of clips: caps take a fair sample without loading examples into memory."""
    return sorted(clip_ids, key=lambda c: em.stable_rng(seed, "order", c).random())


def _check_qa(qa: dict[str, Any], clips: dict[str, Any], anns: dict[str, Any], counts: Counter) -> bool:
    if qa["clip_id"] not in clips:
        counts["qa_unknown_clip"] += 1
        return False
    if qa["clip_id"] not in anns:
        counts["qa_no_annotation"] += 1
        return False
    return True


def task_stream(task: str, order: list[str], clips: dict, anns: dict, qa_by_clip: dict[str, list[dict]],
                bank: dict, seed: int, label_source: str, cap: int) -> Iterator[dict[str, Any]]:
    """Examples of one task over the training clips, in seeded clip order, stopping at cap (-1 = all)."""
    n = 0
    for cid in order:
        ann = anns.get(cid)
        if ann is None or ann.get("split") != "train":
            continue
        if task in ("asr", "emotion", "gender"):
            rows = [e for e in em.baseline_examples(clips.get(cid), ann, bank, seed, label_source) if e["task"] == task]
        else:
            rows = [{"task": task, "instruction": q["question"], "target": q["answer"], "qa_id": q["qa_id"]}
                    for q in qa_by_clip.get(cid, []) if q["kind"] == task]
        for row in rows:
            if 0 <= cap <= n:
                return
            n += 1
            yield {**row, "clip_id": cid}


def write_condition(path: Path, condition: str, sources: dict[str, Iterable[dict]], anns: dict, clips: dict,
                    explicit: bool, mode: str, bins: dict, include_gender: bool, run_dir: Path) -> Counter:
    """Stream one condition's examples to JSONL (a kill leaves only a temp file); returns counts per task."""
    counts: Counter = Counter()
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w") as f:
        for task, stream in sources.items():
            for i, ex in enumerate(stream):
                ann = anns[ex["clip_id"]]
                block = em.verbalise(ann.get("segments", []), mode, bins, include_gender) if explicit else None
                rec = {"example_id": f"{condition}:{task}:{ex['clip_id']}:{ex.get('qa_id', i)}",
                       "condition": condition, "task": task, "clip_id": ex["clip_id"],
                       "audio_path": (clips.get(ex["clip_id"]) or ann)["audio_path"],
                       "instruction": ex["instruction"], "explicit_block": block, "target": ex["target"]}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                counts[task] += 1
    tmp.replace(path)
    if not counts:
        raise em.MergeError(f"condition '{condition}' is empty: no training-split clip produced any of "
                            f"{', '.join(sources)} (check the annotate/synthesize stages and the caps)")
    return counts


def held_out_clip_ids(clips: dict, anns: dict, seed: int, max_clips: int = -1) -> list[str]:
    """The test-split clips that 01 annotated, in seeded order, at most `max_clips` (-1: all): every test set's clips."""
    ids = [c for c in clip_order(clips, seed) if clips[c].get("split") == "test" and c in anns]
    return ids if max_clips < 0 else ids[:max_clips]


def asr_item(clip: dict[str, Any], bank: dict, seed: int) -> dict[str, Any] | None:
    """One `asr` test item: an instruction from the template bank, the ground-truth transcript (the clip's segment
    texts joined) as reference, no label; None for a clip without text (write_test_sets counts those)."""
    reference = " ".join(s["text"].strip() for s in clip.get("segments", []) if (s.get("text") or "").strip())
    if not reference:
        return None
    question = em.stable_rng(seed, "asr_test", clip["clip_id"]).choice(bank["asr"])
    return {"item_id": f"asr:{clip['clip_id']}", "test_set": "asr", "question_type": "asr", "question": question,
            "reference": reference, "label": None}


def build_test_sets(clips: dict, anns: dict, qa_by_clip: dict[str, list[dict]], ref_bank: dict, bank: dict, seed: int,
               mode: str, bins: dict, include_gender: bool, max_clips: int = -1) -> dict[str, list[dict]]:
    """The test sets, on the test split only; `explicit_block` always comes from the annotator's output."""
    out: dict[str, list[dict]] = {s: [] for s in TEST_SETS}
    for cid in held_out_clip_ids(clips, anns, seed, max_clips):
        clip, ann = clips[cid], anns[cid]
        base = {"clip_id": cid, "audio_path": clip["audio_path"],
                "explicit_block": em.verbalise(ann.get("segments", []), mode, bins, include_gender)}
        asr = asr_item(clip, bank, seed)
        if asr is not None:
            out["asr"].append({**base, **asr})
        for k, it in enumerate(em.reference_items(clip, ref_bank, bank["words"], seed)):
            out["cpqa_ref"].append({**base, **it, "item_id": f"cpqa_ref:{cid}:{k}", "test_set": "cpqa_ref"})
        segs = clip.get("segments", [])
        emo, gen = dominant_label(segs, "emotion"), dominant_label(segs, "gender")
        words = bank["words"]
        if emo:
            out["emotion"].append({**base, "item_id": f"emotion:{cid}", "test_set": "emotion",
                                   "question_type": "emotion", "label": emo,
                                   "question": "What emotion does the speaker mostly express? Answer in one word.",
                                   "reference": em.fill("The speaker sounds {emotion}.", words, emotion=emo)})
        if gen and len({s.get("gender") for s in segs}) == 1:  # one definite answer only
            out["gender"].append({**base, "item_id": f"gender:{cid}", "test_set": "gender", "question_type": "gender",
                                  "label": gen, "question": "Is the speaker male or female? Answer in one word.",
                                  "reference": em.fill("The speaker is {gender_noun}.", words, gender=gen)})
        for q in qa_by_clip.get(cid, []):
            if q["kind"] == "cpqa":
                out["cpqa_llm"].append({**base, "item_id": f"cpqa_llm:{q['qa_id']}", "test_set": "cpqa_llm",
                                        "question_type": q.get("question_type"), "question": q["question"],
                                        "reference": q["answer"], "label": None})
    return out


def human_test_set(path: str | Path, audio_root: str | Path | None, anns: dict, mode: str, bins: dict,
                   include_gender: bool) -> tuple[list[dict], dict[str, int]]:
    """A human-written QA set (exports.load_human_qa) with explicit blocks from 01's annotation of its clips;
    says how many items get none (their clips were not annotated)."""
    items = exports.load_human_qa(path, audio_root)
    counts = attach_explicit_blocks(items, anns, mode, bins, include_gender)
    if counts["without_explicit_block"]:
        print(f"cpqa_human: {counts['without_explicit_block']} of {counts['items']} items are on clips 01 did not "
              "annotate, so explicit conditions see no labels for them; put those clips in the corpus's test split")
    return items, counts


def attach_explicit_blocks(items: list[dict], anns: dict, mode: str, bins: dict, include_gender: bool) -> dict[str, int]:
    """Explicit blocks for outside test items (a human-written set) from 01's annotation of the same clip_id.

    An item whose clip 01 did not annotate keeps `explicit_block: None`: its explicit conditions are then asked
    without labels, which the returned counts (and the stage's metrics) make visible."""
    n_with = 0
    for it in items:
        ann = anns.get(it["clip_id"])
        it["explicit_block"] = em.verbalise(ann.get("segments", []), mode, bins, include_gender) if ann else None
        n_with += ann is not None
    return {"items": len(items), "with_explicit_block": n_with, "without_explicit_block": len(items) - n_with}


def leakage_report(train_files: dict[str, Path], tests: dict[str, list[dict]], clips: dict, anns: dict,
                   mode: str, bins: dict, include_gender: bool, words: dict) -> dict[str, Any]:
    """Checks that fail the stage: test clips/speakers/sentences in training, labels in prompts, foreign blocks."""
    test_clips = {it["clip_id"] for items in tests.values() for it in items}

    def keys(cid: str, field: str) -> set:
        return {s.get(field) for s in clips.get(cid, {}).get("segments", []) if s.get(field) is not None}

    test_speakers = set().union(*[keys(c, "speaker") for c in test_clips]) if test_clips else set()
    test_sentences = set().union(*[keys(c, "sentence_id") or keys(c, "text") for c in test_clips]) if test_clips else set()
    problems: list[str] = []
    for cond, path in train_files.items():
        for rec in runs.read_jsonl(path):
            cid = rec["clip_id"]
            if cid in test_clips:
                problems.append(f"{cond}: test clip {cid} in training")
            elif keys(cid, "speaker") & test_speakers:
                problems.append(f"{cond}: test speaker(s) {sorted(keys(cid, 'speaker') & test_speakers)} in {cid}")
            elif (keys(cid, "sentence_id") or keys(cid, "text")) & test_sentences:
                problems.append(f"{cond}: a test script sentence is in training clip {cid}")
            if len(problems) > 20:
                break
    all_labels = {"emotion": set(words["emotion"]), "gender": set(words["gender"])}
    for items in tests.values():
        for it in items:
            if it.get("label"):
                group = "gender" if it["label"] in all_labels["gender"] else "emotion"
                # quoted speech is content the listener hears anyway ("I'm so happy!"), not a leaked label
                text = re.sub(r'"[^"]*"', " ", it["question"].lower())
                tokens = set(re.findall(r"[a-z]+", text))
                named = {lab for lab in all_labels[group] if em.label_words(lab, words) & tokens}
                if it["label"] in named and len(named) == 1:  # naming only the answer gives it away
                    problems.append(f"{it['item_id']}: its label '{it['label']}' is in the question")
            ann = anns.get(it["clip_id"])  # an outside (human) item on a clip 01 never saw carries no block
            expected = em.verbalise(ann.get("segments", []), mode, bins, include_gender) if ann else None
            if it.get("explicit_block") != expected:
                problems.append(f"{it['item_id']}: explicit block not built from the annotator's output")
    speakers_known = any(keys(c, "speaker") for c in test_clips)
    return {"ok": not problems, "problems": problems[:50], "n_test_clips": len(test_clips),
            "speakers_checked": speakers_known, "n_test_speakers": len(test_speakers),
            "n_test_sentences": len(test_sentences)}


def load_inputs(stage: runs.Stage) -> tuple[dict, dict, dict[str, list[dict]], Counter]:
    """Clips, annotations and QA of this run (hash-checked), QA grouped by clip; counts of dropped QA rows."""
    clips = index_by_clip(runs.read_jsonl(stage.input("00_corpus/clips.jsonl")), "clips.jsonl")
    anns = index_by_clip(runs.read_jsonl(stage.input("01_annotate/annotations.jsonl")), "annotations.jsonl")
    qa_by_clip: dict[str, list[dict]] = {}
    counts: Counter = Counter()
    seen: set[str] = set()
    for name in ("qa_pqa_star.jsonl", "qa_cpqa.jsonl"):
        for qa in runs.read_jsonl(stage.input(f"02_synthesize/{name}")):
            if qa["qa_id"] in seen:
                raise em.MergeError(f"duplicate qa_id '{qa['qa_id']}' in 02_synthesize/{name}")
            seen.add(qa["qa_id"])
            if _check_qa(qa, clips, anns, counts):
                qa_by_clip.setdefault(qa["clip_id"], []).append(qa)
    missing = [c for c in clips if c not in anns]
    counts["clips_without_annotation"] = len(missing)
    return clips, anns, qa_by_clip, counts


def build_conditions(stage: runs.Stage, cfg: MergeConfig, clips: dict, anns: dict,
                     qa_by_clip: dict) -> tuple[dict[str, Path], dict[str, dict[str, int]], dict]:
    """Write train_<condition>.jsonl for each of cfg.conditions plus conditions.json and label_bins.json, with
    cfg's explicit mode, gender, template label source, seed and per-task caps; returns paths, counts, bins."""
    bank = em.load_bank(em.TEMPLATES_FILE)
    bins = em.label_bins(anns.values())
    order = clip_order(anns, cfg.seed)
    mode, include_gender, caps = cfg.explicit_mode, cfg.explicit_gender, cfg.caps
    paths, counts = {}, {}
    for cond in cfg.conditions:
        spec = em.CONDITIONS[cond]
        sources = {t: task_stream(t, order, clips, anns, qa_by_clip, bank, cfg.seed, cfg.template_label_source,
                                  caps[t]) for t in spec["tasks"]}
        paths[cond] = stage.dir / f"train_{cond}.jsonl"
        counts[cond] = dict(write_condition(paths[cond], cond, sources, anns, clips, spec["explicit"], mode, bins,
                                            include_gender, stage.run_dir))
    runs.write_json(stage.dir / "conditions.json",
                    {c: {"train_file": paths[c].name, "explicit": em.CONDITIONS[c]["explicit"],
                         "tasks": list(em.CONDITIONS[c]["tasks"]), "explicit_mode": mode,
                         "explicit_gender": include_gender} for c in cfg.conditions})
    runs.write_json(stage.dir / "label_bins.json", bins)
    return paths, counts, bins
