"""Test-only faults for runs on several processes: one rank fails at a chosen step.

`TRAINLAB_TEST_RANK_FAULT=RANK:STEP:KIND` (so the command stays the same for the faulty
run, its `resume=auto` and a reference run), KIND one of:
raise (an exception on that rank), kill (SIGKILL to that rank), nan (its outputs become
NaN from that step on), term (SIGTERM to that rank only), killpg / termpg (SIGKILL /
SIGTERM to the whole job's process group, as SLURM or a scheduler does).
"""

from __future__ import annotations

import os
import signal

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
        if self.kind in ("killpg", "termpg"):
            sig = signal.SIGKILL if self.kind == "killpg" else signal.SIGTERM
            os.killpg(os.getpgid(0), sig)
