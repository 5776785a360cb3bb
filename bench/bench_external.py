"""01's ext: protocol overhead, measured in one run against the bundled protocol annotator
(paraqa_utils/testing/external_annotator.py, numpy + soundfile only, so the protocol's cost is what is left):

    .venv/bin/python bench/bench_external.py [--clips 200] [--windows 6]

1. Process start: one call with one clip (interpreter, imports, one reply).
2. Per clip: (wall of one call over N clips - process start) / N, against the same labelling done in this process
   (read the WAV, label its windows): the difference is the protocol's own cost per clip (JSON both ways, pipes).
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
from paraqa_utils.annotate import external  # noqa: E402
from paraqa_utils.testing import external_annotator as toy  # noqa: E402

CMD = [sys.executable, "-m", "paraqa_utils.testing.external_annotator"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--windows", type=int, default=6)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        reqs = []
        for i in range(args.clips):
            path = Path(tmp) / f"c{i}.wav"
            sf.write(path, rng.normal(0, 0.05, 16000 * args.windows).astype(np.float32), 16000)
            reqs.append({"task": "emotion", "clip_id": f"c{i}", "audio_path": str(path),
                         "windows": [[float(k), float(k + 2)] for k in range(args.windows)]})
        log = Path(tmp) / "log"
        t0 = time.perf_counter()
        got, bad = external.call(CMD, reqs[:1], "emotion", {}, "toy", 60, log)
        start_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        got, bad = external.call(CMD, reqs, "emotion", {}, "toy", 600, log)
        wall = time.perf_counter() - t0
        assert not bad and len(got) == args.clips, bad
        for _ in range(2):  # the annotator's own work, in this process; the second pass is measured (warm)
            t0 = time.perf_counter()
            for r in reqs:
                audio, sr = sf.read(r["audio_path"], dtype="float32", always_2d=True)
                [toy.label("emotion", *toy.window_features(audio.mean(axis=1), sr, s, e), "ours") for s, e in r["windows"]]
            inproc = (time.perf_counter() - t0) / args.clips
    per_clip = (wall - start_s) / args.clips
    print(f"1. process start (1 clip): {start_s * 1000:.0f} ms")
    print(f"2. {args.clips} clips x {args.windows} windows in one call: {wall:.2f} s = {per_clip * 1000:.2f} ms/clip "
          f"after the start, against {inproc * 1000:.2f} ms/clip for the same labelling in this process (which has "
          f"torch loaded); a per-clip protocol cost {'is not measurable above that' if per_clip <= inproc else f'of {(per_clip - inproc) * 1000:.2f} ms'}")


if __name__ == "__main__":
    main()
