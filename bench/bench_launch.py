"""04's launcher on CPU, at tiny shapes (random tiny Whisper + Llama built from configs, a fake finished 03):

    .venv/bin/python bench/bench_launch.py [--steps 8]

1. Launch overhead per condition: seconds from starting the worker subprocess to the start of its first
   optimizer step (python + torch + transformers imports, model build, data encoding), for torchrun with 1 and
   2 processes; the in-kernel path has none of it.
2. Step time: 1 process with grad_accum 2 against 2 gloo processes with grad_accum 1 (the same effective batch of
   4); the ideal for 2 processes on 2 cores is 0.5x, and tiny shapes are dominated by per-step overhead
   (all-reduce, Python), so this measures the launcher's cost, not a speed-up a real model would see.
3. DeepSpeed ZeRO-2 (params/launch/zero2_bf16.json) over the same 2 processes: launch overhead and step time
   against plain DDP's (the engine's own bucketing and partitioned optimizer step; the first DeepSpeed launch on a
   machine also compiles DeepSpeed's shared-memory op, ~1 min, cached afterwards).
All figures come from one run; the machine is noisy, compare ratios within it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paraqa_utils import runs  # noqa: E402
from paraqa_utils.finetune import launch as L  # noqa: E402
from paraqa_utils.finetune import workers  # noqa: E402
from paraqa_utils.llm.server import free_port  # noqa: E402
from paraqa_utils.finetune.condition import run_condition  # noqa: E402
from paraqa_utils.finetune.config import make_config  # noqa: E402
from paraqa_utils.testing.fake_stages import make_fake_merge  # noqa: E402
from paraqa_utils.testing.tiny_models import save_tiny_models  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = tmp / "run"
        make_fake_merge(run, n_train_clips=8, n_test_clips=2)
        whisper, llm = save_tiny_models(tmp / "models")
        d = run / "03_explicit_merge"

        def cfg(out: str, accum: int, **kw):
            return make_config(**kw, condition="implicit", train_file=str(d / "train_implicit.jsonl"), run_dir=str(run),
                               out_dir=str(tmp / out), whisper_model=str(whisper), llm_model=str(llm),
                               train_mode="adapter", n_steps=args.steps, batch_size=2, grad_accum=accum,
                               torch_threads=1, progress=False, test_files={})

        def step_s(out: str) -> float:
            rows = list(runs.read_jsonl(tmp / out / "implicit" / "train_log.jsonl"))[1:]  # the first step warms up
            return statistics.median(r["seconds"] for r in rows)

        run_condition(cfg("inproc", 2))
        one = L.Launch("torchrun", 1, main_port=free_port())
        two = L.Launch("torchrun", 2, main_port=free_port())
        s1 = workers.run_subprocess(cfg("tr1", 2), one, echo=lambda _: None)
        s2 = workers.run_subprocess(cfg("tr2", 1), two, echo=lambda _: None)
        print(f"1. launch overhead (subprocess start -> first optimizer step): torchrun x1 "
              f"{s1['launch']['first_step_s']:.1f} s, torchrun x2 {s2['launch']['first_step_s']:.1f} s "
              f"(whole condition: {s1['launch']['wall_s']:.1f} s and {s2['launch']['wall_s']:.1f} s)")
        base, r1, r2 = step_s("inproc"), step_s("tr1"), step_s("tr2")
        print(f"2. median step time, effective batch 4, {args.steps} steps: in-kernel 1 process x accum 2 "
              f"{base * 1000:.1f} ms; torchrun 1 process x accum 2 {r1 * 1000:.1f} ms; torchrun 2 processes x "
              f"accum 1 {r2 * 1000:.1f} ms = {r2 / base:.2f}x the in-kernel step (ideal 0.50x on 2 idle cores)")
        zero2 = str(Path(__file__).resolve().parents[1] / "params" / "launch" / "zero2_bf16.json")
        s3 = workers.run_subprocess(cfg("ds2", 1, deepspeed_config=zero2), L.Launch("torchrun", 2, main_port=free_port()),
                                    echo=lambda _: None)
        r3 = step_s("ds2")
        print(f"3. ZeRO-2 x2: launch overhead {s3['launch']['first_step_s']:.1f} s; median step {r3 * 1000:.1f} ms = "
              f"{r3 / r2:.2f}x the DDP x2 step")


if __name__ == "__main__":
    main()
