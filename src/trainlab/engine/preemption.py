"""Stop signals: SIGTERM, and SIGUSR1 (which SLURM sends ahead of a time limit).

While `handled()` is active a stop signal does not end the process: the handler only
records it, and the training loop looks at `requested()` after each optimizer step and at
each epoch's end, saves a checkpoint there and stops (see `Trainer.fit`). Handlers run
between Python bytecodes, so the flag is all they may touch: no I/O, no logging.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = ("SIGTERM", "SIGUSR1")  # SIGUSR1 does not exist on Windows

_received: int | None = None


def _record(signum: int, frame: object) -> None:
    global _received
    _received = signum


def requested() -> str | None:
    """The name of the stop signal received inside `handled()`, or None."""
    return None if _received is None else signal.Signals(_received).name


@contextmanager
def handled() -> Iterator[None]:
    """Within the block, a stop signal is recorded instead of ending the process."""
    global _received
    _received = None
    # Python lets only the main thread install handlers; elsewhere signals keep their
    # default effect (a launcher running jobs in threads handles them itself).
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for name in STOP_SIGNALS:
        if (number := getattr(signal, name, None)) is not None:
            previous[number] = signal.signal(number, _record)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _received = None
