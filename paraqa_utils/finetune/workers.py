"""Stage 04's worker processes: run a condition under torchrun / accelerate, stream and log its output, turn a
failure into an error carrying the worker's last lines, and collect its files like the in-kernel path."""
from __future__ import annotations

import collections
import dataclasses
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from paraqa_utils import runs
from paraqa_utils.finetune.condition import finished_summary
from paraqa_utils.finetune.config import FinetuneConfig, save_config
from paraqa_utils.finetune.launch import Launch, command
from paraqa_utils.llm.server import free_port
from paraqa_utils.finetune.training import NonFiniteLoss, OutOfMemory
from paraqa_utils.stages import REPO_ROOT

TAIL_LINES = 25
KEEP_LINES = 400  # the worker's own traceback comes before torchrun's agent report


class WorkerFailed(RuntimeError):
    """A training subprocess exited with an error; the message carries its last log lines."""


def worker_env(cfg: FinetuneConfig, launch: Launch) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    if launch.device == "cpu":  # gloo ranks share the cores: one thread pool each, no oversubscription
        per = cfg.torch_threads or max(1, (os.cpu_count() or 1) // launch.n_processes)
        env["OMP_NUM_THREADS"] = str(per)
    return env


def stream(cmd: list[str], env: dict[str, str], log_path: Path, echo: Callable[[str], None]) -> tuple[int, list[str]]:
    """Run `cmd`, echo and log its output line by line; (exit code, last lines). An interrupt kills the group."""
    tail: collections.deque[str] = collections.deque(maxlen=KEEP_LINES)
    with open(log_path, "a") as log:
        log.write(f"# {runs.utc_now()} {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=str(REPO_ROOT), start_new_session=True, bufsize=1)
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                line = line.rstrip("\n")
                log.write(line + "\n")
                tail.append(line)
                echo(line)
            return proc.wait(), list(tail)
        except BaseException:
            import signal

            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise


def worker_lines(lines: list[str], n: int = TAIL_LINES) -> list[str]:
    """The last `n` lines the workers printed, without torchrun's own traceback (its agent reports after them),
    plus the agent's one-line verdicts ("failed (exitcode: 1) local_rank: 0")."""
    agent = next((i for i, x in enumerate(lines) if "torch/distributed/run.py" in x), None)
    if agent is not None:
        start = max((i for i in range(agent) if lines[i].startswith("Traceback")), default=agent)
        verdicts = [x for x in lines if "failed (exitcode" in x][-2:]
        lines = [x for x in lines[:start] if "failed (exitcode" not in x] + verdicts
    return lines[-n:]


def failure(cfg: FinetuneConfig, launch: Launch, rc: int, tail: list[str], log_path: Path) -> Exception:
    """The exception a failed worker becomes: NonFiniteLoss and OutOfMemory keep their types (run_plan records
    the first as a finding), anything else is WorkerFailed; each carries the worker's last lines."""
    how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
    text = "\n".join(worker_lines(tail))
    msg = (f"{cfg.condition}: the {launch.launcher} worker(s) failed ({how}); the last lines of {log_path}:\n{text}")
    if "NonFiniteLoss" in text:
        return NonFiniteLoss(msg)
    if "OutOfMemory" in text or "out of memory" in text.lower():
        return OutOfMemory(msg + f"\n(batch_size={cfg.batch_size} per process: lower it and raise grad_accum, or "
                           "set gradient_checkpointing=true or fsdp=true)")
    return WorkerFailed(msg)


def first_step_delay(log_path: Path, t_start: float) -> float | None:
    """Seconds from the subprocess start to the start of its first optimizer step (train_log's clock)."""
    rows = list(runs.read_jsonl(log_path)) if log_path.exists() else []
    first = rows[0] if rows else {}
    return round(first["time"] - first["seconds"] - t_start, 3) if "time" in first else None


def run_subprocess(cfg: FinetuneConfig, launch: Launch, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and predict one condition in worker processes; returns its summary.json (plus a `launch` block)."""
    if (done := finished_summary(cfg)) is not None:
        return done  # finished earlier with this very config and data (a resumed pipeline run)
    cond_dir = Path(cfg.out_dir) / cfg.condition
    cond_dir.mkdir(parents=True, exist_ok=True)
    config_path, log_path = cond_dir / "config.yaml", cond_dir / "launch.log"
    save_config(cfg, config_path)
    env, t_start = worker_env(cfg, launch), time.time()
    cmd = command(launch, config_path)
    rc, tail = stream(cmd, env, log_path, echo)
    if rc != 0:
        raise failure(cfg, launch, rc, tail, log_path)
    summary = runs.read_json(cond_dir / "summary.json")
    if summary.get("world_size") != launch.world:
        raise WorkerFailed(f"{cfg.condition}: {launch.launcher} was asked for {launch.world} process(es) but the "
                           f"worker ran with world size {summary.get('world_size')} (see {log_path})")
    if summary.get("predictions_skipped") and cfg.test_files:
        # FSDP / ZeRO-3 train sharded; the saved weights are then loaded whole by one process to answer the test sets
        one = dataclasses.replace(launch, launcher="torchrun", n_processes=1, n_nodes=1, node_rank=0,
                                  main_address="127.0.0.1", main_port=free_port())
        rc, tail = stream(command(one, config_path, ("--set", "fsdp=false", "--set", 'deepspeed_config=""',
                                                     "--set", "resume=true")), env,
                          log_path, echo)
        if rc != 0:
            raise failure(cfg, one, rc, tail, log_path)
        predicted = runs.read_json(cond_dir / "summary.json")
        summary.pop("predictions_skipped")
        summary.update({k: v for k, v in predicted.items() if k.startswith("test_") or k.startswith("predict")
                        or k == "n_predictions"})
    summary["launch"] = {**launch.describe(), "command": " ".join(cmd), "wall_s": round(time.time() - t_start, 3),
                         "first_step_s": first_step_delay(cond_dir / "train_log.jsonl", t_start),
                         "config_sha256": runs.sha256_file(config_path)}
    runs.write_json(cond_dir / "summary.json", summary)
    return summary
