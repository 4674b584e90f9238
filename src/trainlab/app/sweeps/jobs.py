"""What each job of a sweep did, kept in the sweep folder and printed as it happens.

Every job writes `<sweep>/.job-<number>.json` when it starts and when it ends (complete,
pruned or failed, with the one-line reason), from Hydra's `on_job_start` / `on_job_end`
in the job's own process, whatever the launcher. The leaderboard reads these records:
a failed job leaves no run folder, and a job's wall time is measured from its own start.
Each job prints a line when it starts and ends; where the launcher runs jobs out of sight
(submitit writes their output to log files), the sweep process relays those lines.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

# A job's record, a file beside the job folders (a folder there would pass for a job's).
RECORD = ".job-{}.json"
# Imported before a job's clock starts: the first job of a process would otherwise count
# these imports (most of a small job's time) as its own.
WARM_IMPORTS = (
    "torch",
    "torch._dynamo",  # the slowest, imported when the first optimizer is built
    "torchmetrics",
    "sklearn.model_selection",
    "torch.utils.tensorboard",
    "trainlab.engine.trainer",
    "trainlab.components.models",
    "trainlab.components.data",
)
# How often the sweep process looks for records to relay (seconds).
RELAY_EVERY_S = 1.0


def is_sweep_job(config: DictConfig) -> bool:
    from hydra.types import RunMode

    return config.hydra.mode == RunMode.MULTIRUN


def out_of_sight(config: DictConfig) -> bool:
    """Whether the launcher sends the jobs' output to files rather than to this terminal."""
    return "submitit" in str(config.hydra.launcher.get("_target_", ""))


def read_records(sweep_dir: str | Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(Path(sweep_dir).glob(RECORD.format("*"))):
        with contextlib.suppress(OSError, ValueError):
            records.append(json.loads(path.read_text()))
    return sorted(records, key=lambda r: r.get("job", 0))


def warm_up() -> None:
    """Import what every job imports, so a job's wall time is its own (and forked
    workers start with it done)."""
    for name in WARM_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def job_started(config: DictConfig) -> dict[str, Any]:
    """Record and print the start of this job; return the record."""
    from trainlab.engine import preemption

    warm_up()
    preemption.raise_if_stopped()  # a stop swallowed while importing (garbage collection)
    sweep_dir = Path(config.hydra.sweep.dir)
    run_dir = Path(config.hydra.runtime.output_dir)
    record = {
        "job": int(config.hydra.job.num),
        "run": os.path.relpath(run_dir, sweep_dir),
        "overrides": [str(o) for o in config.hydra.overrides.task],
        "status": "running",
        "started_at": time.time(),
    }
    write_record(sweep_dir, record)
    if not out_of_sight(config):
        print(progress_line(record), flush=True)
    return record


def job_ended(config: DictConfig, record: dict[str, Any], job_return: Any) -> None:
    """Record and print how this job ended: complete, pruned or failed (with why)."""
    from hydra.core.utils import JobStatus

    from trainlab.errors import one_line

    record = dict(record, wall_time_s=round(time.time() - record["started_at"], 3))
    if job_return.status == JobStatus.COMPLETED:
        record["status"] = "pruned" if pruned_at(config) is not None else "complete"
        value = job_return._return_value
        record["value"] = float(value) if isinstance(value, (int, float)) else None
        record["objective"] = str(config.get("objective", ""))
        metrics_file = Path(config.hydra.runtime.output_dir) / "metrics.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            record["objective"] = json.loads(metrics_file.read_text())["objective"]["name"]
    else:
        record["status"] = "failed"
        record["reason"] = one_line(job_return._return_value)
    write_record(Path(config.hydra.sweep.dir), record)
    if not out_of_sight(config):
        print(progress_line(record), flush=True)


def pruned_at(config: DictConfig) -> int | None:
    """The epoch after which Optuna's pruner stopped this job (None: not pruned)."""
    from trainlab.app.sweeps.optuna_study import (
        TRIAL_KEY,
        open_storage,
        pruned_epoch,
        trial_storage,
    )

    trial = config.get(TRIAL_KEY)
    if trial is None:
        return None
    storage = open_storage(trial_storage(trial))
    return pruned_epoch(storage, trial.study_name, trial.number, config.hydra.runtime.output_dir)


def write_record(sweep_dir: Path, record: dict[str, Any]) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / RECORD.format(record["job"])
    fd, tmp = tempfile.mkstemp(dir=sweep_dir, prefix=f"{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def progress_line(record: dict[str, Any]) -> str:
    """One line per job event: `job 3 started: optim.lr=0.01` / `job 3 complete ...`."""
    what = short_overrides(record.get("overrides", []))
    status = record["status"]
    if status == "running":
        return f"job {record['job']} started: {what}"
    took = f"{record.get('wall_time_s', 0):.1f} s"
    if status == "failed":
        return f"job {record['job']} failed after {took}: {record.get('reason')}  ({what})"
    value = record.get("value")
    result = f"{record.get('objective')} = {value:.4f}" if value is not None else "no value"
    return f"job {record['job']} {status} in {took}: {result}  ({what})"


# Overrides that say where a job was written, or how a sweep reaches it, not what it tried.
PLUMBING = ("paths.", "hydra.", "+optuna", "++optuna", "optuna_trial", "resume=")


def short_overrides(overrides: list[str], keys: set[str] | None = None) -> str:
    """The overrides as `key=value` words, floats to 4 significant digits; only `keys`
    when given (the ones a sweep varies), never the plumbing."""
    words = []
    for override in overrides:
        if override.startswith(PLUMBING) or "=" not in override:
            continue
        key, value = override.split("=", 1)
        if keys is not None and key not in keys:
            continue
        words.append(f"{key}={short_value(value)}")
    return " ".join(words) or "(defaults)"


def short_value(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    if not any(c in value.lower() for c in ".e") or "inf" in value.lower():
        return value  # an integer, or inf / nan, as written
    short = f"{number:.4g}"
    return short if any(c in short for c in ".e") else f"{short}.0"  # still a float


class Relay:
    """In the sweep process: print each job's start and end lines as their records appear
    (for launchers that run jobs out of sight)."""

    def __init__(self, sweep_dir: str | Path) -> None:
        self.sweep_dir = Path(sweep_dir)
        # Records of an earlier sweep of the same study are not news.
        self.seen = {
            (r["job"], event)
            for r in read_records(sweep_dir)
            for event in ("started", "ended")
            if event == "started" or r["status"] != "running"
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sweep-progress", daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.print_new()

    def _watch(self) -> None:
        while not self._stop.wait(RELAY_EVERY_S):
            self.print_new()

    def print_new(self) -> None:
        for record in read_records(self.sweep_dir):
            event = (record["job"], "started" if record["status"] == "running" else "ended")
            if event[1] == "ended" and (record["job"], "started") not in self.seen:
                self.seen.add((record["job"], "started"))
                print(progress_line(dict(record, status="running")), flush=True)
            if event not in self.seen:
                self.seen.add(event)
                print(progress_line(record), flush=True)
