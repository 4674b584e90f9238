"""Resumable grid sweeps: the same `trainlab -m a=1,2 b=3,4` again finishes the last one.

    RunFolder.on_multirun_start: the latest sweep folder beside the planned one, whose
        command had the same overrides (resume and paths aside) and that has a job without
        a result, becomes this sweep's folder (`resume=none`: never; a folder another
        sweep is running is skipped). The folder is locked while the sweep runs.
    TrainlabGridSweeper.sweep: the jobs of the grid, numbered as Hydra numbers them; those
        with a result (a complete or pruned job record and the run's metrics.json, from the
        same overrides) are skipped with a line saying so; the others are launched, a job
        cut short with checkpoints/last.pt continuing from it (resume=auto).

A failed job does not stop the others; the sweep ends with the first failure's error once
every job has run, as Hydra's grid sweeper does within a batch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from omegaconf import DictConfig, OmegaConf, read_write

from trainlab.app.run_files import lock_run_folder
from trainlab.app.runs import LAST, is_unfinished
from trainlab.app.sweeps import jobs as job_records
from trainlab.app.sweeps.compose import check_jobs
from trainlab.engine import preemption
from trainlab.errors import ConfigError, TrainlabError

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from hydra_plugins.trainlab_optuna_sweeper.grid import TrainlabGridSweeper

log = logging.getLogger(__name__)

GRID_SWEEPER = "hydra_plugins.trainlab_optuna_sweeper.grid.TrainlabGridSweeper"
# What `resume` may be on a grid sweep's command line.
RESUME_VALUES = ("auto", "none")


def is_grid_sweep(config: DictConfig) -> bool:
    return str(config.hydra.sweeper.get("_target_", "")) == GRID_SWEEPER


def command_key(overrides: list[str]) -> list[str]:
    """What makes two grid commands the same: their overrides in order (the order numbers
    the jobs), less resume and where outputs go."""

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    return [o for o in overrides if key(o) != "resume" and not key(o).startswith("paths.")]


def grid_jobs(overrides: list[str], params: dict[str, str] | None = None,
              parser: OverridesParser | None = None) -> list[list[str]]:  # fmt: skip
    """Every job of the grid, in Hydra's order (its job numbers)."""
    from hydra_plugins.trainlab_optuna_sweeper.grid import TrainlabGridSweeper

    parser = parser or OverridesParser.create()
    wanted = [f"{k}={v}" for k, v in (params or {}).items()]
    wanted += [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "resume"]
    (batch,) = TrainlabGridSweeper.split_arguments(parser.parse_overrides(wanted), None)
    return batch


def finished_jobs(sweep_dir: Path, jobs: list[list[str]]) -> set[int]:
    """The numbers of the jobs that have a result in `sweep_dir`, from the same overrides."""
    records = {r.get("job"): r for r in job_records.read_records(sweep_dir)}
    done = set()
    for number, job in enumerate(jobs):
        record = records.get(number)
        if record is None or record.get("status") not in ("complete", "pruned"):
            continue
        same = command_key(record.get("overrides", [])) == command_key(job)
        if same and (sweep_dir / record["run"] / "metrics.json").is_file():
            done.add(number)
    return done


