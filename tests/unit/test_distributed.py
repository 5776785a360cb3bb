"""paraqa_utils.finetune.distributed: one process is a no-op; two gloo processes average DDP gradients."""
from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from paraqa_utils.finetune import distributed
from paraqa_utils.finetune.distributed import DistInfo

DIST_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture()
def single_process_env(monkeypatch):
    for k in DIST_ENV:
        monkeypatch.delenv(k, raising=False)


# --- one process -------------------------------------------------------------------------------------------------
def test_dist_info_defaults_and_main():
    info = DistInfo()
    assert (info.rank, info.world, info.local_rank, info.main) == (0, 1, 0, True)
    assert DistInfo(rank=3, world=4, local_rank=1).main is False
    assert DistInfo(rank=0, world=4, local_rank=0).main is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.rank = 1  # type: ignore[misc]


@pytest.mark.parametrize("world", [None, "1"])
def test_init_without_a_launcher_is_a_single_process(single_process_env, monkeypatch, world):
    if world is not None:
        monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("LOCAL_RANK", "5")  # ignored for one process

    def boom(*a, **k):
        raise AssertionError("a single process must not join a process group")
    monkeypatch.setattr(torch.distributed, "init_process_group", boom)
    assert distributed.init() == DistInfo()
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())


def test_barrier_is_a_no_op_for_one_process(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.distributed, "barrier", lambda *a, **k: calls.append(1))
    distributed.barrier(DistInfo())
    assert calls == []
    distributed.barrier(DistInfo(rank=1, world=2, local_rank=1))
    assert calls == [1]


def test_device_for():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert distributed.device_for(DistInfo(), cpu) == cpu
    assert distributed.device_for(DistInfo(rank=1, world=2, local_rank=1), cpu) == cpu  # CPU ranks share it
    assert distributed.device_for(DistInfo(), cuda) == cuda  # one process: the device as asked
    assert distributed.device_for(DistInfo(), torch.device("cuda", 2)) == torch.device("cuda", 2)
    assert distributed.device_for(DistInfo(rank=5, world=8, local_rank=3), cuda) == torch.device("cuda", 3)
    assert distributed.device_for(DistInfo(rank=1, world=2, local_rank=1), torch.device("cuda", 0)) == \
        torch.device("cuda", 1)


@pytest.mark.parametrize("fsdp", [False, True])
def test_wrap_for_one_process_returns_the_model_itself(fsdp):
    model = nn.Linear(3, 2)
    assert distributed.wrap(model, DistInfo(), torch.device("cpu"), fsdp=fsdp) is model


def test_full_tensor_and_load_into_round_trip():
    torch.manual_seed(0)
    src, dst = nn.Linear(4, 3), nn.Linear(4, 3)
    assert distributed.full_tensor(src.weight) is src.weight  # a plain parameter is already whole
    for a, b in zip(src.parameters(), dst.parameters()):
        distributed.load_into(b, distributed.full_tensor(a).detach().clone())
    assert all(torch.equal(a, b) for a, b in zip(src.parameters(), dst.parameters()))
    x = torch.randn(2, 4)
    assert torch.equal(src(x), dst(x))


def test_load_into_casts_to_the_parameters_dtype_and_keeps_it_a_leaf():
    p = nn.Parameter(torch.zeros(2, 2, dtype=torch.bfloat16))
    value = torch.tensor([[1.5, -2.0], [0.25, 3.0]], dtype=torch.float64)
    distributed.load_into(p, value)
    assert p.dtype == torch.bfloat16 and p.is_leaf and p.requires_grad
    assert torch.equal(p.float(), value.float())
    with pytest.raises(RuntimeError):
        distributed.load_into(p, torch.zeros(3))  # a wrong shape is an error, not a silent broadcast


def test_full_tensor_gathers_what_has_a_full_tensor_method():
    class Fake:
        def full_tensor(self):
            return torch.ones(4)
    assert torch.equal(distributed.full_tensor(Fake()), torch.ones(4))  # type: ignore[arg-type]


# --- two gloo processes ------------------------------------------------------------------------------------------
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)  # the same start on every rank
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x)


