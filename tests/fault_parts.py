"""Test-only parts for the fault tests: a callback that signals its own process at a
chosen moment of a run, so a test stops a real run in the phase it wants, every time.

The moment comes from the environment (`TRAINLAB_TEST_SIGNAL_AT=EVENT:SIGNAL`), so the
command stays the same for the stopped run, its `resume=auto` and a reference run.
"""

from __future__ import annotations

import os
import signal

from trainlab.components.callbacks import Callback

VARIABLE = "TRAINLAB_TEST_SIGNAL_AT"


class SignalAt(Callback):
    """At the event named in $TRAINLAB_TEST_SIGNAL_AT (a callback event, or `build`: when
    the experiment builds its callbacks), sends the named signal to this process."""

    def __init__(self) -> None:
        event, _, name = os.environ.get(VARIABLE, ":").partition(":")
        self.event, self.signal = event, getattr(signal, name or "SIGTERM")
        self._maybe("build")

    def _maybe(self, event: str) -> None:
        if event == self.event:
            os.kill(os.getpid(), self.signal)

    def on_fit_start(self, trainer, state) -> None:
        self._maybe("on_fit_start")

    def on_epoch_end(self, trainer, state) -> None:
        self._maybe("on_epoch_end")

    def on_fit_end(self, trainer, state) -> None:
        self._maybe("on_fit_end")

    def on_test_end(self, trainer, state) -> None:
        self._maybe("on_test_end")
