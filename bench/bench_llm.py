"""LLM client benchmarks, all figures from one run:

    .venv/bin/python bench/bench_llm.py [--latency-s 0.1] [--cached-items 100000] [--embedded-clips 3]
                                        [--embedded-threads 1] [--skip-embedded]

1. Throughput against a loopback server (its own process) that sleeps `latency_s` per request, at concurrency
   1, 8, 32, 128: requests/s as a fraction of the ideal (concurrency / latency), and the client's CPU per request
   (which caps the rate: at 2 cores and ~2-3 ms CPU per request no client reaches 1,280 requests/s).
2. A fully cached rerun of `--cached-items` requests: items/s, and memory growth for the cache index and the run.
3. Stage 02 against the embedded llama.cpp server (SmolLM2-135M): QA pairs per minute and tokens per second.
"""
from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils import llm  # noqa: E402
from paraqa_utils.llm import LLMClient, LLMRequest  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def throughput(latency_s: float, levels: list[int]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.unit.test_llm_fakes", "--latency-s", str(latency_s),
                             "--max-lifetime-s", "600"], cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        print(f"1. throughput vs a {latency_s * 1000:.0f} ms loopback server ({url}, separate process)")
        print("   concurrency  requests  req/s    ideal   ratio  client CPU ms/req")
        for conc in levels:
            n = max(40, conc * 8)
            reqs = [LLMRequest(messages=[{"role": "user", "content": f"bench {conc} {i}"}], max_tokens=16)
                    for i in range(n)]
            client = LLMClient([url], model="fake-model", cache_dir=None, concurrency=conc, progress=False)
            client.complete(reqs[: min(n, conc)])  # warm: connections, imports
            t0, c0 = time.perf_counter(), time.process_time()
            res = client.complete(reqs)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert all(r.ok for r in res), [r.error for r in res if not r.ok][:3]
            ideal = conc / latency_s
            print(f"   {conc:11d} {n:9d} {n / dt:7.1f} {ideal:8.0f} {n / dt / ideal:7.2f} {cpu / n * 1000:12.2f}")
    finally:
        proc.kill()
        proc.wait()


def cached(n_items: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reqs = [LLMRequest(messages=[{"role": "system", "content": "You write QA pairs."},
                                     {"role": "user", "content": f"clip {i}: the meeting moved to Friday."}],
                           temperature=0.7, max_tokens=500, seed=0) for i in range(n_items)]
        writer = LLMClient(["http://127.0.0.1:9/v1"], model="m", cache_dir=Path(tmp), progress=False)
        text = '{"qa_pairs": [' + ", ".join(['{"question": "Why does she sound low?", "answer": "The trip is off."}'] * 4) + "]}"
        t0 = time.perf_counter()
        for r in reqs:
            writer.cache.put(writer.key(r), {"ok": True, "text": text, "error": "", "error_kind": "",
                                             "prompt_tokens": 600, "completion_tokens": 150, "model": "m",
                                             "finish_reason": "stop", "created": 0.0})
        t_write = time.perf_counter() - t0
        writer.cache.close()
        size_mib = (Path(tmp) / llm.CACHE_FILE).stat().st_size / 2**20
        del writer
        gc.collect()
        m0 = rss_mib()
        t0 = time.perf_counter()
        client = LLMClient(["http://127.0.0.1:9/v1"], model="m", cache_dir=Path(tmp), progress=False)
        t_load = time.perf_counter() - t0
        m1 = rss_mib()
        t0 = time.perf_counter()
        res = client.complete(reqs)
        t_run = time.perf_counter() - t0
        m2 = rss_mib()
        assert all(r.cached and r.ok for r in res) and client.ledger.calls == 0
        del res
        gc.collect()
        m3 = rss_mib()
    print(f"2. fully cached rerun of {n_items:,} items (cache file {size_mib:.0f} MiB, written at "
          f"{n_items / t_write:,.0f} items/s)")
    print(f"   index load {t_load:.2f} s ({n_items / t_load:,.0f} items/s); cached complete(): {t_run:.2f} s = "
          f"{n_items / t_run:,.0f} items/s, 0 calls")
    print(f"   memory: index +{m1 - m0:.1f} MiB ({(m1 - m0) * 2**20 / n_items:.0f} B/item); during the run "
          f"+{m2 - m1:.1f} MiB (the {n_items:,} results held); after dropping them +{m3 - m1:.1f} MiB")


def embedded(n_clips: int, threads: int) -> None:
    from paraqa_utils.llm import server as llm_server
    from paraqa_utils import params
    from paraqa_utils import synthesize as S
    from tests.unit.test_synthesize import make_annotation

    lines = [("The meeting moved to Friday again", "sad", "female", 0.2),
             ("We won the final in the last minute", "happy", "male", 0.85),
             ("Who left the door of the lab open", "angry", "female", 0.15),
             ("I heard a noise in the basement", "fearful", "male", 0.25)]
    anns = [make_annotation(f"b{i}", [lines[i % 4], lines[(i + 1) % 4]]) for i in range(n_clips)]
    cfg = params.stage_config(S.SynthesizeConfig, "02_synthesize",
                              {"n_qa_cpqa_per_clip": 3, "n_qa_pqa_star_per_clip": 2, "max_tokens": 500})
    prompts = {k: S.load_prompt(cfg.prompt_files[k]) for k in cfg.kinds}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with llm_server.llm_endpoint("", "", Path(tmp), n_threads=threads) as ep:
            t_start = time.perf_counter() - t0
            client = LLMClient([ep], cache_dir=None, concurrency=1, timeout_s=300, response_format="auto",
                               max_invalid_retries=0, progress=False)
            qas, rejects, counts = S.generate(client, anns, cfg, prompts)
    led = client.ledger
    print(f"3. stage 02 vs the embedded llama.cpp server (SmolLM2-135M Q4_1, {threads} thread(s)), {n_clips} clips "
          f"x 2 kinds = {led.requests} calls; server start {t_start:.1f} s")
    print(f"   {len(qas)} schema-valid QA pairs of {sum(counts['requested'].values())} requested in {led.wall_s:.1f} s"
          f" = {len(qas) / led.wall_s * 60:.1f} QA pairs/min; {led.calls / led.wall_s * 60:.1f} calls/min")
    print(f"   tokens: {led.completion_tokens} completion ({led.completion_tokens / led.wall_s:.1f}/s), "
          f"{led.prompt_tokens} prompt ({led.prompt_tokens / led.wall_s:.1f}/s, llama.cpp reuses the shared prefix)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latency-s", type=float, default=0.1)
    ap.add_argument("--levels", default="1,8,32,128")
    ap.add_argument("--cached-items", type=int, default=100_000)
    ap.add_argument("--embedded-clips", type=int, default=3)
    ap.add_argument("--embedded-threads", type=int, default=1)
    ap.add_argument("--skip-embedded", action="store_true")
    args = ap.parse_args()
    throughput(args.latency_s, [int(x) for x in args.levels.split(",")])
    cached(args.cached_items)
    if not args.skip_embedded:
        embedded(args.embedded_clips, args.embedded_threads)


if __name__ == "__main__":
    main()
