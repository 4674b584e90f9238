"""Resumable grid sweeps: the same `-m` command again runs only the jobs without a result.

The quick tests choose the folder and the jobs in-process on hand-made sweep folders; the
slow one kills a real grid sweep and runs the command again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import cli_env, read_metrics, train_cli, train_command
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hydra_plugins.trainlab_optuna_sweeper.grid import TrainlabGridSweeper
from trainlab.app.run_files import unlock_run_folder
from trainlab.app.sweeps.grid import (
    _groups,
    choose_sweep_folder,
    finished_jobs,
    grid_jobs,
    resuming_line,
)
from trainlab.errors import ConfigError

GRID = ["optim.lr=0.01,0.02", "model.dropout=0.0,0.1"]
JOBS = [
    ["optim.lr=0.01", "model.dropout=0.0"],
    ["optim.lr=0.01", "model.dropout=0.1"],
    ["optim.lr=0.02", "model.dropout=0.0"],
    ["optim.lr=0.02", "model.dropout=0.1"],
]


def test_the_private_grid_expansion_we_rely_on_is_hydra_s() -> None:
    # TrainlabGridSweeper subclasses hydra._internal's BasicSweeper for its expansion.
    assert issubclass(TrainlabGridSweeper, BasicSweeper)
    parsed = OverridesParser.create().parse_overrides([*GRID, "trainer.max_epochs=1"])
    assert BasicSweeper.split_arguments(parsed, None) == [
        [[*job, "trainer.max_epochs=1"] for job in JOBS]
    ]
    assert grid_jobs([*GRID, "resume=none"]) == JOBS


def make_sweep(folder: Path, overrides: list[str], done: list[int], mtime: float) -> Path:
    """A sweep folder as a grid sweep leaves it, jobs `done` complete, the others not."""
    import os

    folder.mkdir(parents=True)
    saved = {"hydra": {"overrides": {"task": overrides}}}
    (folder / "multirun.yaml").write_text(yaml.safe_dump(saved))
    for number, job in enumerate(grid_jobs(overrides)):
        status = "complete" if number in done else "running"
        record = {"job": number, "run": str(number), "overrides": job, "status": status}
        (folder / f".job-{number}.json").write_text(json.dumps(record))
        (folder / str(number)).mkdir()
        if number in done:
            (folder / str(number) / "metrics.json").write_text("{}")
    os.utime(folder / "multirun.yaml", (mtime, mtime))
    return folder


def config_for(multirun: Path, overrides: list[str], resume: str | None = None):
    return OmegaConf.create({
        "resume": resume,
        "hydra": {"sweep": {"dir": str(multirun / "new")}, "overrides": {"task": overrides},
                  "sweeper": {"params": None}},
    })  # fmt: skip


def test_the_latest_unfinished_sweep_of_the_same_command_is_resumed(tmp_path: Path) -> None:
    older = make_sweep(tmp_path / "a", GRID, done=[0], mtime=1)
    newer = make_sweep(tmp_path / "b", [*GRID, "resume=auto"], done=[0, 1], mtime=2)
    # The same overrides in another order number the jobs otherwise: another command.
    make_sweep(tmp_path / "d", [*reversed(GRID)], done=[], mtime=4)
    make_sweep(tmp_path / "c", [*GRID, "trainer.max_epochs=3"], done=[], mtime=3)  # other cmd
    try:
        assert choose_sweep_folder(config_for(tmp_path, GRID)) == newer.absolute()
        assert finished_jobs(newer, JOBS) == {0, 1}
    finally:
        unlock_run_folder(newer.absolute())
    # While another process runs the newer one, the older one is resumed.
    holder = subprocess.Popen(["flock", str(newer), "sleep", "60"])
    try:
        deadline = time.monotonic() + 30
        locks = Path("/proc/locks")
        while str(holder.pid) not in locks.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert choose_sweep_folder(config_for(tmp_path, GRID)) == older.absolute()
    finally:
        holder.kill()
        holder.wait()
        unlock_run_folder(older.absolute())
    assert choose_sweep_folder(config_for(tmp_path, GRID, "none")) is None


def test_a_finished_sweep_is_not_resumed(tmp_path: Path) -> None:
    make_sweep(tmp_path / "a", GRID, done=[0], mtime=1)
    make_sweep(tmp_path / "b", GRID, done=[0, 1, 2, 3], mtime=2)
    assert choose_sweep_folder(config_for(tmp_path, GRID)) is None


def test_a_job_counts_as_done_only_with_its_result_and_the_same_overrides(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "a", GRID, done=[0, 1, 2], mtime=1)
    (sweep / "1" / "metrics.json").unlink()  # recorded complete, result gone
    record = json.loads((sweep / ".job-2.json").read_text())
    (sweep / ".job-2.json").write_text(json.dumps(dict(record, overrides=["optim.lr=9"])))
    assert finished_jobs(sweep, JOBS) == {0}
    assert finished_jobs(sweep, [*JOBS[:1], ["optim.lr=0.01", "model.dropout=0.0", "resume=auto"]])
    assert _groups([1, 2, 4, 5, 6], None) == [[1, 2], [4, 5, 6]]
    assert _groups([0, 1, 2], 2) == [[0, 1], [2]]


def test_the_resuming_line_says_what_it_skips_and_runs() -> None:
    sweep = Path("outputs/multirun/x")
    assert resuming_line(sweep, {0}, [1]) == (
        "resuming sweep outputs/multirun/x: skipping job 0 (it has a result); running 1 "
        "(resume=none: a new sweep)"
    )
    assert "skipping jobs 0, 2 (they have results); running 1 " in resuming_line(sweep, {2, 0}, [1])
    assert ": no job has a result yet; running 0, 1 " in resuming_line(sweep, set(), [0, 1])


def test_a_resume_path_is_refused_for_a_sweep(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^resume=runs/x does not apply to a sweep \(-m\)"):
        choose_sweep_folder(config_for(tmp_path, GRID, "runs/x"))


@pytest.mark.slow  # a real grid sweep killed after two jobs, then run again: about a minute
def test_a_killed_grid_runs_only_its_missing_jobs_when_run_again(tmp_path: Path) -> None:
    args = (*GRID, "trainer.max_epochs=2", "data.batch_size=128", "logger=none",
            "model.hidden_sizes=[32]")  # fmt: skip
    proc = subprocess.Popen(
        train_command("-m", *args, cwd=tmp_path), cwd=tmp_path, env=cli_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    multirun = tmp_path / "outputs" / "multirun"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            records = list(multirun.glob("*/.job-1.json"))
            if records and json.loads(records[0].read_text())["status"] == "complete":
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (sweep,) = multirun.iterdir()
    assert (sweep / "1" / "metrics.json").is_file() and not (sweep / "3").exists()
    before = {n: (sweep / str(n) / "metrics.json").read_bytes() for n in (0, 1)}
    mtimes = {n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns for n in (0, 1)}

    again = train_cli("-m", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming sweep {sweep}: skipping jobs 0, 1 (they have results)" in again.stdout
    assert "job 0 started" not in again.stdout and "job 1 started" not in again.stdout
    assert list(multirun.iterdir()) == [sweep]
    for n in (0, 1):
        path = sweep / str(n) / "metrics.json"
        assert path.read_bytes() == before[n] and path.stat().st_mtime_ns == mtimes[n]
    assert [read_metrics(sweep / str(n))["epochs"] for n in range(4)] == [2, 2, 2, 2]
    board = (sweep / "leaderboard.md").read_text()
    assert board.count("| complete |") == 4

    # Finished: the same command starts a new sweep; so does resume=none at any time.
    time.sleep(1.1)  # a new folder name (the time, to the second)
    third = train_cli("-m", *args, "resume=none", cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "resuming sweep" not in third.stdout
    assert len(list(multirun.iterdir())) == 2


@pytest.mark.slow  # a real grid sweep stopped with SIGTERM mid-job, then run again: ~1 min
def test_a_stop_signal_stops_a_grid_at_once_and_its_job_resumes_from_its_checkpoint(
    tmp_path: Path,
) -> None:
    """SIGTERM (a scheduler's preemption) stops the grid in its running job, with that job's
    checkpoint: no later job starts, the job is not recorded as failed, and the same
    command continues it from its last.pt."""
    args = ("optim.lr=0.01,0.02,0.03", "trainer.max_epochs=400", "data.batch_size=128",
            "logger=none", "model.hidden_sizes=[32]")  # fmt: skip
    proc = subprocess.Popen(
        train_command("-m", *args, cwd=tmp_path), cwd=tmp_path, env=cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    multirun = tmp_path / "outputs" / "multirun"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list(multirun.glob("*/0/checkpoints/last.pt")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    (sweep,) = multirun.iterdir()
    assert out.strip().splitlines()[-1] == (
        f"stopped: SIGTERM while training; run the same command again: the sweep resumes, "
        f"{sweep / '0'} from its checkpoints/last.pt"
    )
    assert "job 1 started" not in out and not (sweep / "1").exists()
    assert json.loads((sweep / ".job-0.json").read_text())["status"] == "running"

    again = train_cli("-m", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming sweep {sweep}: no job has a result yet; running 0, 1, 2" in again.stdout
    assert f"resuming from {sweep / '0' / 'checkpoints' / 'last.pt'}" in again.stdout
    assert list(multirun.iterdir()) == [sweep]
    assert all((sweep / str(n) / "metrics.json").is_file() for n in range(3))
