"""Test-only faults for runs on several processes: one rank fails at a chosen step.

`TRAINLAB_TEST_RANK_FAULT=RANK:STEP:KIND` (so the command stays the same for the faulty
run, its `resume=auto` and a reference run), KIND one of:
raise (an exception on that rank), kill (SIGKILL to that rank), nan (its outputs become
NaN from that step on), term (SIGTERM to that rank only), killjob / termjob (SIGKILL /
SIGTERM to every process of the job: the launcher and all its ranks, as SLURM does).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from trainlab.components.callbacks import Callback
from trainlab.engine import distributed

VARIABLE = "TRAINLAB_TEST_RANK_FAULT"


class RankFault(Callback):
    def __init__(self) -> None:
        rank, step, self.kind = (os.environ.get(VARIABLE) or "-1:0:none").split(":")
        self.rank, self.step = int(rank), int(step)

    def on_fit_start(self, trainer, state) -> None:
        if self.kind == "nan" and distributed.rank() == self.rank:

            def poison(module, inputs, output):
                return output * float("nan") if state.global_step >= self.step else output

            trainer.model.register_forward_hook(poison)

    def on_train_step_end(self, trainer, state) -> None:
        if distributed.rank() != self.rank or state.global_step != self.step:
            return
        if self.kind == "raise":
            raise ValueError(f"injected fault on rank {self.rank} at step {self.step}")
        if self.kind in ("kill", "term"):
            os.kill(os.getpid(), signal.SIGKILL if self.kind == "kill" else signal.SIGTERM)
        if self.kind in ("killjob", "termjob"):
            sig = signal.SIGKILL if self.kind == "killjob" else signal.SIGTERM
            launcher = os.getppid()
            for pid in [launcher, *children(launcher)]:
                os.kill(pid, sig)


def children(pid: int) -> list[int]:
    """The processes `pid` started (Linux: /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found
