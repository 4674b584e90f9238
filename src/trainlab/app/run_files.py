"""A run folder's files and who may write them: the lock a run holds on its folder, and
the checks that a folder to resume can be read and written (each a one-line refusal).

Imports neither torch nor Hydra.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from trainlab.errors import ConfigError, TrainlabError


def check_writable(folder: Path) -> None:
    """Refuse to resume into a folder (or a part of it) this process cannot write to."""
    parts = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
    parts += [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    blocked = next((p for p in parts if not os.access(p, os.W_OK)), None)
    if blocked is not None:
        where = "" if blocked == folder else f" ({blocked.relative_to(folder)})"
        raise TrainlabError(
            f"cannot write to {folder}{where} (read-only): a resumed run writes its "
            "checkpoints and logs there; copy it somewhere writable and resume from the copy "
            f"(cp -r {folder} COPY; resume=COPY)"
        )


def check_folder_path(path: Path, setting: str) -> None:
    """Refuse a run folder path that is, or lies inside, a file."""
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise ConfigError(
                f"{setting}={path}: {part} is a file, not a folder; point {setting} at a "
                "folder (or leave it at its default)"
            )


def check_readable(folder: Path, resume: str) -> None:
    """Refuse to resume a run whose saved config files are corrupt (one line naming it)."""
    for name in ("overrides.yaml", "config.yaml"):
        path = folder / ".hydra" / name
        if path.is_file() and (problem := unreadable_yaml(path)):
            raise TrainlabError(
                f"resume={resume}: {path} is corrupt ({problem}); restore it, or delete "
                f"{folder / '.hydra'} to resume from the checkpoint alone (it keeps the config)"
            )


def unreadable_yaml(path: Path) -> str | None:
    """Why `path` is not a readable YAML file of Hydra's; None if it is."""
    try:
        content = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as ex:
        return f"{type(ex).__name__}: {_first_line(str(ex))}"
    if path.name == "overrides.yaml":
        if content is not None and not (
            isinstance(content, list) and all(isinstance(o, str) for o in content)
        ):
            return "not a list of overrides"
    elif not isinstance(content, dict):
        return "not a mapping of settings"
    return None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


# Run folders this process holds locked: folder -> open descriptor of the folder.
_locks: dict[Path, int] = {}


def lock_run_folder(folder: Path) -> None:
    """Hold an exclusive lock on `folder` until this process ends (or `unlock_run_folder`).

    The lock is taken on the folder itself, so taking it writes nothing; the OS releases
    it when the process ends, even when killed, so no lock outlives its run.
    """
    if folder in _locks:
        return
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        return
    descriptor = os.open(folder, os.O_RDONLY)
    deadline = None
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _lock_holder(folder)
            if holder is None or not _alive(holder):
                # The run was killed, but processes it forked (DataLoader workers) still
                # share its lock: they end within seconds of it. (None: the lock was
                # released just now, or this system has no /proc/locks.)
                wait = ORPHAN_WAIT_S if holder is not None else 2.0
                deadline = deadline or time.monotonic() + wait
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
            os.close(descriptor)
            by = f" (pid {holder})" if holder and holder > 0 else ""
            raise TrainlabError(
                f"run {folder} is in use by another trainlab process{by}; wait for it to "
                "end, or stop it, then run this command again"
            ) from None
    _locks[folder] = descriptor


# How long a lock left by a dead run's forked processes is waited for.
ORPHAN_WAIT_S = 30.0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unlock_run_folder(folder: Path) -> None:
    if (descriptor := _locks.pop(folder, None)) is not None:
        os.close(descriptor)  # closing the last descriptor releases the lock


def _lock_holder(folder: Path) -> int | None:
    """The pid that took the lock on `folder`, from /proc/locks (Linux; -1 once it has
    ended); None elsewhere."""
    try:
        inode = folder.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "FLOCK" in fields and len(fields) > 5 and fields[5].rsplit(":", 1)[-1] == str(inode):
            # -1 (or 0): the process that took it has ended (children still share it).
            return int(fields[4]) if fields[4].lstrip("-").isdigit() else None
    return None
