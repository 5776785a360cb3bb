"""01's checkpoint and external backends at tiny shapes: real-time factor (seconds of compute per second of
audio) of each path that runs offline, in one run:

    .venv/bin/python bench/bench_annotators.py [--seconds 60]

- hf: a tiny random wav2vec2 audio-classification checkpoint, and the wav2vec2 regression-head layout;
- hf: with trust_remote_code, a tiny joint emotion + V/A/D checkpoint with its own code (MERaLiON-SER-v1's
  layout: Whisper log-mel features padded to 30 s, so its cost is mostly the feature extractor);
- asr_align_model: a tiny random Wav2Vec2ForCTC with our Viterbi over its emissions;
- ext: the bundled protocol annotator in its own process (numpy + soundfile), one call for all clips.
Tiny checkpoints measure each path's overhead (feature extraction, batching, the protocol), not the real models'
speed: the paper's checkpoints are 300 M+ parameters. `cpu` is this process's CPU seconds (the ext: child's are
not in it), `wall` elapsed seconds; 2-s windows with 1-s context, as 01 uses.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils.annotate import align, checkpoint, external, recognisers  # noqa: E402
from paraqa_utils.testing.tiny_remote_ser import save_tiny_joint_ser  # noqa: E402
from tests.unit.test_align import save_ctc  # noqa: E402
from tests.unit.test_w2v2_regression import save_layout  # noqa: E402


def timed(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_clips = max(1, int(args.seconds // 10))
        clips = []
        for i in range(n_clips):
            sf.write(tmp / f"c{i}.wav", (0.1 * rng.standard_normal(160000)).astype(np.float32), 16000)
            clips.append(tmp / f"c{i}.wav")
        audio_s = 10.0 * n_clips
        windows = [[max(0.0, s - 1.0), min(10.0, s + 3.0)] for s in np.arange(0.0, 10.0, 2.0)]
        excerpts = [sf.read(c, dtype="float32")[0][int(a * 16000):int(b * 16000)] for c in clips for a, b in windows]
        save_layout(tmp / "dim")
        from tests.unit.test_annotate_stage import tiny_hf as tiny_cls  # noqa: E402

        emo = tiny_cls(tmp / "emo", ["ang", "hap", "neu", "sad"])
        rows = []
        for name, model in (("hf: wav2vec2 classification (tiny)", recognisers.HfAudioModel(emo, "emotion")),
                            ("hf: wav2vec2 regression head (tiny)", recognisers.HfAudioModel(str(tmp / "dim"), "dimensional"))):
            model.predict(excerpts[:1])
            rows.append((name, *timed(lambda m=model: m.predict(excerpts))))
        joint = checkpoint.load(str(save_tiny_joint_ser(tmp / "ser")), "emotion", {}, trust_remote_code=True)
        joint.predict(excerpts[:1])
        rows.append(("hf: joint emotion+V/A/D, own code (tiny)", *timed(lambda: joint.predict(excerpts))))
        aligner = align.CtcAligner(save_ctc(tmp / "ctc"))
        words = [{"w": w, "start_s": 0.0, "end_s": 0.0} for w in "the meeting has been moved to friday".split()]
        rows.append(("asr_align_model: CTC (tiny)", *timed(lambda: [aligner.align(sf.read(c, dtype="float32")[0], words)
                                                                    for c in clips])))
        reqs = [{"task": "emotion", "clip_id": f"c{i}", "audio_path": str(c), "windows": windows} for i, c in enumerate(clips)]
        cmd = [sys.executable, "-m", "paraqa_utils.testing.external_annotator"]
        rows.append(("ext: protocol annotator (child process)", *timed(lambda: external.call(
            cmd, reqs, "emotion", {}, "toy", 600, tmp / "log"))))
    print(f"{n_clips} clips, {audio_s:.0f} s of audio, {len(windows)} windows a clip")
    print("   backend                                   cpu RTF   wall RTF")
    for name, cpu, wall in rows:
        print(f"   {name:40s} {cpu / audio_s:9.4f} {wall / audio_s:9.4f}")


if __name__ == "__main__":
    main()
