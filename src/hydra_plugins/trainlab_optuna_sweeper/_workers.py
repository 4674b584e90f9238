"""Many sweep processes (workers) on one study: who runs what, and what a dead one leaves.

Every worker runs the same loop against the study in storage (SQLite in the sweep folder,
or any SQLAlchemy URL: PostgreSQL for workers on several machines):

    under the study's ask lock (one worker at a time, across machines):
        fail the trials of dead workers; queue each again, once, with its parameters
        count the trials taken: complete, pruned, failed, running, queued
        ask for queued trials first, then new ones up to n_trials in all
    run them, beating each one's heartbeat; tell how each went
    with nothing left to ask, wait while other workers' trials run (one may die)

A worker is dead when its trials' heartbeat is older than `grace_period` (Optuna's
heartbeat), or at once when it ran on this machine and its process is gone. Workers that
are alive are never disturbed: only their own process fails or tells their trials.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from trainlab.app.sweeps.jobs import write_record
from trainlab.app.sweeps.optuna_study import RETRY_OF, WORKER, interrupted, trial_id

log = logging.getLogger(__name__)

# States a trial is in once some worker took it (or queued it to run again).
TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
# With nothing left to ask, a worker looks this often whether the others' trials ended.
WAIT_POLL_S = 1.0
# Seconds a forked worker has to stop its trial once its parent passed a stop on.
STRAGGLER_S = 60


def check_heartbeat(heartbeat_interval: Any, grace_period: Any) -> None:
    """Both whole seconds, the grace longer than the interval."""
    from trainlab.errors import ConfigError

    for name, value in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(f"hydra.sweeper.{name}={value!r} must be an integer >= 1 (seconds)")
    if grace_period <= heartbeat_interval:
        raise ConfigError(
            f"hydra.sweeper.grace_period={grace_period} must be longer than "
            f"hydra.sweeper.heartbeat_interval={heartbeat_interval}, or live workers' "
            "trials would be taken for dead ones; e.g. 3 heartbeat intervals"
        )


def worker_id() -> str:
    """This process, as `host:pid namespace:pid` (the namespace tells containers apart)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}:{namespace}:{os.getpid()}"


def is_dead_here(worker: str | None) -> bool:
    """Whether `worker` ran on this machine (and pid namespace) and its process is gone."""
    if not worker or worker.count(":") < 2:
        return False
    host_and_namespace, pid = worker.rsplit(":", 1)
    if host_and_namespace != worker_id().rsplit(":", 1)[0]:
        return False  # another machine's: its heartbeat tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def count_taken(study: optuna.Study) -> int:
    """Trials that count toward n_trials: all but those failed by an interruption (their
    queued retry counts instead)."""
    trials = study.get_trials(deepcopy=False)
    cut = interrupted(trials)
    return sum(t.state in TAKEN or (t.state == TrialState.FAIL and t.number not in cut)
               for t in trials)  # fmt: skip


def running_elsewhere(study: optuna.Study, mine: str) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get(WORKER) != mine
    ]


class DeadTrials:
    """The storage's heartbeat-stale callback: queue a dead worker's trial once more with
    its parameters (the retry names it: RETRY_OF), and say so in the log and in the sweep
    folder's job record."""

    def __init__(self, sweep_dir: Path, grace_period_s: int) -> None:
        self.sweep_dir = sweep_dir
        self.grace_period_s = grace_period_s
        with warnings.catch_warnings():  # "experimental" in Optuna's words
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=1)

    def __call__(self, study: optuna.Study, trial: FrozenTrial, why: str = "") -> None:
        why = why or f"its worker stopped beating (no heartbeat for {self.grace_period_s} s)"
        storage = study._storage
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retried = not RetryHeartbeatStaleTrialCallback.retry_history(trial)
            self.retry(study, trial)
        retry = next(
            (
                t
                for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                if t.system_attrs.get("retry_history", [None])[-1] == trial.number
            ),
            None,
        )
        if retried and retry is not None:
            retry_key = trial_id(storage, study.study_name, retry.number)
            storage.set_trial_user_attr(retry_key, RETRY_OF, trial.number)
            storage.set_trial_user_attr(retry_key, WORKER, None)
            status, reason = "interrupted", f"{why}; queued again as trial {retry.number}"
        else:
            status, reason = "failed", f"interrupted: {why}; already a retry, so not queued again"
        log.warning(f"trial {trial.number} {status}: {reason}")
        write_record(
            self.sweep_dir,
            {
                "job": trial.number,
                "run": str(trial.number),
                "overrides": trial.user_attrs.get("overrides", []),
                "status": status,
                "reason": reason,
            },
        )


