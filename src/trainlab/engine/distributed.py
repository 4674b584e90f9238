"""Which process am I, how many are we, am I the one that writes: the one place that knows.

Everything that writes (the run folder, train.log, TensorBoard, checkpoints, metrics.json,
the leaderboard, the progress display) asks `is_main_process()` where it writes. With a
`torch.distributed` process group initialised the answers come from it; otherwise this is
rank 0 of 1 and `reduce` returns its input. torch.distributed is imported only when asked,
so a single process (and `--help`) never loads it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

REDUCE_OPS = ("sum", "mean", "max", "min")


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
