"""Multi-GPU glue for 04_finetune under torchrun / accelerate launch: process group, DDP or FSDP2 wrapping."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init() -> DistInfo:
    """Join the process group that torchrun/accelerate describe in the environment (a no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        torch.distributed.barrier()


def all_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """The sums over all ranks of a few numbers (one all-reduce; the values themselves for one process)."""
    if info.world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def device_for(info: DistInfo, device: torch.device) -> torch.device:
    """One GPU per process under torchrun: cuda:<local rank>."""
    return torch.device("cuda", info.local_rank) if device.type == "cuda" and info.world > 1 else device


def wrap(model: nn.Module, info: DistInfo, device: torch.device, fsdp: bool) -> nn.Module:
    """DDP (each GPU holds the whole model) or FSDP2 (the LLM's decoder layers sharded across GPUs).

    Only the adapter and LoRA train, so DDP all-reduces a few MB per step. FSDP is for LLMs that do not fit
    one GPU; it shards the layers the model itself names as unsplittable (`_no_split_modules`).
    """
    if info.world == 1:
        return model
    if not fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    llm = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
    blocks = set(getattr(llm, "_no_split_modules", None) or [])
    for module in list(model.llm.modules()):
        if type(module).__name__ in blocks:
            fully_shard(module)
    # the frozen encoder is called outside the root's forward (encoder cache), so it stays whole on every GPU
    fully_shard(model, ignored_params=set(model.audio_encoder.parameters()))
    return model


def full_tensor(p: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly FSDP-sharded) parameter; a collective call when sharded."""
    return p.full_tensor() if hasattr(p, "full_tensor") else p


def load_into(param: torch.Tensor, value: torch.Tensor) -> None:
    """Copy a full tensor into a parameter, taking this rank's shard when FSDP sharded it."""
    with torch.no_grad():  # a trainable sharded parameter's local view refuses in-place copies under autograd
        if hasattr(param, "device_mesh"):
            from torch.distributed.tensor import distribute_tensor

            shard = distribute_tensor(value.to(param.device, param.dtype), param.device_mesh, param.placements)
            param.to_local().copy_(shard.to_local())
        else:
            param.data.copy_(value.to(param.device, param.dtype))
