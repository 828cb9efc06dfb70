"""Several processes, one run: process groups, model wrapping (DDP or FSDP), gathering results.

`torchrun --nproc-per-node N -m tubelet train ...` starts N copies of the command with `RANK`,
`WORLD_SIZE`, `LOCAL_RANK` and the rendezvous address in their environment (torchrun's protocol);
`init_distributed()` joins them into one process group (NCCL on GPUs, gloo on CPUs). Without those
variables everything here is a no-op for one process, so the same code runs both ways.

Duties split this way: `tubelet.data.loader` shards the data by rank (training: each rank a disjoint
share of one shuffled order; evaluation: each video on exactly one rank, no padding); the trainer
wraps the model with `wrap_model`, logs and saves on rank 0 only, and merges evaluation meters with
`gather_meters`.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

PARALLEL = ("ddp", "fsdp")
T = TypeVar("T")
N = TypeVar("N", int, float)


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank among `world_size` processes, its GPU `local_rank`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, shows progress and writes files."""
        return self.rank == 0


def dist_env() -> DistEnv:
    """The current process group's ranks, or a single process when there is none."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    return DistEnv()


def launch_env() -> DistEnv:
    """Where the launcher placed this process: `RANK`, `WORLD_SIZE` and `LOCAL_RANK` as torchrun
    sets them, read without joining a process group (one process of rank 0 without them).

    For jobs whose processes split the work but never talk (feature extraction shards the videos
    by rank); jobs that gather or synchronise use `init_distributed` and `dist_env`.
    """
    return DistEnv(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(timeout_s: float = 1800.0) -> DistEnv:
    """Join the process group torchrun describes in the environment (once; later calls return it).

    Backend: NCCL when CUDA is available (each process on GPU `LOCAL_RANK`), gloo otherwise.
    Without `WORLD_SIZE` > 1 in the environment this does nothing and returns rank 0 of 1.
    """
    if not dist.is_available():
        return DistEnv()
    if dist.is_initialized():
        return dist_env()
    world_size = launch_env().world_size
    if world_size <= 1:
        return DistEnv()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set: start several processes "
            "with `torchrun --nproc-per-node N -m tubelet ...`"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    rank = int(os.environ["RANK"])
    dist.init_process_group(
        backend, store=_attempt_store(rank, world_size, timeout), rank=rank,
        world_size=world_size, timeout=timeout,
    )  # fmt: skip
    global _HOST_GROUP
    _HOST_GROUP = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    return dist_env()


# Beside NCCL, a gloo group over the same processes for the numbers the host decides on (is there
# a batch everywhere? the epoch's sums): NCCL reduces GPU tensors, and reading one back would make
# the host wait for every kernel queued before it, once per training step. None: the default group
# is gloo already (CPU).
_HOST_GROUP: Any = None


def _attempt_store(rank: int, world_size: int, timeout: datetime.timedelta) -> dist.Store:
    """The key-value store at `MASTER_ADDR:MASTER_PORT` through which the processes find each other,
    with keys of their own for torchrun's attempt (`TORCHELASTIC_RESTART_COUNT`).

    torchrun serves that store from its agent and keeps it when it restarts the workers
    (`--max-restarts`), so the restarted processes would otherwise read the addresses the killed
    ones published and fail to connect ("Connection refused"). Without torchrun's agent, rank 0
    serves the store.
    """
    agent_serves = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
        is_master=rank == 0 and not agent_serves, timeout=timeout, multi_tenant=True,
    )  # fmt: skip
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"tubelet/attempt-{attempt}", store)


def default_device(env: DistEnv | None = None) -> torch.device:
    """This process's device: its own GPU (`cuda:LOCAL_RANK`) when there are GPUs, else the CPU."""
    env = env or dist_env()
    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def wrap_model(
    model: nn.Module, parallel: str, device: torch.device, precision: str = "fp32"
) -> nn.Module:
    """The model to train under the current process group (the model itself for one process).

    "ddp": `DistributedDataParallel` (a full copy per process, gradients averaged in backward).
    "fsdp": PyTorch's `fully_shard` (FSDP2) on every block (see `fsdp_units`) and on the root, in
    place: parameters, gradients and optimizer state are split across processes, and each block's
    weights are gathered only while it runs, for models whose training state does not fit one device.
    With `precision` "bf16"/"fp16" the gathered weights are cast to it (FSDP2's mixed precision:
    half the bytes to gather) while the shards, the gradients' reduction and the optimizer stay in
    float32. Activation checkpointing (the model's own, set before) composes with it: a block's
    recomputation in backward gathers its weights again.
    """
    if parallel not in PARALLEL:
        raise ValueError(f"parallel must be one of {PARALLEL}, not {parallel!r}")
    if dist_env().world_size == 1:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if dtype is not None:
            # BatchNorm keeps float32 weights beside its float32 running statistics (it takes a
            # half-precision input with them); a unit of its own gives it its own policy.
            for norm in model.modules():
                if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.affine:
                    fully_shard(norm, mp_policy=MixedPrecisionPolicy())
        policy = MixedPrecisionPolicy(
            param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None
        )
        for unit in fsdp_units(model):
            if not is_fsdp(unit):  # a BatchNorm item of a Sequential has its unit already
                fully_shard(unit, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules to shard one by one: the items of every `ModuleList`/`Sequential` that holds at least
    two modules with parameters (transformer blocks, ResNet stages), outermost first, none nested."""
    units: list[nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside or not isinstance(module, nn.ModuleList | nn.Sequential):
            continue
        items = [m for m in module if any(True for _ in m.parameters())]
        if len(items) < 2:
            continue
        units.extend(items)
        for item in items:
            inside.update(id(m) for m in item.modules())
    return units


def is_fsdp(model: nn.Module) -> bool:
    """Whether `fully_shard` wrapped this model."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP shards in place, so it is the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sums of `values` over all processes (the values themselves for one process),
    reduced on the host (`_HOST_GROUP`): no wait for the GPU."""
    if dist_env().world_size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, group=_HOST_GROUP)
    return tensor.tolist()


def all_reduce_max(value: N) -> N:
    """The largest `value` (an int or a float) over all processes, reduced on the host."""
    if dist_env().world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=_HOST_GROUP)
    return type(value)(tensor.item())


def all_gather_objects(obj: Any) -> list[Any]:
    """`obj` from every process, in rank order (picklable objects)."""
    if dist_env().world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_meters(meter: Any) -> Any:
    """One meter holding every process's results, on every process (the meter itself for one).

    The meter must offer `merge(other)`, which adds another meter's results to it; each process
    evaluated a disjoint share of the videos, so the merged meter counts each video once.
    """
    if dist_env().world_size == 1:
        return meter
    if not hasattr(meter, "merge"):
        raise ValueError(
            f"{type(meter).__name__} has no merge(other) method: distributed evaluation needs one "
            "to combine the processes' shares of the validation set"
        )
    meters = all_gather_objects(meter)
    merged = meters[0]
    for other in meters[1:]:
        merged.merge(other)
    return merged


def all_reduce_gradients(model: nn.Module) -> None:
    """Average the parameters' gradients over all processes by hand (for a step whose backward ran
    without DDP's own synchronisation because some process had no batch)."""
    world = dist_env().world_size
    if world == 1:
        return
    for p in model.parameters():
        if p.requires_grad:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def broadcast_buffers(model: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics), e.g. before evaluating, so that
    each share of the videos is scored by the model rank 0 saves."""
    if dist_env().world_size == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def main_first(make: Callable[[], T]) -> T:
    """`make()` on rank 0 first and then, once it is done, on the others: for work whose result is
    cached on disk (a built-in dataset), so processes do not write the same files at once."""
    if dist_env().is_main:
        result = make()
        barrier()
        return result
    barrier()
    return make()


def main_decides(decide: Callable[[], T]) -> T:
    """`decide()` on rank 0 alone; every process returns its result, or raises its error.

    For a decision that rank 0 takes from the run folder (is this the same run?): the others get the
    verdict, not the files, so all go on together or all stop with the same message. A ValueError
    or FileNotFoundError (what a user can fix) is raised again as such on every rank, any other
    error as a RuntimeError naming it.
    """
    if dist_env().world_size == 1:
        return decide()
    verdict: list[Any] = [None]
    error: BaseException | None = None
    if dist_env().is_main:
        try:
            verdict[0] = ("ok", decide())
        except Exception as caught:  # every kind reaches the other ranks before rank 0 raises it
            error = caught
            verdict[0] = ("error", type(caught).__name__, str(caught))
    dist.broadcast_object_list(verdict, src=0)
    if error is not None:
        raise error
    if verdict[0][0] == "ok":
        return verdict[0][1]
    _, kind, message = verdict[0]
    known = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError}
    if kind in known:
        raise known[kind](message)
    raise RuntimeError(f"rank 0 failed with {kind}: {message}")


def launched_rank() -> int:
    """The rank torchrun gave this process (0 when not started by torchrun); readable after the
    process group is gone, e.g. to print a command's result once."""
    return int(os.environ.get("RANK", 0))


def barrier() -> None:
    """Wait for every process (no-op for one)."""
    if dist_env().world_size > 1:
        dist.barrier()


def destroy() -> None:
    """Leave the process group, if this process is in one."""
    global _HOST_GROUP
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _HOST_GROUP = None
