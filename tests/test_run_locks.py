"""One process per run folder: a run holds its folder locked while it runs; new runs
never share a folder; atomic writes never delete another writer's file in progress."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import SMOKE, train_cli, train_command, train_env

from trainlab.app.run_files import lock_run_folder, unlock_run_folder
from trainlab.app.runs import claim
from trainlab.engine.checkpoint import atomic_write
from trainlab.errors import TrainlabError

HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    descriptor = os.open(sys.argv[1], os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.read()  # holds the lock until killed or stdin closes
    """
)


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding `folder` locked, as a running trainlab run does."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "locked\n"
    return holder


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_locked_folder_is_refused_naming_the_holder_and_freed_when_it_dies(tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    holder = hold_lock(folder)
    try:
        with pytest.raises(TrainlabError) as caught:
            lock_run_folder(folder)
        assert str(caught.value).startswith(
            f"run {folder} is in use by another trainlab process (pid {holder.pid}); wait"
        )
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: the OS drops its lock, none goes stale
        holder.wait()
    lock_run_folder(folder)
    unlock_run_folder(folder)
    assert list(folder.iterdir()) == []  # taking the lock wrote nothing


FORKING_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    descriptor = os.open(sys.argv[1], os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    if os.fork() == 0:  # a DataLoader worker: shares the lock, ends a little after its parent
        time.sleep(3)
        os._exit(0)
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def test_a_lock_left_to_a_killed_runs_forked_workers_is_waited_for(tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", FORKING_HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "locked\n"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    lock_run_folder(folder)  # its worker still holds the lock: waited for, not refused
    unlock_run_folder(folder)
    assert time.monotonic() - started < 15


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_a_resume_of_a_run_in_use_is_one_line_and_changes_nothing(tmp_path) -> None:
    assert train_cli(*SMOKE, cwd=tmp_path).returncode == 0
    (folder,) = (tmp_path / "outputs" / "runs").iterdir()
    (folder / "metrics.json").unlink()  # as if still running
    before = snapshot(tmp_path / "outputs")
    holder = hold_lock(folder)
    try:
        result = train_cli(*SMOKE, "resume=auto", cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: run {folder} is in use by another trainlab process (pid {holder.pid}); wait "
        "for it to end, or stop it, then run this command again"
    ]
    assert snapshot(tmp_path / "outputs") == before


SLOW = (
    *SMOKE,
    "callbacks.model_checkpoint.every_n_steps=1",
    "callbacks.model_checkpoint.keep_last=10",
    "+callbacks.slow._target_=custom_parts.Slowdown",
    "+callbacks.slow.seconds=10",  # the first resume runs two more steps: 20 s or more
)


@pytest.mark.slow
def test_two_resume_auto_of_one_run_started_together(tmp_path) -> None:
    assert train_cli(*SLOW, cwd=tmp_path).returncode == 0
    (folder,) = (tmp_path / "outputs" / "runs").iterdir()
    (folder / "metrics.json").unlink()
    (folder / "checkpoints" / "last.pt").unlink()
    os.link(folder / "checkpoints" / "step_1.pt", folder / "checkpoints" / "last.pt")
    first = subprocess.Popen(
        train_command(*SLOW, "resume=auto", cwd=tmp_path),
        cwd=tmp_path,
        env=train_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while "resuming from" not in (folder / "train.log").read_text():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    second = train_cli(*SLOW, "resume=auto", cwd=tmp_path)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 2
    assert "is in use by another trainlab process" in second.stderr
    assert (folder / "metrics.json").is_file()
    assert len(list((tmp_path / "outputs" / "runs").iterdir())) == 1


def test_runs_started_in_the_same_second_never_share_a_folder(tmp_path) -> None:
    planned = tmp_path / "outputs" / "runs" / "2026-01-01_12-00-00"  # parents made on demand
    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(lambda _: claim(planned), range(16)))
    assert len(set(folders)) == 16
    assert sorted(f.name for f in folders)[:2] == [planned.name, f"{planned.name}_10"]


def test_an_atomic_write_removes_only_files_of_writers_that_are_gone(tmp_path) -> None:
    path = tmp_path / "metrics.json"
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    in_progress = tmp_path / f".metrics.json.{live.pid}.a1b2c3.tmp"
    left_by_a_kill = tmp_path / f".metrics.json.{dead.pid}.d4e5f6.tmp"
    older_name = tmp_path / ".metrics.json.k1ll3d.tmp"  # written before pids were in names
    for stray in (in_progress, left_by_a_kill, older_name):
        stray.write_text("half")
    try:
        atomic_write(path, lambda handle: handle.write(b"{}"))
        assert sorted(p.name for p in tmp_path.iterdir()) == [in_progress.name, path.name]
        assert in_progress.read_text() == "half"
    finally:
        live.kill()
        live.wait()
    assert path.read_bytes() == b"{}"
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
