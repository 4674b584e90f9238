"""`import trainlab` changes nothing process-wide, and a fit hands the stop signals back.

Process-wide settings (the allocator's thresholds, the exit without teardown) belong to
trainlab's own commands (`OWNS_PROCESS`); a program that imports trainlab keeps its
signal handlers, its thread count and its exit path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from trainlab.engine import preemption

# Every module a library user may import, engine to app.
MODULES = (
    "trainlab",
    "trainlab.engine.trainer",
    "trainlab.engine.distributed",
    "trainlab.engine.preemption",
    "trainlab.engine.runtime",
    "trainlab.engine.threads",
    "trainlab.components.metrics",
    "trainlab.components.loggers",
    "trainlab.components.callbacks.checkpoint",
    "trainlab.app.experiment",
    "trainlab.app.runs",
)


def test_importing_trainlab_changes_no_process_wide_setting() -> None:
    script = (
        "import signal, sys, torch\n"
        "before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1),"
        " torch.get_num_threads())\n"
        f"for name in {MODULES!r}:\n"
        "    __import__(name)\n"
        "from trainlab.app import experiment\n"
        "after = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1),"
        " torch.get_num_threads())\n"
        "print(before == after, experiment.OWNS_PROCESS)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["True", "False"]


def test_stop_signal_handlers_are_handed_back_after_the_block() -> None:
    def own_handler(signum: int, frame: object) -> None: ...

    previous = signal.signal(signal.SIGTERM, own_handler)
    try:
        with preemption.handled():
            assert signal.getsignal(signal.SIGTERM) is not own_handler
            os.kill(os.getpid(), signal.SIGTERM)  # recorded, not fatal
            assert preemption.requested() == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is own_handler
        assert preemption.requested() is None
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # on purpose
def test_a_stop_whose_exception_was_swallowed_is_raised_at_the_next_check() -> None:
    """A stop signal raises where the process is; in a __del__ or a weakref callback (the
    garbage collector's), Python prints "Exception ignored" and goes on. The stop is kept
    and raised again between a sweep's jobs and before training, or it would be lost (a
    sweep under load trained on to its end after SIGTERM)."""

    class Collected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # the handler runs here, inside __del__

    handlers = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    with preemption.stops_raise():
        Collected()  # collected at once: its __del__ swallows the Stopped
        with pytest.raises(preemption.Stopped, match="SIGTERM"):
            preemption.raise_if_stopped()
        with pytest.raises(preemption.Stopped, match="SIGTERM"), preemption.handled():
            raise AssertionError("training must not start after a stop")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    with preemption.stops_raise():  # the next command starts with no stop
        preemption.raise_if_stopped()