def choose_sweep_folder(config: DictConfig) -> Path | None:
    """The unfinished sweep this grid command resumes (locked for this process), or None
    for a new one. Refuses a `resume` value a sweep cannot take."""
    resume = config.get("resume")
    if resume is not None and resume not in RESUME_VALUES:
        raise ConfigError(
            f"resume={resume} does not apply to a sweep (-m): a grid sweep resumes its "
            "latest unfinished run of the same command by itself (resume=none: a new "
            "sweep); resume one job with its command and resume=<its folder>"
        )
    if resume == "none":
        return None
    planned = Path(str(config.hydra.sweep.dir)).absolute()
    overrides = list(config.hydra.overrides.task)
    wanted = command_key(overrides)
    try:
        jobs = grid_jobs(overrides, dict(config.hydra.sweeper.get("params") or {}))
    except Exception:  # a grid Hydra cannot expand: Hydra says why, in a new sweep
        return None
    candidates = []
    for saved in planned.parent.glob("*/multirun.yaml") if planned.parent.is_dir() else []:
        try:
            before = yaml.safe_load(saved.read_text())["hydra"]["overrides"]["task"]
            candidates.append((saved.stat().st_mtime, saved.parent, before))
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            continue  # not a sweep folder we can read: not this command's
    for _, folder, before in sorted(candidates, key=lambda c: -c[0]):
        if command_key(list(before or [])) != wanted:
            continue
        if len(finished_jobs(folder, jobs)) == len(jobs):
            return None  # the latest sweep of this command finished: a new one
        try:
            lock_run_folder(folder)
        except TrainlabError:
            continue  # another process is running it
        return folder
    return None


def resume_sweep_folder(config: DictConfig) -> None:
    """In RunFolder.on_multirun_start: point this grid sweep (and its jobs, which compose
    their config again from the overrides) at the folder it resumes, if any."""
    folder = choose_sweep_folder(config)
    with read_write(config.hydra):
        if folder is not None:
            config.hydra.sweep.dir = str(folder)
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={folder}")


def run_grid(sweeper: TrainlabGridSweeper, arguments: list[str]) -> list[Any]:
    """Launch the grid's jobs that have no result; raise the first failure at the end."""
    config = sweeper.config
    assert config is not None and sweeper.hydra_context is not None
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    jobs = grid_jobs(arguments, sweeper.params, parser)
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock_run_folder(sweep_dir.absolute())
    done = finished_jobs(sweep_dir, jobs)
    if done or (sweep_dir / "multirun.yaml").is_file():  # an earlier run of this sweep
        todo = [n for n in range(len(jobs)) if n not in done]
        print(resuming_line(sweep_dir, done, todo), flush=True)
    else:
        OmegaConf.save(config, sweep_dir / "multirun.yaml")
    returns = []
    for group in _groups([n for n in range(len(jobs)) if n not in done], sweeper.max_batch_size):
        preemption.raise_if_stopped()  # a stop whose exception something swallowed
        batch = [_continued(jobs[n], sweep_dir / str(n)) for n in group]
        check_jobs(sweeper.hydra_context, config, batch)
        returns.append(sweeper.launcher.launch(batch, initial_job_idx=group[0]))
    for results in returns:
        for result in results:
            # The first failure ends the sweep with its error (read from the result, not
            # through `return_value`, which first writes Hydra's own multi-line notice).
            if result.status == JobStatus.FAILED:
                raise result._return_value
    return returns


def _continued(job: list[str], folder: Path) -> list[str]:
    """A job cut short with a checkpoint (in its usual folder) continues from it."""
    return [*job, "resume=auto"] if is_unfinished(folder) and (folder / LAST).is_file() else job


def _groups(numbers: list[int], size: int | None) -> list[list[int]]:
    """Runs of consecutive job numbers (a launcher numbers a batch's jobs in a row), each at
    most `size` long."""
    groups: list[list[int]] = []
    for number in numbers:
        if groups and number == groups[-1][-1] + 1 and (size is None or len(groups[-1]) < size):
            groups[-1].append(number)
        else:
            groups.append([number])
    return groups


def resuming_line(sweep_dir: Path, done: Collection[int], todo: Sequence[int]) -> str:
    """What a grid sweep run again says it skips and runs."""
    if not done:
        skipped = "no job has a result yet"
    elif len(done) == 1:
        skipped = f"skipping job {_numbers(done)} (it has a result)"
    else:
        skipped = f"skipping jobs {_numbers(done)} (they have results)"
    running = _numbers(todo) or "nothing"
    return f"resuming sweep {sweep_dir}: {skipped}; running {running} (resume=none: a new sweep)"


def _numbers(numbers: Any) -> str:
    return ", ".join(str(n) for n in sorted(numbers))
