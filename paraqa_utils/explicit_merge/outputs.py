"""Stage 03's steps after the mixtures: the example blocks, test-set files, the leakage gate, exports, metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from paraqa_utils import runs
from paraqa_utils.explicit_merge import exports, mixtures
from paraqa_utils.explicit_merge import labels as em
from paraqa_utils.explicit_merge.config import MergeConfig


def block_examples(anns: dict[str, dict], include_gender: bool, n_segments: int = 2) -> str:
    """One training clip's explicit block (its first segments) in each verbalisation mode, ready to print."""
    example = next((a for a in anns.values() if a["split"] == "train"), None)
    if example is None:
        raise em.MergeError("no annotated clip in the training split: nothing to show an explicit block for")
    bins = em.label_bins(anns.values())
    return "\n".join(f"--- {mode}\n{em.verbalise(example['segments'][:n_segments], mode, bins, include_gender)}"
                     for mode in em.MODES)


def mixture_table(counts: dict[str, dict[str, int]]) -> pd.DataFrame:
    """Condition x task example counts, with a total column."""
    mix = pd.DataFrame(counts).fillna(0).astype(int).T
    mix["total"] = mix.sum(axis=1)
    return mix


def write_test_sets(stage: runs.Stage, cfg: MergeConfig, clips: dict, anns: dict, qa_by_clip: dict[str, list[dict]],
                    bins: dict) -> tuple[dict[str, list[dict]], dict[str, Path], dict[str, int], dict[str, int]]:
    """Build the test sets (test split only, at most cfg.max_test_clips clips; plus `cpqa_human` when
    cfg.human_qa_path names a human-written set) and write each to test_<set>.jsonl.
    Returns (items per set, paths per set, explicit-block counts of the human set or {}, clips skipped per reason:
    `asr_no_text` = test clips without a ground-truth transcript, so without an `asr` item)."""
    mode, include_gender = cfg.explicit_mode, cfg.explicit_gender
    tests = mixtures.build_test_sets(clips, anns, qa_by_clip, em.load_bank(em.REFERENCE_FILE),
                                     em.load_bank(em.TEMPLATES_FILE), cfg.seed, mode, bins, include_gender,
                                     cfg.max_test_clips)
    human_blocks: dict[str, int] = {}
    if cfg.human_qa_path:
        tests["cpqa_human"], human_blocks = mixtures.human_test_set(cfg.human_qa_path, cfg.audio_root, anns,
                                                                    mode, bins, include_gender)
    paths = {name: stage.dir / f"test_{name}.jsonl" for name in tests}
    for name, items in tests.items():
        runs.write_jsonl(paths[name], items)
    n_clips = len(mixtures.held_out_clip_ids(clips, anns, cfg.seed, cfg.max_test_clips))
    return tests, paths, human_blocks, {"asr_no_text": n_clips - len(tests["asr"])}


def types_per_test_set(tests: dict[str, list[dict]]) -> pd.DataFrame:
    """Items per (test set, question type)."""
    rows = [{"test_set": n, "question_type": it["question_type"]} for n, items in tests.items() for it in items]
    return pd.DataFrame(rows).value_counts().rename("items").to_frame()


def check_leakage(stage: runs.Stage, cfg: MergeConfig, train_paths: dict[str, Path], tests: dict[str, list[dict]],
                  clips: dict, anns: dict, bins: dict) -> dict[str, Any]:
    """Write leakage.json and fail the stage (MergeError, listing the problems) if any guard tripped; explicit
    blocks are checked against the annotator's output verbalised as cfg says."""
    leak = mixtures.leakage_report(train_paths, tests, clips, anns, cfg.explicit_mode, bins, cfg.explicit_gender,
                                   em.load_bank(em.TEMPLATES_FILE)["words"])
    runs.write_json(stage.dir / "leakage.json", leak)
    if not leak["ok"]:
        raise em.MergeError("leakage guard tripped:\n" + "\n".join(leak["problems"]))
    return leak


def write_exports(stage: runs.Stage, train_paths: dict[str, Path], test_paths: dict[str, Path],
                  formats: Iterable[str]) -> dict[str, dict[str, int]]:
    """Every training file and test set under exports/ in each format (+ LLaMA-Factory's dataset_info.json); test
    sets as `_plain` and `_explicit` files; returns rows written per output name and format."""
    formats, counts, rejects = list(formats), {}, []
    for p in [*train_paths.values(), *test_paths.values()]:
        counts.update(exports.export_file(p, stage.dir / "exports", stage.run_dir, formats, rejects))
    runs.write_jsonl(stage.dir / "exports" / "rejects.jsonl", rejects)  # rows left out, with the reason
    if "llamafactory" in formats:
        exports.write_llamafactory_info(stage.dir / "exports", counts)
    return counts


def mixture_metrics(counts: dict[str, dict[str, int]], tests: dict[str, list[dict]]) -> dict[str, Any]:
    """The metrics.json figures on sizes: examples per condition and task, items per test set, cpqa_ref types."""
    return {"conditions": {c: {"n_examples": int(sum(v.values())), **v} for c, v in counts.items()},
            "test_sets": {n: len(v) for n, v in tests.items()},
            "cpqa_ref_types": pd.Series([it["question_type"] for it in tests["cpqa_ref"]]).value_counts().to_dict()}


def merge_metrics(cfg: MergeConfig, counts: dict[str, dict[str, int]], tests: dict[str, list[dict]],
                  dropped: dict[str, int], leak: dict[str, Any], human_blocks: dict[str, int],
                  test_skipped: dict[str, int]) -> dict[str, Any]:
    """Everything stage 03 puts in metrics.json: the sizes (mixture_metrics), the dropped inputs, the test clips
    skipped by a test set (write_test_sets), the leakage verdict, how the explicit block was built, and the human
    set's explicit-block counts."""
    return {**mixture_metrics(counts, tests), "dropped_inputs": dict(dropped), "test_skipped": dict(test_skipped),
            "leakage_ok": leak["ok"],
            "explicit_mode": cfg.explicit_mode, "explicit_gender": cfg.explicit_gender,
            "template_label_source": cfg.template_label_source, "cpqa_human_explicit_blocks": human_blocks}
