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


# The stop signal (or SIGINT) that raised under `stops_raise()`. The exception a handler
# raises lands wherever the process is, and where that is a weakref callback or a __del__
# (garbage collection), Python prints "Exception ignored" and goes on: so the signal is
# kept, and `raise_if_stopped()` raises it again at the next safe point.
_seen: str | None = None


def _raise(signum: int, frame: object) -> None:
    global _seen
    _seen = signal.Signals(signum).name
    raise Stopped(_seen)


def _interrupt(signum: int, frame: object) -> None:
    global _seen
    _seen = "SIGINT"
    raise KeyboardInterrupt


def raise_if_stopped() -> None:
    """Raise again a stop (or Ctrl-C) that arrived under `stops_raise()` and whose exception
    was swallowed; called between a sweep's jobs and before training starts."""
    if _seen == "SIGINT":
        raise KeyboardInterrupt
    if _seen is not None:
        raise Stopped(_seen)


@contextmanager
def stops_raise() -> Iterator[None]:
    """Within the block (a whole command), a stop signal raises `Stopped`, and Ctrl-C
    KeyboardInterrupt as usual; both are raised again at the next `raise_if_stopped()`
    should the first be swallowed."""
    global _seen
    _seen = None
    interrupt_before = None
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        interrupt_before = signal.signal(signal.SIGINT, _interrupt)
    try:
        with _stop_signals_call(_raise):
            yield
    finally:
        if interrupt_before is not None:
            signal.signal(signal.SIGINT, interrupt_before)


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
    raise_if_stopped()  # one that came before, its exception swallowed
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
