"""How many CPU threads torch trains with: `trainer.num_threads=auto` measures.

Whether a second thread helps depends on the model, the batch and the machine's load at
once: a small model's operations are too short to split (each split costs a wake-up and a
wait), and when another process holds a core, the thread waiting for it stalls the whole
step; a large model's operations gain nearly a core's worth per thread. No estimate from
the layers gets all three right (docs/speed.md, "CPU threads"), so `auto` times a few
training steps on a real batch with each candidate count and keeps the fastest, as the
batch-size finder times batch sizes.

The steps run on copies of the model and optimizer, with torch's random state put back
after, so measuring changes nothing in the run: it trains exactly as it would with the
chosen count given as `trainer.num_threads`.
"""

from __future__ import annotations

import copy
import math
import os
import re
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

# torch's own choice (the cores this process may use, or OMP_NUM_THREADS), before any
# run of this process changed it: the most threads `auto` tries.
DEFAULT_THREADS = torch.get_num_threads()
# Processes of one command sharing this machine's cores (a sweep's forked workers).
_sharing = 1
# A count within this fraction of the fastest is as good: fewer threads leave cores to
# the rest of the machine and stall less when it gets busy.
TIE = 0.05
# Timed steps per candidate in each round, and rounds at most; the rounds alternate the
# candidates' order so a machine getting busier or quieter meanwhile favours none of them.
STEPS_PER_ROUND, MAX_ROUNDS = 2, 3
# No round begins that would end past this many seconds (a large model gets one round).
BUDGET_S = 1.0
# A count whose step takes this many times the fastest step seen is dropped.
SLOW = 2.5

Step = Callable[[], None]
# What this process measured (count, times shown), by `work_key`: a run built again in the
# same process (a cross-validation fold, the next job of a sweep, a test) trains with the
# same count and measures nothing.
MEASURED: dict[str, tuple[int, str]] = {}
# `name=0.25`, `name=1e-05` in a module's repr: settings that do not change the work.
DECIMAL_SETTING = re.compile(r"(\w+)=-?(?:\d*\.\d+(?:e[-+]?\d+)?|\d+e[-+]?\d+)(?=[,)])")


def choose_threads(
    setting: int | str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch: tuple[torch.Tensor, torch.Tensor],
    *,
    precision_context: AbstractContextManager | None = None,
) -> tuple[int, str]:
    """The thread count for `trainer.num_threads=setting`, and why (for the run's log).

    `batch` is a training batch of the run's size; `precision_context` the autocast the
    run trains under.
    """
    if setting != "auto":
        return int(setting), f"trainer.num_threads={setting}"
    if os.environ.get("OMP_NUM_THREADS"):
        return DEFAULT_THREADS, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    cores = available_cores()
    if cores == 1:
        return 1, "one core"
    key = work_key(model, optimizer, loss_fn, batch, precision_context, cores)
    if key in MEASURED:
        count, shown = MEASURED[key]
        return count, f"measured earlier in this process: {shown}"
    step = training_step(model, optimizer, loss_fn, batch, precision_context)
    seconds = time_steps(step, candidates(cores))
    shown = ", ".join(f"{n} → {milliseconds(s)}/step" for n, s in seconds.items())
    MEASURED[key] = fastest(seconds), shown
    return fastest(seconds), f"measured: {shown}"


def work_key(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch: tuple[torch.Tensor, torch.Tensor],
    precision_context: AbstractContextManager | None,
    cores: int,
) -> str:
    """What the time of a step depends on, besides the machine: the layers, the batch's
    shape, the optimizer's kind, the precision and the cores.

    The layers' decimal settings (a dropout's p, a norm's eps or momentum) are left out:
    they hardly change a step's time, and a sweep varies them from job to job, which
    would measure again in every job.
    """
    shapes = [tuple(getattr(part, "shape", ())) for part in batch]
    fused = optimizer.defaults.get("fused")
    precision = getattr(precision_context, "fast_dtype", None)
    layers = DECIMAL_SETTING.sub(r"\1=", repr(model))
    return repr((layers, repr(loss_fn), shapes, type(optimizer), fused, precision, cores))