def fail_dead_trials(study: optuna.Study, dead: DeadTrials) -> None:
    """Fail the trials of dead workers (heartbeat too old, or a process of this machine
    that is gone) and queue each once more: in a single worker, whoever fails it first."""
    storage = study._storage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_dead_here(trial.user_attrs.get(WORKER)):
            continue
        key = trial_id(storage, study.study_name, trial.number)
        try:
            if not storage.set_trial_state_values(key, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        dead(study, storage.get_trial(key), "its sweep process on this machine was killed")


class Heartbeats:
    """A thread beating the heartbeat of the trials this worker runs, every interval."""

    def __init__(self, storage: optuna.storages.RDBStorage, interval_s: float) -> None:
        self.storage = storage
        self.interval_s = interval_s
        self.trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="trial-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)

    def add(self, key: int) -> None:
        self.storage.record_heartbeat(key)  # at once: a trial without one never goes stale
        with self._lock:
            self.trial_ids.add(key)

    def remove(self, key: int) -> None:
        with self._lock:
            self.trial_ids.discard(key)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                keys = list(self.trial_ids)
            for key in keys:
                with contextlib.suppress(Exception):  # a missed beat is retried next time
                    self.storage.record_heartbeat(key)


@contextlib.contextmanager
def ask_lock(url: str, study_name: str) -> Iterator[None]:
    """One worker at a time counts the study and asks for trials, so together they never
    take more than n_trials: a PostgreSQL advisory lock (released when its connection
    closes, however the worker ends), or a file lock beside an SQLite database. Other
    databases go without: two workers asking at the same moment may then both take the
    last trial."""
    if url.startswith("sqlite:///"):
        import fcntl

        path = Path(url.removeprefix("sqlite:///") + ".ask.lock")
        if not path.parent.is_dir():  # no database either: opening it says so in one line
            yield
            return
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    if not url.startswith(("postgresql", "postgres")):
        yield
        return
    import sqlalchemy

    key = zlib.crc32(f"trainlab sweep {study_name}".encode())
    try:
        connection = _lock_engine(url).connect()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError):
        connection = None
    if connection is None:  # the database cannot be reached: opening it says why, in one line
        yield
        return
    with connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()


_engines: dict[str, Any] = {}


def _lock_engine(url: str) -> Any:
    import sqlalchemy

    if url not in _engines:
        _engines[url] = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    return _engines[url]


# ---------------------------------------------------------------- workers on this machine
def fork_workers(count: int, work: Any) -> list[int]:
    """Start `count - 1` more workers on this machine: forked from this process, each runs
    `work()` (its part of the study's loop) in a process group of its own and exits with
    its status.

    Forked once the slow imports are done (torch, torchmetrics, scikit-learn: most of a
    sweep's start-up), so the workers start at once; no thread, database connection or
    TensorBoard writer is open yet to be shared. Each trains with its share of the cores.
    A child's own line reaches stderr only for what the parent cannot also see: the
    settings' and the study's errors are the parent's to say.
    """
    from trainlab.app.sweeps.jobs import warm_up
    from trainlab.engine import threads

    warm_up()
    threads.share_cores(count)
    sys.stdout.flush()  # what is buffered now would be written by every worker
    sys.stderr.flush()
    children: list[int] = []
    try:
        for _ in range(count - 1):
            pid = os.fork()
            if pid == 0:  # the child: never returns into Hydra (no leaderboard, no exit hooks)
                os._exit(_run_child(work))
            children.append(pid)
    except BaseException as ex:  # a stop signal meanwhile: the ones forked stop too
        wait_workers(children, ending=ex)
        raise
    return children


def _run_child(work: Any) -> int:
    from trainlab.engine.preemption import Stopped
    from trainlab.errors import ConfigError, one_line

    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the parent, which passes it on once
    try:
        work()
        status = 0
    except KeyboardInterrupt:
        status = 130
    except Stopped:
        status = 143
    except ConfigError:
        status = 2  # the same settings and study: the parent's line says it
    except BaseException as ex:
        print(f"error: sweep worker {os.getpid()}: {one_line(ex)}", file=sys.stderr)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return status


def wait_workers(children: list[int], ending: BaseException | None) -> None:
    """Wait for the forked workers. A parent ending early (Ctrl-C, a stop signal, an
    error) passes the signal on first, so each stops its trial as a sweep does; one still
    running `STRAGGLER_S` later is killed (its trial then runs again when resumed)."""
    import signal
    import time

    from trainlab.engine.preemption import Stopped

    if ending is None:  # the study is done: each worker ends once nothing is left to ask
        for pid in children:
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            if code not in (0, 2):  # 2: a settings error, the parent's line says it
                how = f"was killed by {signal.Signals(-code).name}" if code < 0 else (
                    f"ended with exit status {code}")  # fmt: skip
                log.warning(f"sweep worker {pid} {how}; the others ran its trials")
        return
    if isinstance(ending, KeyboardInterrupt):
        number = signal.SIGINT
    elif isinstance(ending, Stopped):
        number = getattr(signal, ending.signal_name, signal.SIGTERM)
    else:
        number = signal.SIGTERM
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)
    deadline = time.monotonic() + STRAGGLER_S
    for pid in children:
        while os.waitpid(pid, os.WNOHANG)[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.1)
