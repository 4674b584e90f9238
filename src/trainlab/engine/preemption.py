"""Stop signals: SIGTERM, and SIGUSR1 (which SLURM sends ahead of a time limit).

While `handled()` is active a stop signal does not end the process: the handler only
records it, and the training loop looks at `requested()` after each optimizer step and at
each epoch's end, saves a checkpoint there and stops (see `Trainer.fit`). Handlers run
between Python bytecodes, so the flag is all they may touch: no I/O, no logging.

Outside the loop, trainlab's own commands (never `import trainlab`) use `stops_raise()`:
there a stop signal raises `Stopped` where the process is, so the command ends with a line
saying where it stopped (`phase`) and how to continue, instead of dying silently.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = ("SIGTERM", "SIGUSR1")  # SIGUSR1 does not exist on Windows

_received: int | None = None

# What the run is doing, for the line a stop prints ("testing the best checkpoint").
phase = "starting up"


class Stopped(BaseException):
    """A stop signal arrived outside the training loop. A BaseException, as
    KeyboardInterrupt is, so no `except Exception` on the way swallows it."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def _raise(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


@contextmanager
def stops_raise() -> Iterator[None]:
    """Within the block (a whole command), a stop signal raises `Stopped`."""
    with _stop_signals_call(_raise):
        yield


def _record(signum: int, frame: object) -> None:
    global _received
    _received = signum


def requested() -> str | None:
    """The name of the stop signal received inside `handled()`, or None."""
    return None if _received is None else signal.Signals(_received).name


@contextmanager
def handled() -> Iterator[None]:
    """Within the block, a stop signal is recorded instead of ending the process (one the
    loop did not act on is still `requested()` at the block's end: the caller's to raise)."""
    global _received
    _received = None
    try:
        with _stop_signals_call(_record):
            yield
    finally:
        _received = None


@contextmanager
def _stop_signals_call(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Within the block, every stop signal calls `handler`; the previous handlers after.
    Python lets only the main thread install handlers; elsewhere signals keep their
    default effect (a launcher running jobs in threads handles them itself)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for name in STOP_SIGNALS:
        if (number := getattr(signal, name, None)) is not None:
            previous[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, handler_before in previous.items():
            signal.signal(number, handler_before)
