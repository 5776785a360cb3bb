"""Synthesis throughput of the 00_corpus stage: utterances per second with 1 and with 2 worker processes.

    python bench/bench_corpus.py [--n-clips 60] [--rounds 2]

Every round renders the same plan (same seed) into fresh folders with 1 and then 2 workers, so no cache is
reused; rounds alternate so that a change in machine load hits both settings alike, and the median is reported.
A bare engine baseline (espeak-ng called from 1 or 2 threads, nothing else) shows how far the machine itself lets
two processes scale right now: on a shared, busy machine neither number can reach 2x.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from paraqa_utils import corpus, params
from paraqa_utils.corpus import tts


def corpus_rate(n_clips: int, n_workers: int, seed: int, folder: Path) -> tuple[int, float]:
    cfg = params.stage_config(corpus.CorpusConfig, "00_corpus", {"n_clips": n_clips, "n_workers": n_workers, "seed": seed})
    t0 = time.perf_counter()
    clips, rejects = corpus.build_synthetic(folder / "00_corpus", cfg, progress=False)
    wall = time.perf_counter() - t0
    if rejects:
        raise SystemExit(f"{len(rejects)} clips failed: {rejects[:2]}")
    n_utt = sum(len(c["segments"]) for c in clips)
    return n_utt, n_utt / wall


def engine_rate(n_threads: int, folder: Path, n: int = 40) -> float:
    exe = tts.require_engine("espeak-ng")
    text = "The meeting moved to Friday afternoon, said the manager."

    def one(i: int) -> None:
        subprocess.run([exe, "-v", "en-us+f1", "-w", str(folder / f"e{i}.wav"), text], check=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-clips", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    rates: dict[int, list[float]] = {1: [], 2: []}
    engine: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench_corpus_") as tmp:
        corpus_rate(6, 1, args.seed + 1, Path(tmp) / "warmup")  # page cache, imports
        for r in range(args.rounds):
            for w in (1, 2):
                engine[w].append(engine_rate(w, Path(tmp)))
                n_utt, rate = corpus_rate(args.n_clips, w, args.seed, Path(tmp) / f"r{r}_w{w}")
                rates[w].append(rate)
                print(f"round {r + 1}, workers={w}: {n_utt} utterances, {rate:.2f} utterances/s "
                      f"(bare espeak-ng with {w} thread(s): {engine[w][-1]:.1f}/s)")
    med = {w: statistics.median(v) for w, v in rates.items()}
    eng = {w: statistics.median(v) for w, v in engine.items()}
    print(f"median utterances/s: 1 worker {med[1]:.2f}, 2 workers {med[2]:.2f}; speed-up {med[2] / med[1]:.2f}x "
          f"(aim >= 1.6x)")
    print(f"bare engine speed-up on this machine now: {eng[2] / eng[1]:.2f}x; "
          f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