def batch_for(rank: int) -> torch.Tensor:
    return torch.arange(6, dtype=torch.float32).reshape(2, 3) * (rank + 1) - rank


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.cuda.is_available = lambda: False  # gloo on CPU even where a GPU is present
    torch.set_num_threads(1)
    info = distributed.init()
    result = {"info": dataclasses.astuple(info)}
    try:
        model = distributed.wrap(Tiny(), info, distributed.device_for(info, torch.device("cpu")), fsdp=False)
        result["ddp"] = type(model).__name__
        model(batch_for(rank)).pow(2).sum().backward()
        result["grads"] = [p.grad.detach().clone() for p in model.parameters()]
        distributed.barrier(info)
        # FSDP2 on CPU: a sharded parameter gathers whole and loads back shard-wise
        try:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.tensor import Shard, distribute_tensor
        except ImportError as exc:  # an old torch without DTensor
            result["dtensor_skipped"] = str(exc)
        else:
            mesh = init_device_mesh("cpu", (world,))
            whole = torch.arange(8, dtype=torch.float32).reshape(4, 2)
            p = nn.Parameter(distribute_tensor(torch.zeros(4, 2), mesh, [Shard(0)]))
            with torch.no_grad():
                distributed.load_into(p, whole.double())
            result["local"] = p.to_local().detach().clone()
            result["dtype"] = p.dtype
            result["full"] = distributed.full_tensor(p).detach().clone()
            # as load_checkpoint calls it: a trainable sharded parameter, outside no_grad
            q = nn.Parameter(distribute_tensor(torch.zeros(4, 2), mesh, [Shard(0)]))
            try:
                distributed.load_into(q, whole)
                result["trainable_local"] = q.to_local().detach().clone()
            except RuntimeError as exc:
                result["trainable_error"] = str(exc)[:300]
    finally:
        torch.save(result, Path(out) / f"rank{rank}.pt")
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WHOLE = torch.arange(8, dtype=torch.float32).reshape(4, 2)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One 2-process gloo run (a few seconds) shared by the tests below."""
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("needs torch.distributed with gloo")
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_two_gloo_processes_join_one_group(two_ranks):
    assert [r["info"] for r in two_ranks] == [(0, 2, 0), (1, 2, 1)]
    assert [r["ddp"] for r in two_ranks] == ["DistributedDataParallel"] * 2


def test_ddp_averages_gradients_over_the_ranks(two_ranks):
    alone = []  # what each rank would get on its own; DDP must hand both ranks the mean
    for r in range(2):
        m = Tiny()
        m(batch_for(r)).pow(2).sum().backward()
        alone.append([p.grad for p in m.parameters()])
    assert not torch.allclose(alone[0][0], alone[1][0]), "the two ranks' batches must differ for the test to bite"
    for i in range(len(alone[0])):
        mean = (alone[0][i] + alone[1][i]) / 2
        for r in range(2):
            torch.testing.assert_close(two_ranks[r]["grads"][i], mean)


def test_sharded_parameter_gathers_whole_and_loads_shard_wise(two_ranks):
    if "dtensor_skipped" in two_ranks[0]:
        pytest.skip(two_ranks[0]["dtensor_skipped"])
    assert torch.equal(two_ranks[0]["local"], WHOLE[:2]) and torch.equal(two_ranks[1]["local"], WHOLE[2:])
    assert all(r["dtype"] == torch.float32 for r in two_ranks)  # the float64 value was cast
    assert all(torch.equal(r["full"], WHOLE) for r in two_ranks)


def test_load_into_a_trainable_sharded_parameter_as_load_checkpoint_does(two_ranks):
    if "dtensor_skipped" in two_ranks[0]:
        pytest.skip(two_ranks[0]["dtensor_skipped"])
    assert "trainable_error" not in two_ranks[0], two_ranks[0].get("trainable_error")
    assert torch.equal(two_ranks[0]["trainable_local"], WHOLE[:2])
    assert torch.equal(two_ranks[1]["trainable_local"], WHOLE[2:])
