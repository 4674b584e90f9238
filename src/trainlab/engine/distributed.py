"""Which process am I, how many are we, am I the one that writes: the one place that knows.

Everything that writes (the run folder, train.log, TensorBoard, checkpoints, metrics.json,
the leaderboard, the progress display) asks `is_main_process()` where it writes. With a
`torch.distributed` process group initialised the answers come from it; otherwise this is
rank 0 of 1 and `reduce` returns its input. torch.distributed is imported only when asked,
so a single process (and `--help`) never loads it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

REDUCE_OPS = ("sum", "mean", "max", "min")
T = TypeVar("T")


def _group_initialised() -> bool:
    # torch.distributed is loaded by whoever initialises a group: if it is not loaded,
    # there is no group, and nothing needs importing to know it.
    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the group; 0 without one."""
    if not _group_initialised():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def world_size() -> int:
    """How many processes train together; 1 without a group."""
    if not _group_initialised():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def is_main_process() -> bool:
    """Whether this process writes the run's files (rank 0)."""
    return rank() == 0


def reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """`tensor` combined over every process (`op`: sum, mean, max or min), on every process.

    Returns a new tensor; with one process, a copy of `tensor`.
    """
    if op not in REDUCE_OPS:
        raise ValueError(f"reduce op {op!r}: choose one of {', '.join(REDUCE_OPS)}")
    result = tensor.clone()
    if world_size() == 1:
        return result
    import torch.distributed as dist

    ops = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM}
    ops |= {"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    dist.all_reduce(result, op=ops[op])
    if op == "mean":
        result = result / world_size()
    return result


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over every process, on every process."""
    return reduce(tensor, "mean")


# ------------------------------------------------------------------ the process group
# What torchrun (and trainlab's own launcher) sets for each process.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_world_size() -> int:
    """How many processes a launcher started for this run (WORLD_SIZE; SLURM's task count
    when not under torchrun), 1 for a process started alone."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return int(os.environ.get("SLURM_NTASKS", "1")) if "SLURM_PROCID" in os.environ else 1


def local_rank() -> int:
    """This process's rank on its machine (the GPU it uses)."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))


def torch_env_from_slurm(environ: Mapping[str, str]) -> dict[str, str]:
    """torch.distributed's variables for a SLURM task started without torchrun (srun, the
    submitit launcher): rank, world size and local rank from SLURM's; the first node of the
    job as the rendezvous host; a port derived from the job id, the same on every task."""
    nodes = environ.get("SLURM_STEP_NODELIST", environ.get("SLURM_JOB_NODELIST", "127.0.0.1"))
    return {
        "RANK": environ["SLURM_PROCID"],
        "WORLD_SIZE": environ["SLURM_NTASKS"],
        "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": environ.get("MASTER_ADDR", first_host(nodes)),
        "MASTER_PORT": environ.get(
            "MASTER_PORT", str(20000 + int(environ.get("SLURM_JOB_ID", "0")) % 20000)
        ),
    }


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `gpu[03-05,9],cpu1` -> `gpu03`."""
    head = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if head is None:
        return nodelist
    prefix, ranges = head.groups()
    return prefix if ranges is None else prefix + ranges.split(",")[0].split("-")[0]


def init_process_group(cuda: bool, timeout_s: float) -> bool:
    """Join the run's process group when a launcher started several processes (torchrun,
    `trainer.devices=N`, SLURM tasks); False (and nothing done) for a single process.

    gloo on CPU; on CUDA, NCCL for CUDA tensors with this process's GPU (LOCAL_RANK) and
    gloo beside it for the small CPU tensors (stop votes, counts, objects). Every
    collective then fails after `timeout_s` instead of waiting for ever on a process that
    is gone.
    """
    if _group_initialised():
        return True
    if "RANK" not in os.environ and "SLURM_PROCID" in os.environ:
        os.environ.update(torch_env_from_slurm(os.environ))
    if launched_world_size() <= 1:
        return False
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if cuda:
        torch.cuda.set_device(local_rank())
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return True


def shard_batch(rows: T, rank: int, world: int) -> T:
    """Rank `rank`'s part of one global batch `rows` (a tensor or array of row indices).

    A full global batch of `batch_size x world` rows gives rank r rows [r*b, (r+1)*b);
    a shorter last one is cut as evenly as it goes (the first ranks take a row more).
    Every data path cuts its batches through this function.
    """
    if world == 1:
        return rows
    size, extra = divmod(len(rows), world)
    begin = rank * size + min(rank, extra)
    return rows[begin : begin + size + (rank < extra)]


def broadcast_object(value: Any, source: int = 0) -> Any:
    """`value` of rank `source`, on every process (a picklable Python object)."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def barrier() -> None:
    """Wait until every process gets here (e.g. until the main one has written a file)."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def gather_objects(value: Any) -> list[Any]:
    """`value` of every process, by rank, on every process."""
    if world_size() == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def any_process(flag: bool) -> bool:
    """Whether `flag` is true on any process (one small all-reduce)."""
    if world_size() == 1:
        return flag
    import torch

    return bool(reduce(torch.tensor([float(flag)]), "max").item())


class Vote:
    """Whether a flag is true on any process, agreed without waiting: `Vote(flag)` starts
    the all-reduce, `result()` waits for it (by then it has usually run beside other work).
    With one process the result is the flag itself."""

    def __init__(self, flag: bool) -> None:
        import torch

        self.flag = torch.tensor([float(flag)])
        self.work = None
        if world_size() > 1:
            import torch.distributed as dist

            self.work = dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, async_op=True)

    def result(self) -> bool:
        if self.work is not None:
            self.work.wait()
            self.work = None
        return bool(self.flag.item())


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's `tensor` (any number of rows each), concatenated in rank order."""
    if world_size() == 1:
        return tensor
    import torch
    import torch.distributed as dist

    counts = gather_objects(len(tensor))
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


def data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """`model` wrapped in DistributedDataParallel, on the device its parameters are on."""
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """`model` sharded over the processes with FSDP (`torch.distributed.fsdp.fully_shard`):
    each child module holding parameters is one unit (gathered only while it runs), the
    rest belongs to the root. In place; build the optimizer afterwards."""
    from torch.distributed.fsdp import fully_shard

    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child)
    fully_shard(model)
    return model


@contextlib.contextmanager
def gradients_kept_local(model: torch.nn.Module) -> Iterator[None]:
    """Backward without syncing the gradients over the processes (the micro-batches of an
    accumulated step before its last): DDP's `no_sync`; an FSDP model defers its
    reduce-scatter, keeping unsharded gradients until the step's last backward."""
    if is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with model.no_sync():
            yield


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` was sharded by `shard_model` (FSDP)."""
    if "torch.distributed.fsdp" not in sys.modules:
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state(model: torch.nn.Module, optimizer: Any) -> tuple[dict, dict]:
    """The whole (unsharded) model and optimizer state of a sharded model, on the main
    process's CPU (empty on the others): what a checkpoint holds, loadable without FSDP."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (
        get_model_state_dict(model, options=options),
        get_optimizer_state_dict(model, optimizer, options=options),
    )


def load_full_state(model: torch.nn.Module, state: dict, optimizer: Any = None) -> None:
    """Load a whole model (and optimizer) state, as `full_state` made it, into a sharded model."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, state["model"], options=options)
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a sharded tensor (DTensor); a plain tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor made whole on every process (a collective); a plain tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
