"""Resume faults: a refused resume changes nothing, a changed run length re-plans the
schedule, corrupt run folders are skipped or named, a stop in any phase can be finished.

Real run folders come from real `train.py` processes (Hydra writes `.hydra/` only there);
the checks that need no process run in this one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    compose_config,
    read_metrics,
    train_cli,
    train_command,
    train_env,
    train_in_process,
)

from trainlab.app.experiment import run
from trainlab.app.run_files import check_folder_path
from trainlab.app.runs import locate, unfinished_runs
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.errors import ConfigError, TrainlabError

# Two epochs of three steps; a checkpoint every step, all kept.
COMMAND = (
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "callbacks.model_checkpoint.every_n_steps=1",
    "callbacks.model_checkpoint.keep_last=100",
)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_one_line(result: subprocess.CompletedProcess, words: str, label: str = "error") -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{label}: "), result.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real run of COMMAND (with Hydra's `.hydra/`), finished."""
    cwd = tmp_path_factory.mktemp("made")
    assert train_cli(*COMMAND, cwd=cwd).returncode == 0
    (folder,) = (cwd / "outputs" / "runs").iterdir()
    return folder


@pytest.fixture
def two_runs(tmp_path, finished_run) -> tuple[Path, Path, Path]:
    """(cwd, finished, unfinished): copies of the real run under `tmp_path/outputs/runs`;
    the unfinished one stopped after step 4 (as if killed)."""
    runs = tmp_path / "outputs" / "runs"
    finished = shutil.copytree(finished_run, runs / "2026-01-01_00-00-00", symlinks=True)
    unfinished = shutil.copytree(finished_run, runs / "2026-01-01_00-00-01", symlinks=True)
    (unfinished / "metrics.json").unlink()
    shutil.copy(unfinished / "checkpoints" / "step_4.pt", unfinished / "checkpoints" / "last.pt")
    return tmp_path, finished, unfinished


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_refused_resumes_change_nothing_and_resume_auto_still_finds_the_run(two_runs) -> None:
    cwd, finished, unfinished = two_runs
    before = snapshot(cwd / "outputs")
    refused = [
        ([f"resume={unfinished}", "optim.lr=-1"], "optim.lr=-1.0 is out of range"),
        ([f"resume={unfinished}", "model.hidden_sizes=[8]"], "model.hidden_sizes ([256, 128]"),
        ([f"resume={unfinished}", "seed=7"], "seed (42 in the checkpoint, 7 now)"),
        ([f"resume={unfinished}", "trainer.max_epochs=abc"], "trainer.max_epochs='abc'"),
        ([f"resume={finished}"], f"its results are in {finished / 'metrics.json'}"),
        ([*COMMAND, "resume=auto", "optim.lr=0"], "optim.lr=0"),
    ]
    for args, words in refused:
        result = train_cli(*args, cwd=cwd)
        assert result.returncode == 2, result.stderr
        assert_one_line(result, words)
        assert snapshot(cwd / "outputs") == before, args  # not a byte, not a new folder
    # The original command still finds its run, and finishes it there.
    assert train_cli(*COMMAND, "resume=auto", cwd=cwd).returncode == 0
    assert read_metrics(unfinished)["steps"] == 6
    assert sorted(p.name for p in (cwd / "outputs" / "runs").iterdir()) == [
        finished.name,
        unfinished.name,
    ]


