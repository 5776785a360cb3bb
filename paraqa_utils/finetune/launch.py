"""Stage 04's launcher settings: each condition in this kernel, or as a torchrun / accelerate subprocess
(`finetune.workers` runs those).

A subprocess runs `python -m paraqa_utils.finetune --config <condition>/config.yaml`, the command a user runs
by hand, streams its output into the notebook (and `<condition>/launch.log`), and leaves the same files in the
stage as the in-kernel path: weights, `train_log.jsonl`, `predictions.jsonl`, `summary.json`.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paraqa_utils import runs
from paraqa_utils.finetune.config import FinetuneConfig
from paraqa_utils.llm.server import free_port
from paraqa_utils.params import check_types

LAUNCHERS = ("auto", "inprocess", "torchrun", "accelerate")


class LaunchError(ValueError):
    """Launch settings that cannot work on this machine; the message names the parameter."""


@dataclass
class LaunchSettings:
    """04's launch knobs (each a parameter of 04_finetune.ipynb, no default here)."""
    launcher: str  # auto, inprocess, torchrun or accelerate
    n_processes: int  # per node; 0: every visible GPU (one process on CPU)
    n_nodes: int
    node_rank: int
    main_address: str  # the rank-0 node; empty: 127.0.0.1 on one node
    main_port: int  # 0: a free port (one node only)
    accelerate_config: str  # an accelerate config file (launcher=accelerate)

    def __post_init__(self) -> None:
        problems = check_types(self)
        checks = [(self.launcher in LAUNCHERS, f"launcher={self.launcher!r}: one of {', '.join(LAUNCHERS)}"),
                  (self.n_processes >= 0, "n_processes must be >= 0 (0: every visible GPU)"),
                  (self.n_nodes >= 1, "n_nodes must be >= 1"),
                  (0 <= self.node_rank < max(self.n_nodes, 1), f"node_rank={self.node_rank}: 0 .. n_nodes-1")]
        problems += [] if problems else [msg for ok, msg in checks if not ok]
        if problems:
            raise LaunchError("launch settings:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Launch:
    """A resolved launch: what runs, on how many processes, and the config changes an accelerate file implies."""
    launcher: str  # inprocess, torchrun or accelerate
    n_processes: int = 1
    n_nodes: int = 1
    node_rank: int = 0
    main_address: str = "127.0.0.1"
    main_port: int = 0
    accelerate_config: str = ""
    distributed_type: str = ""  # the accelerate file's, when one is given
    overrides: dict = field(default_factory=dict)
    notes: tuple = ()
    device: str = "cpu"

    @property
    def world(self) -> int:
        return self.n_processes * self.n_nodes

    def apply(self, cfg: FinetuneConfig) -> FinetuneConfig:
        return dataclasses.replace(cfg, **self.overrides) if self.overrides else cfg

    def describe(self) -> dict[str, Any]:
        """What the stage's provenance records (the accelerate file by path and hash)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "notes"}
        out.update(world_size=self.world, notes=list(self.notes))
        if self.accelerate_config:
            out["accelerate_config_sha256"] = runs.sha256_file(Path(self.accelerate_config))
        return out

    def summary_line(self) -> str:
        if self.launcher == "inprocess":
            return f"launcher: inprocess (this kernel, {self.device})"
        where = f"{self.n_nodes} node(s) x {self.n_processes} process(es) on {self.device}"
        extra = f", {self.distributed_type} from {self.accelerate_config}" if self.accelerate_config else ""
        return f"launcher: {self.launcher}, {where}, rendezvous {self.main_address}:{self.main_port}{extra}" + \
            "".join(f"\n  note: {n}" for n in self.notes)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def visible_gpus(device: str) -> int:
    if device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def read_accelerate_config(path: str) -> tuple[str, dict[str, Any]]:
    """(distributed_type, FinetuneConfig overrides) from an accelerate config file (FSDP, DeepSpeed, DDP)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise LaunchError(f"accelerate_config={path!r}: no such file (the repo ships params/launch/*.yaml)")
    data = yaml.safe_load(p.read_text()) or {}
    kind = str(data.get("distributed_type", "NO")).upper()
    if kind not in ("NO", "MULTI_GPU", "MULTI_CPU", "FSDP", "DEEPSPEED"):
        raise LaunchError(f"{path}: distributed_type {kind} is not one of NO, MULTI_GPU, MULTI_CPU, FSDP, DEEPSPEED")
    overrides: dict[str, Any] = {}
    if kind == "DEEPSPEED":
        from paraqa_utils.finetune import zero

        ds_file = (data.get("deepspeed_config") or {}).get("deepspeed_config_file")
        if not ds_file:
            raise LaunchError(f"{path}: DEEPSPEED needs deepspeed_config.deepspeed_config_file, a DeepSpeed JSON whose "
                              "\"auto\" values 04 fills (params/launch/zero2_bf16.json)")
        if "mixed_precision" in data:
            raise LaunchError(f"{path}: remove mixed_precision; with a DeepSpeed JSON, bf16 is set there")
        try:
            zero.read(ds_file)
        except zero.ZeroConfigError as exc:
            raise LaunchError(f"{path}: {exc}") from None
        overrides["deepspeed_config"] = ds_file
    if kind == "FSDP":
        fs = data.get("fsdp_config") or {}
        strategy = str(fs.get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
        if strategy not in ("FULL_SHARD", "1"):
            raise LaunchError(f"{path}: fsdp_sharding_strategy {strategy}: 04 shards with FULL_SHARD only")
        overrides["fsdp"] = True
        overrides["gradient_checkpointing"] = bool(fs.get("fsdp_activation_checkpointing", False))
    precision = str(data.get("mixed_precision", "no")).lower()
    if precision in ("bf16", "fp16"):
        overrides["dtype"] = {"bf16": "bfloat16", "fp16": "float16"}[precision]
    return kind, overrides


def resolve(settings: LaunchSettings, device: str = "auto", n_gpus: int | None = None,
            n_cpus: int | None = None, deepspeed: str = "") -> Launch:
    """The launch for this machine: `auto` is inprocess on CPU or one GPU, torchrun over every visible GPU
    otherwise (and always for a DeepSpeed config: its engine runs in worker processes). Refuses more processes
    than devices, and picks another port when the one asked for is taken."""
    gpus = visible_gpus(device) if n_gpus is None else n_gpus
    cpus = n_cpus or os.cpu_count() or 1
    on = "cuda" if gpus else "cpu"
    kind = settings.launcher
    if kind == "auto":
        kind = "torchrun" if settings.n_nodes > 1 or gpus > 1 or settings.n_processes > 1 or deepspeed \
            else "inprocess"
    if kind == "inprocess" and deepspeed:
        raise LaunchError(f"deepspeed_config={deepspeed!r} needs launcher=torchrun or accelerate: the DeepSpeed "
                          "engine runs in worker processes")
    if kind == "inprocess":
        if settings.n_processes > 1 or settings.n_nodes > 1:
            raise LaunchError(f"launcher=inprocess runs one process: n_processes={settings.n_processes}, "
                              f"n_nodes={settings.n_nodes} need launcher=torchrun or accelerate")
        return Launch("inprocess", device=on)
    n = settings.n_processes or max(gpus, 1)
    if gpus and n > gpus:
        raise LaunchError(f"n_processes={n} but only {gpus} GPU(s) are visible (CUDA_VISIBLE_DEVICES="
                          f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): lower n_processes, or 0 for all")
    dist_type, overrides = (read_accelerate_config(settings.accelerate_config)
                            if kind == "accelerate" and settings.accelerate_config else ("", {}))
    if kind == "accelerate" and not gpus and n > 1 and dist_type != "DEEPSPEED":
        raise LaunchError(f"launcher=accelerate with n_processes={n} on CPU: accelerate launch starts one process "
                          "there (measured); use launcher=torchrun for several gloo processes on CPU")
    if not gpus and n > cpus:
        raise LaunchError(f"n_processes={n} on CPU (gloo) but this machine has {cpus} CPU core(s): lower n_processes")
    notes, port, address = [], settings.main_port, settings.main_address
    if settings.n_nodes > 1:
        if not address or not port:
            raise LaunchError(f"n_nodes={settings.n_nodes}: set main_address and main_port (the rank-0 node's "
                              "address and a port open between the nodes); every node gets the same values")
    else:
        address = address or "127.0.0.1"
        if not port:
            port = free_port()
        elif port_in_use(port):
            taken, port = port, free_port()
            notes.append(f"main_port {taken} is in use on this machine; using {port} instead")
    return Launch(kind, n, settings.n_nodes, settings.node_rank, address, port, settings.accelerate_config,
                  dist_type, overrides, tuple(notes), on)


def command(launch: Launch, config_path: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The worker command line: torchrun or accelerate launch around `-m paraqa_utils.finetune --config F`."""
    worker = ["-m", "paraqa_utils.finetune", "--config", str(config_path), *extra]
    if launch.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={launch.n_processes}",
                f"--nnodes={launch.n_nodes}", f"--node-rank={launch.node_rank}",
                f"--master-addr={launch.main_address}", f"--master-port={launch.main_port}", *worker]
    if launch.launcher == "accelerate":
        cfg = ["--config_file", launch.accelerate_config] if launch.accelerate_config else []
        # --cpu would skip DeepSpeed and start one plain process (measured): a DeepSpeed config runs without it
        cpu = launch.device == "cpu" and launch.distributed_type != "DEEPSPEED"
        mode = ["--cpu"] if cpu else (["--multi_gpu"] if launch.world > 1 and not cfg and launch.device != "cpu"
                                      else [])
        return [sys.executable, "-m", "accelerate.commands.launch", *cfg, *mode,
                "--num_processes", str(launch.world), "--num_machines", str(launch.n_nodes),
                "--machine_rank", str(launch.node_rank), "--main_process_ip", launch.main_address,
                "--main_process_port", str(launch.main_port), *worker]
    raise LaunchError(f"launcher {launch.launcher!r} runs in this kernel: no command")
