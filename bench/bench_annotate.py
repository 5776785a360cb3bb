"""Stage 01 (annotate): real-time factors per backend, clips/s of the whole stage, cached rerun, acoustic UAR.

    .venv/bin/python bench/bench_annotate.py                    # the embedded corpus at demo size (400 clips)
    .venv/bin/python bench/bench_annotate.py --profile smoke    # CI size, a few minutes

Builds the corpus with the real 00_corpus notebook (a fake espeak-ng corpus if that stage is still a
placeholder), runs 01_annotate through the runner with 2 workers, runs it again (features and transcripts come
from the cache), and times single backends on a sample of clips. Everything printed is measured in this run.
RTF = seconds of compute per second of audio: `cpu` counts this process's CPU seconds (robust to other load on
the machine), `wall` the elapsed seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils import audio
from paraqa_utils import annotate, assets, pipeline, runs
from paraqa_utils.annotate import asr
from paraqa_utils.annotate import features
from paraqa_utils.annotate import vad  # noqa: E402


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn, audio_s: float) -> tuple[str, object]:
    c0, t0 = cpu_s(), time.perf_counter()
    out = fn()
    c, t = cpu_s() - c0, time.perf_counter() - t0
    return f"cpu {c / audio_s:.3f}  wall {t / audio_s:.3f}", out


def build_corpus(profile: str, root: Path) -> Path:
    rc = pipeline.main(["--profile", profile, "--only", "00_corpus", "--run-id", "bench"])
    assert rc == 0, "00_corpus failed"
    run = root / "bench"
    if not json.loads((run / "00_corpus" / "stage.json").read_text()).get("implemented", True):
        from tests.unit.test_annotate_corpus import make_fake_corpus  # placeholder corpus: make our own
        make_fake_corpus(run, {"train": 10, "dev": 2, "test": 4}, bad_clips=False)
        print("00_corpus is a placeholder: using the espeak-ng fake corpus of tests/unit/test_annotate_corpus.py")
    return run


def run_stage(run: Path) -> tuple[float, float]:
    """Wall seconds through the runner, and CPU seconds of the notebook's kernel (a reaped child process)."""
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    assert pipeline.main(["--resume", "bench", "--only", "01_annotate"]) == 0, "01_annotate failed"
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def sample_backends(run: Path, n: int) -> None:
    stage = runs.Stage(run, "01_annotate")
    clips = [c for c in annotate.load_clips(stage) if c["split"] == "test"][:n]
    audios = [audio.load_audio(c["audio_file"]) for c in clips]
    audio_s = sum(len(a) for a in audios) / audio.SAMPLE_RATE_HZ
    print(f"\nsingle backends on {len(clips)} test clips ({audio_s:.1f} s of audio), one process, after a warm-up "
          "call each (imports and session start-up excluded):")
    model, _ = asr.load_faster_whisper("", n_workers=1, cpu_threads=2)
    onnx = str(assets.silero_vad_onnx())
    warm = audios[0][: audio.SAMPLE_RATE_HZ]
    asr.transcribe_faster_whisper(model, [warm])
    features.clip_features(["egemaps", "whisper"], warm, vad.make_windows([(0.0, 1.0)], 1.0), model)
    vad.speech_regions(warm, onnx)
    r, _ = timed(lambda: [asr.transcribe_faster_whisper(model, [a]) for a in audios], audio_s)
    print(f"  faster-whisper, one clip per call     RTF {r}")
    packs = asr.plan_packs([len(a) / audio.SAMPLE_RATE_HZ for a in audios], 28.0, 1.0)
    r, _ = timed(lambda: [asr.transcribe_faster_whisper(model, [audios[i] for i in p]) for p in packs], audio_s)
    print(f"  faster-whisper, packed ({len(packs)} calls)       RTF {r}")
    r, regions = timed(lambda: [vad.speech_regions(a, onnx) for a in audios], audio_s)
    print(f"  silero VAD                             RTF {r}")
    wins = [vad.make_windows(reg, len(a) / audio.SAMPLE_RATE_HZ) for reg, a in zip(regions, audios)]
    r, _ = timed(lambda: [features.clip_features(["egemaps"], a, w) for a, w in zip(audios, wins)], audio_s)
    print(f"  eGeMAPS descriptors + window stats     RTF {r}")
    r, _ = timed(lambda: [features.clip_features(["whisper"], a, w, model) for a, w in zip(audios, wins)], audio_s)
    print(f"  Whisper-encoder window features        RTF {r}")
    try:
        pipe, _ = asr.load_transformers_asr("", cpu_threads=2)
        asr.transcribe_transformers(pipe, warm)
        r, _ = timed(lambda: [asr.transcribe_transformers(pipe, a) for a in audios[:2]],
                     sum(len(a) for a in audios[:2]) / audio.SAMPLE_RATE_HZ)
        print(f"  transformers Whisper (2 clips)         RTF {r}")
    except Exception as exc:  # the converted folder comes from paraqa_utils.convert
        print(f"  transformers Whisper                   not measured ({type(exc).__name__}: {exc})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--n-sample", type=int, default=6, help="clips for the single-backend timings")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        os.environ["PARAQA_RUNS"] = str(root)
        t0 = time.perf_counter()
        run = build_corpus(args.profile, root)
        print(f"corpus ({args.profile}): {time.perf_counter() - t0:.1f} s")
        first, first_cpu = run_stage(run)
        m = json.loads((run / "01_annotate" / "metrics.json").read_text())
        second, second_cpu = run_stage(run)
        m2 = json.loads((run / "01_annotate" / "metrics.json").read_text())
        st = json.loads((run / "01_annotate" / "stage.json").read_text())
        print(f"\n01_annotate on {m['n_clips']} clips ({m['audio_s']:.0f} s of audio), n_workers=2, "
              f"backends {m['backends']}")
        print(f"  first run: {first:.1f} s through the runner ({m['n_clips'] / first:.2f} clips/s); "
              f"stage work {sum(m['wall_s'].values()):.1f} s ({m['clips_per_s']:.2f} clips/s); steps {m['wall_s']}")
        print(f"  CPU seconds of the stage's kernel: {first_cpu:.0f} (on an idle 2-core machine the wall time "
              f"cannot be below {first_cpu / 2:.0f} s; the load average now is {os.getloadavg()[0]:.1f})")
        print(f"  rerun (features + transcripts cached): {second:.1f} s through the runner ({second_cpu:.0f} CPU s), "
              f"stage "
              f"{st['duration_s']:.1f} s; cached clips {m2['n_cached_clips']}/{m2['n_clips']}, "
              f"cached transcripts {m2['n_cached_asr']}")
        print("  in-stage RTF (thread wall seconds per audio second, cache misses only): "
              + ", ".join(f"{k} {v:.3f}" for k, v in m["rtf"].items() if v is not None))
        print(f"\nquality on the test split ({m['emotion']['final']['all']['n']} windows; the acoustic recogniser "
              f"never sees test labels):")
        print(f"  acoustic emotion: accuracy {m['accuracy_test']}, UAR {m['uar_test']}, macro-F1 {m['macro_f1_test']}"
              f"; after condensation UAR {m['uar_test_condensed']} "
              f"({m['emotion']['final']['condensed']['n']} windows)")
        print(f"  CCC valence {m['ccc_valence_test']}, arousal {m['ccc_arousal_test']}, "
              f"dominance {m['ccc_dominance_test']}; gender accuracy {m['gender_accuracy_test']}")
        print(f"  WER (faster-whisper vs corpus text): all {m['wer']}, test {m['wer_test']}")
        print(f"  kept {m['n_kept_clips']}/{m['n_clips']} clips, {m['n_kept_windows']}/{m['n_windows']} windows; "
              f"drops {m['drop_reasons']}")
        sample_backends(run, args.n_sample)


if __name__ == "__main__":
    main()