def share_cores(processes: int) -> None:
    """This process and `processes - 1` others of the same command (a sweep's forked
    workers) train side by side here: each is given its share of the cores."""
    global _sharing
    _sharing = max(int(processes), 1)


def available_cores() -> int:
    """The cores this process may train on: those it may run on (its affinity, at most
    torch's default), shared with the other processes of a run on this machine
    (`LOCAL_WORLD_SIZE`, as torchrun sets it, or a sweep's workers); at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    cores = min(cores, DEFAULT_THREADS)
    processes = max(int(os.environ.get("LOCAL_WORLD_SIZE") or 1), _sharing, 1)
    return max(cores // processes, 1)


def candidates(cores: int) -> list[int]:
    """1, 2, 4, ... below `cores`, then `cores` itself: a handful of steps to time however
    many cores there are."""
    counts = [1]
    while counts[-1] * 2 < cores:
        counts.append(counts[-1] * 2)
    return [*counts, cores] if cores > 1 else counts


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch: tuple[torch.Tensor, torch.Tensor],
    precision_context: AbstractContextManager | None = None,
) -> Step:
    """One training step (forward, loss, backward, optimizer step) on `batch`, as a
    function, on copies of `model`, `optimizer` and `loss_fn`: the originals are never
    touched (a loss may keep state, e.g. a count of its calls)."""
    # Copied together, so the copied optimizer steps the copied model's parameters.
    model, optimizer, loss_fn = copy.deepcopy((model, optimizer, loss_fn))
    model.train()
    inputs, targets = batch
    context = precision_context if precision_context is not None else nullcontext()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with context:
            loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()

    return step


def time_steps(step: Step, counts: list[int]) -> dict[int, float]:
    """The median seconds of `step` at each thread count in `counts` (1 first).

    One step first (allocations, the optimizer's state), then rounds that run, for each
    count, one step left out of its median (the thread team grows or shrinks in it) and
    `STEPS_PER_ROUND` counted ones. A count with a step `SLOW` times the fastest step seen
    is dropped at once: it cannot win, and on a busy machine its steps may be very slow.
    torch's thread count and random state are as before afterwards.
    """
    before = torch.get_num_threads()
    samples: dict[int, list[float]] = {count: [] for count in counts}
    fastest_step = math.inf
    dropped: set[int] = set()

    def timed(count: int) -> float:
        nonlocal fastest_step
        started = time.perf_counter()
        step()
        seconds = time.perf_counter() - started
        fastest_step = min(fastest_step, seconds)
        if seconds > SLOW * fastest_step:
            dropped.add(count)
        return seconds

    began = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator
            torch.set_num_threads(counts[0])
            step()
            for round_ in range(MAX_ROUNDS):
                round_began = time.perf_counter()
                for count in counts if round_ % 2 == 0 else counts[::-1]:
                    if count in dropped:
                        continue
                    torch.set_num_threads(count)
                    first = timed(count)
                    if count in dropped and not samples[count]:
                        samples[count].append(first)  # shown as what it took
                    for _ in range(STEPS_PER_ROUND):
                        if count not in dropped:
                            samples[count].append(timed(count))
                ended = time.perf_counter()
                if ended - began + (ended - round_began) > BUDGET_S:
                    break
    finally:
        torch.set_num_threads(before)
    return {count: statistics.median(times) for count, times in samples.items()}


def fastest(seconds: dict[int, float]) -> int:
    """The fewest threads within `TIE` of the fastest time."""
    best = min(seconds.values())
    return min(count for count, value in seconds.items() if value <= best * (1 + TIE))


def milliseconds(seconds: float) -> str:
    value = seconds * 1e3
    return f"{value:.0f} ms" if value >= 10 else f"{value:.2g} ms"
