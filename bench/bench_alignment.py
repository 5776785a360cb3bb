"""Word-boundary error of 01's word times against known utterance times (the embedded synthetic corpus records
when each utterance starts and ends), from a finished run:

    .venv/bin/python bench/bench_alignment.py [--run outputs/runs/RUN] [--align-model CTC_CHECKPOINT]

For each utterance: |first word's start - utterance start| and |last word's end - utterance end|, its words being
those whose midpoint falls inside it. Reported for the run's own word times (faster-whisper's, unless the run set
asr_align_model) and, with --align-model, for the same words re-timed by CTC forced alignment. The limit is the
frame rate of the timing source (20 ms for wav2vec2 CTC, 20 ms for Whisper's cross-attention timestamps).
Offline there is no pretrained CTC checkpoint, so the aligned figure needs a machine that reaches the hub.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils import runs  # noqa: E402
from paraqa_utils.audio import load_audio  # noqa: E402


def boundary_errors(clips: dict, words: dict) -> tuple[list[float], list[float]]:
    starts, ends = [], []
    for cid, ws in words.items():
        for seg in clips[cid].get("segments") or []:
            inside = [w for w in ws if seg["start_s"] <= (w["start_s"] + w["end_s"]) / 2 <= seg["end_s"]]
            if inside:
                starts.append(abs(inside[0]["start_s"] - seg["start_s"]))
                ends.append(abs(inside[-1]["end_s"] - seg["end_s"]))
    return starts, ends


def report(name: str, starts: list[float], ends: list[float]) -> None:
    both = np.asarray(starts + ends) * 1000
    print(f"   {name:28s} {len(starts):6d} {np.median(starts) * 1000:9.0f} {np.median(ends) * 1000:9.0f} "
          f"{np.mean(both):9.0f} {np.percentile(both, 90):9.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="")
    ap.add_argument("--align-model", default="")
    args = ap.parse_args()
    run = Path(args.run) if args.run else max(Path("outputs/runs").glob("*/01_annotate/annotations.jsonl"),
                                              key=lambda p: p.stat().st_mtime, default=Path("x/y/z")).parents[1]
    if not (run / "01_annotate" / "annotations.jsonl").exists():
        print("bench_alignment: no finished 01_annotate in outputs/runs (run `make demo` first); skipped")
        return
    clips = {c["clip_id"]: c for c in runs.read_jsonl(run / "00_corpus" / "clips.jsonl")}
    recs = [r for r in runs.read_jsonl(run / "01_annotate" / "annotations.jsonl") if r["words"]]
    words = {r["clip_id"]: r["words"] for r in recs}
    asr = runs.read_json(run / "01_annotate" / "stage.json").get("models", {}).get("asr", {}).get("id", "?")
    print(f"word-boundary error against the corpus's utterance times, {len(recs)} clips of {run.name}")
    print("   timing source                utts  start ms    end ms   mean ms    p90 ms")
    report(f"run's own ({asr})", *boundary_errors(clips, words))
    if args.align_model:
        from paraqa_utils.annotate.align import CtcAligner

        a = CtcAligner(args.align_model)
        aligned = {cid: a.align(load_audio(run / clips[cid]["audio_path"], a.rate), ws) for cid, ws in words.items()}
        report(f"CTC aligned ({args.align_model})", *boundary_errors(clips, aligned))


if __name__ == "__main__":
    main()
