"""A leaderboard of runs: one row per run folder or sweep job, sorted by the objective.

Written as `leaderboard.csv` and `leaderboard.md` into the folder: after each job of a sweep
(so a sweep that fails or is stopped still has one), and printed when the sweep ends.
`scripts/leaderboard.py FOLDER` builds the same table for any folder of runs. A sweep's
job records (`jobs.py`) give each row its status (complete, pruned, failed with its
reason) and its wall time, measured from the job's own start. When an Optuna sweep ends,
the trials of its study that left nothing in the folder (other workers' on another file
system) are added from the study (`study_rows`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from trainlab.app.sweeps import jobs
from trainlab.app.sweeps.optuna_study import study_trials
from trainlab.components.callbacks.monitor import resolve_mode
from trainlab.engine.distributed import is_main_process

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)
# libyaml's safe loader where PyYAML has it (the same results, many times faster).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def find_runs(folder: Path) -> list[Path]:
    """Run folders under `folder` (those Hydra wrote a `.hydra/config.yaml` into)."""
    return sorted(p.parent.parent for p in folder.rglob(".hydra/config.yaml"))


# Rows read in this process, by run folder, with the files' stamps they were read from: a
# sweep rewrites the leaderboard after each job, and reads again only what changed.
_read: dict[tuple[Path, Path], tuple[tuple, dict[str, Any]]] = {}


def read_run(run_dir: Path, root: Path) -> dict[str, Any]:
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    metrics_file = run_dir / "metrics.json"
    stamps = (_stamp(overrides_file), _stamp(metrics_file))
    cached = _read.get((run_dir, root))
    if cached is None or cached[0] != stamps:
        cached = _read[(run_dir, root)] = (stamps, _read_run(run_dir, root))
    return dict(cached[1])


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size  # a file replaced is another inode


def _read_run(run_dir: Path, root: Path) -> dict[str, Any]:
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = (
        yaml.load(overrides_file.read_text(), Loader=_YAML_LOADER)
        if overrides_file.exists()
        else []
    )
    row: dict[str, Any] = {
        "run": str(run_dir.relative_to(root)) if run_dir != root else ".",
        "overrides": [str(o) for o in overrides or []],
    }
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        return {**row, "status": "no result"}
    metrics = json.loads(metrics_file.read_text())
    row.update(
        status="complete",
        objective=metrics["objective"]["name"],
        value=metrics["objective"]["value"],
        epochs=metrics.get("epochs"),
        wall_time_s=metrics.get("wall_time_s"),
    )
    row.update(metrics.get("val", {}))
    row.update(metrics.get("test", {}))
    return row


def build_leaderboard(
    folder: str | Path, extra: Sequence[dict[str, Any]] = (), objective: str | None = None
) -> list[dict[str, Any]]:
    """Rows for every run and sweep job under `folder`: complete ones best first, then
    pruned ones (also by their objective), then failed and unfinished ones.

    `extra`: rows for runs that left nothing in `folder` (`study_rows`: a shared study's
    trials run on another file system), with their objective's value, named as the runs
    here name it, else `objective` (what the config says, unless auto)."""
    folder = Path(folder)
    rows = {row["run"]: row for row in (read_run(run, folder) for run in find_runs(folder))}
    for record in jobs.read_records(folder):
        row = rows.setdefault(
            record["run"], {"run": record["run"], "overrides": record["overrides"]}
        )
        if record["status"] == "running":
            row.setdefault("status", "no result")
            continue
        row["status"] = record["status"]
        if "wall_time_s" in record:  # from the job's own start, not the process's
            row["wall_time_s"] = record["wall_time_s"]
        if record.get("reason"):
            row["reason"] = record["reason"]
    named = next((r["objective"] for r in rows.values() if r.get("objective")), None)
    named = named or (objective if objective not in (None, "auto") else "val/objective")
    for row in extra:
        if row["run"] not in rows:
            rows[row["run"]] = row = dict(row)
            if row.get("value") is not None:
                row.update({"objective": named, named: row["value"]})
    rows_list = list(rows.values())
    swept = swept_keys([row["overrides"] for row in rows_list])
    for row in rows_list:
        row["overrides"] = jobs.short_overrides(row["overrides"], swept)
    ordered: list[dict[str, Any]] = []
    for status in ("complete", "pruned"):
        done = [r for r in rows_list if r["status"] == status and r.get("value") is not None]
        if done:
            descending = resolve_mode(done[0]["objective"], "auto") == "max"
            done.sort(key=lambda r: r["value"], reverse=descending)
        ordered += done
    ordered += [r for r in rows_list if r not in ordered]
    for rank, row in enumerate(ordered, start=1):
        row["rank"] = rank if row["status"] == "complete" else None
    return ordered


def study_rows(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """A row for each trial of an Optuna study, from what the study keeps: its overrides,
    state (a dead worker's trial: interrupted), objective value (a pruned trial's last
    report), epochs reported and time from its ask to its tell."""
    from optuna.trial import TrialState

    from trainlab.app.sweeps.optuna_study import FAIL_REASON, OVERRIDES, interrupted

    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
              TrialState.FAIL: "failed", TrialState.RUNNING: "running",
              TrialState.WAITING: "queued"}  # fmt: skip
    cut = interrupted(list(trials))
    rows = []
    for trial in trials:
        row: dict[str, Any] = {
            "run": str(trial.number),
            "overrides": [str(o) for o in trial.user_attrs.get(OVERRIDES, [])],
            "status": "interrupted" if trial.number in cut else states[trial.state],
        }
        if trial.state == TrialState.FAIL and trial.user_attrs.get(FAIL_REASON):
            row["reason"] = trial.user_attrs[FAIL_REASON]
        reports = trial.intermediate_values
        if trial.state == TrialState.COMPLETE:
            row["value"] = trial.value
        elif trial.state == TrialState.PRUNED and reports:
            row["value"] = reports[max(reports)]
        if reports:
            row["epochs"] = max(reports) + 1
        if trial.datetime_start and trial.datetime_complete:
            took = trial.datetime_complete - trial.datetime_start
            row["wall_time_s"] = round(took.total_seconds(), 3)
        rows.append(row)
    return rows


def swept_keys(override_lists: list[list[str]]) -> set[str] | None:
    """The keys whose value differs between runs (None: all keys, for a single run)."""
    values: dict[str, set[str]] = {}
    for overrides in override_lists:
        pairs = dict(
            o.split("=", 1) for o in overrides if "=" in o and not o.startswith(jobs.PLUMBING)
        )
        for key in {*values, *pairs}:
            values.setdefault(key, set()).add(pairs.get(key, "<unset>"))
    if len(override_lists) < 2:
        return None
    return {key for key, seen in values.items() if len(seen) > 1}


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """A compact table: rank, overrides, status, objective, the test metric of the same
    name, epochs and wall time."""
    if not rows:
        return "no runs found\n"
    objective = next((r["objective"] for r in rows if r.get("objective")), "objective")
    test_name = objective.replace("val/", "test/")
    head = ["rank", "run", "overrides", "status", objective, test_name, "epochs", "wall time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        status = f"{r['status']}: {r['reason']}" if r.get("reason") else r["status"]
        cells = [
            r.get("rank") or "-",
            r["run"],
            r["overrides"],
            status.replace("|", "/"),
            _number(r.get("value")),
            _number(r.get(test_name)),
            r.get("epochs", "-"),
            _number(r.get("wall_time_s"), 1),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = [
        "rank",
        "run",
        "overrides",
        "status",
        "objective",
        "value",
        "epochs",
        "wall_time_s",
        "reason",
    ]
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_leaderboard(
    folder: str | Path, extra: Sequence[dict[str, Any]] = (), objective: str | None = None
) -> str:
    """Write leaderboard.csv and leaderboard.md into `folder`; return the Markdown.

    Jobs finishing together (parallel launchers) write one at a time, each after its own
    record: the last one to write has read every record. `extra`, `objective`: as for
    `build_leaderboard`."""
    folder = Path(folder)
    with _locked(folder / ".leaderboard.lock"):
        rows = build_leaderboard(folder, extra, objective)
        markdown = to_markdown(rows)
        _write_atomic(folder / "leaderboard.csv", to_csv(rows))
        _write_atomic(folder / "leaderboard.md", markdown)
    return markdown


@contextlib.contextmanager
def _locked(path: Path) -> Any:
    try:
        import fcntl
    except ImportError:  # Windows: unlocked
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


class Leaderboard(Callback):
    """Hydra callback: record each sweep job and rewrite the leaderboard after it; print
    each job's start and end; print the leaderboard when the sweep ends."""

    def __init__(self) -> None:
        self.records: dict[int, dict[str, Any]] = {}
        self.relay: jobs.Relay | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Launchers pickle the callbacks for each job's process; the relay stays here.
        return {**self.__dict__, "relay": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if jobs.out_of_sight(config) and is_main_process():
            self.relay = jobs.Relay(config.hydra.sweep.dir).start()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if jobs.is_sweep_job(config) and is_main_process():
            self.records[int(config.hydra.job.num)] = jobs.job_started(config)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not jobs.is_sweep_job(config):  # a single run has no job number
            return
        record = self.records.pop(int(config.hydra.job.num), None)
        if record is None:
            return
        jobs.job_ended(config, record, job_return)
        write_leaderboard(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.relay is not None:
            self.relay.stop()
        folder = Path(config.hydra.sweep.dir)
        if folder.is_dir() and is_main_process():
            # An Optuna study's trials that other workers ran on other file systems too.
            trials = study_trials(config)
            extra = study_rows(trials) if trials else []
            markdown = write_leaderboard(folder, extra, config.get("objective"))
            print(f"\nleaderboard ({folder / 'leaderboard.md'}):\n{markdown}", flush=True)
