"""Stage 02's yield per prompt profile against the embedded llama.cpp server (SmolLM2-135M), all from one run:

    .venv/bin/python bench/bench_generation.py --annotations outputs/runs/RUN/01_annotate/annotations.jsonl
                                               [--profile demo] [--max-clips 0] [--profiles small,large]

For each profile, on the same clips and with the profile's 02 settings otherwise (demo: 8 clips, 3 CPQA + 2 PQA*
per clip, temperature 0.2, no re-asks): pairs requested, schema-valid pairs returned and pairs the unchanged
filters keep, per kind; kept-of-requested; kept pairs per minute of generator wall time (the limit is the
server: one request at a time, ~20-30 completion tokens/s on one thread); and the kept-pair quality check.
No cache: every call is made. The two profiles run one after the other on the same server, so their ratio is
measured under the same load.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils import params, synthesize, text  # noqa: E402
from paraqa_utils.llm import LLMClient  # noqa: E402
from paraqa_utils.llm.server import llm_endpoint  # noqa: E402
from paraqa_utils.synthesize.small import load_small_prompt  # noqa: E402


def one_profile(profile: str, client: LLMClient, clips: list, cfg, filter_cfg, embed) -> dict:
    cfg = dataclasses.replace(cfg, prompt_profile=profile)
    load = load_small_prompt if profile == "small" else synthesize.load_prompt
    prompts = {k: load(cfg.prompt_files[k]) for k in cfg.kinds}
    t0 = time.perf_counter()
    qas, gen_rejects, counts = synthesize.generate(client, clips, cfg, prompts)
    wall = time.perf_counter() - t0
    kept, _, filter_funnel = synthesize.run_filters(qas, {a["clip_id"]: a for a in clips}, filter_cfg, embed)
    funnel = synthesize.funnel_rows(counts, qas, filter_funnel)
    quality = synthesize.kept_quality(kept, clips, filter_cfg.label_words)
    per_kind = {}
    for kind, n_req in counts["requested"].items():
        ret = next(r["n_out"] for r in funnel if r["kind"] == kind and r["step"] == "returned_schema_valid")
        per_kind[kind] = (n_req, ret, sum(q["kind"] == kind for q in kept))
    return {"per_kind": per_kind, "wall_s": wall, "kept": len(kept), "quality": quality}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", default="", help="a run's 01_annotate/annotations.jsonl (default: the newest)")
    ap.add_argument("--profile", default="demo", help="the params profile whose 02 settings are used")
    ap.add_argument("--max-clips", type=int, default=0, help="0: the profile's max_clips")
    ap.add_argument("--profiles", default="small,large")
    args = ap.parse_args()
    if not args.annotations:
        found = sorted(Path("outputs/runs").glob("*/01_annotate/annotations.jsonl"), key=lambda p: p.stat().st_mtime)
        if not found:
            print("bench_generation: no finished 01_annotate in outputs/runs (run `make demo` first); skipped")
            return
        args.annotations = str(found[-1])
    block = dict(params.resolve(args.profile).get("02_synthesize") or {})
    if args.max_clips:
        block["max_clips"] = args.max_clips
    cfg = params.stage_config(synthesize.SynthesizeConfig, "02_synthesize", block)
    filter_cfg = params.stage_config(synthesize.FilterConfig, "02_synthesize", block)
    clips, _ = synthesize.load_annotations(Path(args.annotations), cfg.max_clips)
    embed = text.minilm_embedder(filter_cfg.embedder)
    threads = int(block.get("llm_server_threads") or 1)
    with tempfile.TemporaryDirectory() as tmp, llm_endpoint("", "", Path(tmp), n_threads=threads) as ep:
        print(f"stage 02 on {len(clips)} clips of {args.annotations} with {args.profile}'s settings; embedded "
              f"SmolLM2-135M Q4_1 on {threads} thread(s); no cache")
        print("   profile  kind      requested  returned  kept  kept/requested  calls  wall s  kept/min  quality")
        for profile in args.profiles.split(","):
            client = LLMClient([ep], cache_dir=None, concurrency=1, timeout_s=300, response_format="auto",
                               max_invalid_retries=int(block.get("llm_max_invalid_retries", 0)), progress=False)
            r = one_profile(profile, client, clips, cfg, filter_cfg, embed)
            q = r["quality"]
            for kind, (n_req, ret, n_kept) in r["per_kind"].items():
                print(f"   {profile:8s} {kind:9s} {n_req:9d} {ret:9d} {n_kept:5d} {n_kept / max(n_req, 1):15.2f}")
            print(f"   {profile:8s} all       {'':9s} {'':9s} {r['kept']:5d} {'':15s} {client.ledger.calls:6d} "
                  f"{r['wall_s']:7.1f} {r['kept'] / r['wall_s'] * 60:9.1f}  {q['passed']}/{q['checked']} pass")


if __name__ == "__main__":
    main()
