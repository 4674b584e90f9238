"""Test-only part for the streaming fault tests: a callback that SIGKILLs its own process
after the optimizer step named in $TRAINLAB_TEST_KILL_AT_STEP (nothing is saved then)."""

from __future__ import annotations

import os
import signal

from trainlab.components.callbacks import Callback

VARIABLE = "TRAINLAB_TEST_KILL_AT_STEP"


class KillAtStep(Callback):
    def __init__(self) -> None:
        self.step = int(os.environ.get(VARIABLE, "-1"))

    def on_train_step_end(self, trainer, state) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