@pytest.mark.slow
def test_resume_auto_skips_corrupt_run_folders_quietly(two_runs) -> None:
    cwd, _, unfinished = two_runs
    runs = unfinished.parent
    newer = {  # each newer than the good one, and each unreadable in its own way
        "bad_overrides": ("overrides.yaml", b"- trainer.max_epochs=2\n  - : [\x00"),
        "bad_config": ("config.yaml", b"model: [unclosed"),
        "truncated": (None, None),
    }
    for name, (file, text) in newer.items():
        folder = shutil.copytree(unfinished, runs / name, symlinks=True)
        if file is None:
            last = folder / "checkpoints" / "last.pt"
            last.write_bytes(last.read_bytes()[:1000])
        else:
            (folder / ".hydra" / file).write_bytes(text)
    (runs / "empty").mkdir()
    before = {name: snapshot(runs / name) for name in [*newer, "empty"]}
    result = train_cli(*COMMAND, "resume=auto", cwd=cwd)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"note: resume=auto skipped {runs / 'truncated'}: unreadable checkpoints/last.pt"
    ]
    assert read_metrics(unfinished)["steps"] == 6  # the readable run was continued
    assert {name: snapshot(runs / name) for name in before} == before

    # Named explicitly, a corrupt folder gets one line naming what is corrupt.
    for name, words in [
        ("bad_overrides", f"{runs / 'bad_overrides' / '.hydra' / 'overrides.yaml'} is corrupt"),
        ("bad_config", "config.yaml is corrupt"),
        ("truncated", "truncated, corrupt or not a checkpoint"),
    ]:
        assert_one_line(train_cli(f"resume={runs / name}", cwd=cwd), words)
        assert snapshot(runs / name) == before[name]


def test_unreadable_candidates_are_no_candidates(tmp_path) -> None:
    command = ["optim.lr=0.01"]
    for name, overrides in [
        ("good", "- optim.lr=0.01\n"),
        ("not_a_list", "optim.lr: 0.01\n"),
        ("binary", "\udcff"),
        ("bad_yaml", "- [optim.lr=0.01\n"),
    ]:
        folder = tmp_path / name
        (folder / ".hydra").mkdir(parents=True)
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.pt").write_bytes(b"x")
        data = overrides.encode("utf-8", "surrogateescape")
        (folder / ".hydra" / "overrides.yaml").write_bytes(data)
    (tmp_path / "a_file").write_text("not a folder")
    assert unfinished_runs(sorted(tmp_path.iterdir()), command) == [tmp_path / "good"]


def test_resume_of_a_finished_run_says_where_its_metrics_are(tmp_path) -> None:
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.pt").write_bytes(b"x")
    (folder / "metrics.json").write_text("{}")
    for target in (folder, folder / "checkpoints" / "last.pt"):
        with pytest.raises(TrainlabError, match=r"already finished; its results are in .*metrics"):
            locate(str(target))


def test_resume_names_a_run_by_its_folder_checkpoints_folder_or_checkpoint(tmp_path) -> None:
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.pt").write_bytes(b"x")
    (folder / "checkpoints" / "step_3.pt").write_bytes(b"x")
    last, step = folder / "checkpoints" / "last.pt", folder / "checkpoints" / "step_3.pt"
    assert locate(str(folder)) == locate(str(folder / "checkpoints")) == (folder, last)
    assert locate(str(step)) == (folder, step)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainlabError, match=r"no checkpoints/last\.pt in that folder"):
        locate(str(tmp_path / "empty"))
    (tmp_path / "notes.pt").write_bytes(b"x")
    with pytest.raises(TrainlabError, match="that file is not inside a run folder"):
        locate(str(tmp_path / "notes.pt"))


def test_a_file_as_run_folder_is_one_line(tmp_path) -> None:
    file = tmp_path / "outputs"
    file.write_text("a file")
    with pytest.raises(ConfigError, match=r"is a file, not a folder; point paths\.root_dir"):
        check_folder_path(file / "runs" / "x", "paths.root_dir")
    result = train_cli(f"hydra.run.dir={file}", cwd=tmp_path)
    assert_one_line(result, "hydra.run.dir=")
    assert file.read_text() == "a file"


@pytest.mark.slow
def test_resume_from_a_file_that_is_not_a_checkpoint(two_runs) -> None:
    cwd, _, unfinished = two_runs
    before = snapshot(unfinished)
    result = train_cli(f"resume={unfinished / 'data_info.json'}", cwd=cwd)
    assert_one_line(result, "truncated, corrupt or not a checkpoint")
    assert snapshot(unfinished) == before


