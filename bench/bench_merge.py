"""Merge + export throughput on a synthetic 100,000-row mixture, and peak memory.

    .venv/bin/python bench/bench_merge.py [--rows 100000]

Builds fake 00/01/02 artifacts (no audio is read by this stage), then times writing the `implicit` condition
(asr + emotion + gender + pqa_star + cpqa) and exporting it as chat JSONL and ms-swift JSONL.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils import params, runs  # noqa: E402
from paraqa_utils.explicit_merge import MergeConfig  # noqa: E402
from paraqa_utils.explicit_merge import exports
from paraqa_utils.explicit_merge import mixtures  # noqa: E402


def fake_upstream(run_dir: Path, n_clips: int) -> None:
    emos = ["neutral", "happy", "sad", "angry", "fearful", "surprised"]
    def clips():
        for i in range(n_clips):
            yield {"clip_id": f"c{i}", "audio_path": f"00_corpus/audio/c{i}.wav", "split": "train",
                   "segments": [{"start_s": 0.0, "end_s": 2.0, "speaker": f"v{i % 9}", "gender": "female",
                                 "emotion": emos[i % 6], "valence": 0.5, "arousal": 0.5, "dominance": 0.5,
                                 "text": f"Sentence {i}.", "sentence_id": f"s{i}"}]}
    def anns():
        for c in clips():
            yield {"clip_id": c["clip_id"], "split": "train", "audio_path": c["audio_path"], "kept": True,
                   "words": [], "segments": [{k: v for k, v in c["segments"][0].items()
                                              if k not in ("text", "speaker", "sentence_id")}]}
    def qa(kind, per_clip):
        for i in range(n_clips):
            for k in range(per_clip):
                yield {"qa_id": f"{kind}-{i}-{k}", "clip_id": f"c{i}", "kind": kind, "question_type": "CE",
                       "question": f"Why does the speaker sound like that in part {k}?", "answer": "Because of it."}
    for name, files in (("00_corpus", {"clips.jsonl": clips()}), ("01_annotate", {"annotations.jsonl": anns()}),
                        ("02_synthesize", {"qa_pqa_star.jsonl": qa("pqa_star", 2), "qa_cpqa.jsonl": qa("cpqa", 5)})):
        st = runs.Stage(run_dir, name)
        for fname, recs in files.items():
            runs.write_jsonl(st.dir / fname, recs)
        st.finish()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    n_clips = args.rows // 10  # asr + emotion + gender + 2 pqa* + 5 cpqa = 10 rows per clip
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PARAQA_RUNS"] = tmp
        run = runs.make_run_dir("bench", "merge")
        fake_upstream(run, n_clips)
        st = runs.Stage(run, "03_explicit_merge")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start() if os.environ.get("BENCH_TRACEMALLOC") else None
        t0 = time.perf_counter()
        clips, anns, qa_by_clip, _ = mixtures.load_inputs(st)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        cfg = params.stage_config(MergeConfig, "03_explicit_merge", {"conditions": ["implicit"]})
        paths, counts, _ = mixtures.build_conditions(st, cfg, clips, anns, qa_by_clip)
        t_merge = time.perf_counter() - t0
        n = sum(counts["implicit"].values())
        t0 = time.perf_counter()
        exports.export_file(paths["implicit"], st.dir / "exports", run, ["chat", "swift"])
        t_export = time.perf_counter() - t0
        _, peak_py = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)
        tracemalloc.stop()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"rows in the implicit condition: {n:,} from {n_clips:,} clips")
    print(f"load inputs (hash-checked): {t_load:.2f} s")
    print(f"merge:  {n / t_merge:,.0f} rows/s ({t_merge:.2f} s)")
    print(f"export (chat + swift): {2 * n / t_export:,.0f} rows/s ({t_export:.2f} s)")
    heap = f"peak Python heap {peak_py / 2**20:.1f} MiB; " if peak_py else ""
    print(f"memory during load+merge+export: {heap}process max RSS grew by {(rss1 - rss0) / 1024:.1f} MiB "
          "(BENCH_TRACEMALLOC=1 adds the Python heap peak, at several times the run time)")
    print("(inputs are indexed by clip in memory; examples are streamed to disk, never held)")


if __name__ == "__main__":
    main()