@pytest.mark.slow
def test_resume_after_a_kill_while_writing_metrics_and_best_checkpoint(two_runs) -> None:
    cwd, finished, unfinished = two_runs
    shutil.rmtree(unfinished)  # the finished run is the only candidate
    expected = read_metrics(finished)
    (finished / "metrics.json").unlink()  # killed while writing it: only its temp file left
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    strays = [
        finished / f".metrics.json.{pid}.x1.tmp",
        finished / "checkpoints" / f".best.pt.{pid}.x2.tmp",
    ]
    for stray in strays:
        stray.write_bytes(b"half a fi")
    result = train_cli(*COMMAND, "resume=auto", cwd=cwd)
    assert result.returncode == 0, result.stderr
    expected["best_checkpoint"] = str(finished / "checkpoints" / "best.pt")  # in the copy
    assert comparable(read_metrics(finished)) == comparable(expected)
    assert not any(stray.exists() for stray in strays)  # the dead writer's files are gone


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_resume_of_a_read_only_run_is_one_line_and_changes_nothing(two_runs) -> None:
    cwd, _, unfinished = two_runs
    before = snapshot(unfinished)
    folders = [unfinished, *(p for p in unfinished.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        result = train_cli(f"resume={unfinished}", cwd=cwd)
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert result.returncode == 2
    assert_one_line(result, f"cannot write to {unfinished} (read-only)")
    assert "copy it somewhere writable and resume from the copy" in result.stderr
    assert snapshot(unfinished) == before


# ---------------------------------------------------------------- schedule re-planning
# The schedules planned over the run's length run by default; the rest with -m slow.
SCHEDULES = [
    *(pytest.param(name, marks=pytest.mark.slow) for name in ("none", "step", "exponential")),
    pytest.param("plateau", marks=pytest.mark.slow),
    pytest.param("cosine", marks=pytest.mark.slow),  # onecycle: the same re-planning
    "onecycle",
]


def final_lr(run_dir: Path) -> float:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["optimizer"]["param_groups"][0][
        "lr"
    ]


@pytest.mark.parametrize("sched", SCHEDULES)
def test_resume_with_another_max_epochs_replans_length_bound_schedules(
    tmp_path, sched: str, caplog
) -> None:
    options = ("trainer.limit_train_batches=3", f"sched={sched}", "optim.lr=0.01")
    options += (
        "callbacks.model_checkpoint.every_n_steps=3",
        "callbacks.model_checkpoint.keep_last=9",
    )
    started = tmp_path / "started"
    run(compose_config(*options, "trainer.max_epochs=3", output_dir=started))
    # Resume from the end of epoch 1 of 3 with a longer and a shorter run.
    for epochs in (5, 2):
        folder = shutil.copytree(started, tmp_path / f"to_{epochs}")
        (folder / "metrics.json").unlink()
        resume = f"resume={folder / 'checkpoints' / 'step_3.pt'}"
        caplog.clear()
        run(compose_config(*options, f"trainer.max_epochs={epochs}", resume, output_dir=folder))
        assert read_metrics(folder)["steps"] == 3 * epochs
        replanned = f"re-planned the schedule for trainer.max_epochs={epochs}" in caplog.text
        assert replanned == (sched in ("cosine", "onecycle")), caplog.text
        # The learning rate ends where a new run of that length ends.
        fresh = tmp_path / f"fresh_{epochs}"
        run(compose_config(*options, f"trainer.max_epochs={epochs}", output_dir=fresh))
        assert final_lr(folder) == pytest.approx(final_lr(fresh), rel=1e-6, abs=1e-12)


def test_resume_with_another_schedule_plans_it_afresh(tmp_path, caplog) -> None:
    options = ("trainer.limit_train_batches=3", "trainer.max_epochs=3", "optim.lr=0.01")
    options += (
        "callbacks.model_checkpoint.every_n_steps=3",
        "callbacks.model_checkpoint.keep_last=9",
    )
    run(compose_config(*options, "sched=onecycle", output_dir=tmp_path / "a"))
    (tmp_path / "a" / "metrics.json").unlink()
    resume = f"resume={tmp_path / 'a' / 'checkpoints' / 'step_3.pt'}"
    run(compose_config(*options, "sched=cosine", resume, output_dir=tmp_path / "a"))
    assert "sched differs from the checkpoint's: re-planned" in caplog.text
    run(compose_config(*options, "sched=cosine", output_dir=tmp_path / "b"))
    assert final_lr(tmp_path / "a") == pytest.approx(final_lr(tmp_path / "b"), abs=1e-12)


# ---------------------------------------------------------------- stops in every phase
SIGNAL = ("+callbacks.fault._target_=fault_parts.SignalAt",)


def train_with_signal(cwd: Path, at: str, *args: str) -> subprocess.CompletedProcess:
    env = train_env() | {"TRAINLAB_TEST_SIGNAL_AT": at}
    return subprocess.run(
        train_command(*args, cwd=cwd),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "wall_time_s"}


@pytest.fixture(scope="module")
def reference_metrics(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("reference")
    # In this process: the same numbers as the command's (a run sets its own threads and
    # seeds), without the start-up of one more process.
    assert train_in_process(*COMMAND, *SIGNAL, cwd=cwd).returncode == 0
    (folder,) = (cwd / "outputs" / "runs").iterdir()
    return comparable(read_metrics(folder))


PHASES = [
    ("on_test_end:SIGTERM", 143, "stopped: SIGTERM while testing"),
    ("on_fit_end:SIGTERM", 143, "stopped: SIGTERM while testing"),
    ("on_test_end:SIGINT", 130, "interrupted: SIGINT while testing"),
    ("on_epoch_end:SIGUSR1", 143, "stopped: SIGUSR1 at step 3"),
    ("build:SIGTERM", 143, "stopped: SIGTERM while building the experiment"),
]


@pytest.mark.parametrize(
    ("at", "status", "words"),
    [PHASES[0], *(pytest.param(*phase, marks=pytest.mark.slow) for phase in PHASES[1:])],
    ids=[phase[0] for phase in PHASES],
)
def test_a_stop_in_any_phase_says_where_and_resume_auto_finishes_the_job(
    tmp_path, reference_metrics, at: str, status: int, words: str
) -> None:
    stopped = train_with_signal(tmp_path, at, *COMMAND, *SIGNAL)
    assert stopped.returncode == status, stopped.stderr
    (line,) = stopped.stderr.strip().splitlines()
    assert line.startswith(words), line
    runs = tmp_path / "outputs" / "runs"
    if at.startswith("build"):  # nothing to resume: no folder left behind
        assert "run the command again" in line
        assert not runs.exists() or not any(runs.iterdir())
    else:
        assert "resume=auto" in line
        (folder,) = runs.iterdir()
        assert not (folder / "metrics.json").exists()
    resumed = train_cli(*COMMAND, *SIGNAL, "resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    (folder,) = runs.iterdir()
    assert comparable(read_metrics(folder)) == reference_metrics | {
        "best_checkpoint": str(folder / "checkpoints" / "best.pt")
    }
    assert json.loads((folder / "metrics.json").read_text())["steps"] == 6


def test_resume_with_more_batches_an_epoch_replans_onecycle(tmp_path, caplog) -> None:
    options = ("trainer.max_epochs=3", "sched=onecycle", "callbacks.model_checkpoint.keep_last=9")
    options += ("callbacks.model_checkpoint.every_n_steps=3",)
    run(compose_config(*options, "trainer.limit_train_batches=3", output_dir=tmp_path))
    (tmp_path / "metrics.json").unlink()
    resume = f"resume={tmp_path / 'checkpoints' / 'step_3.pt'}"
    run(compose_config(*options, "trainer.limit_train_batches=5", resume, output_dir=tmp_path))
    assert "trainer.limit_train_batches changed (3 in the checkpoint): re-planned" in caplog.text
    assert read_metrics(tmp_path)["steps"] == 3 + 2 * 5
