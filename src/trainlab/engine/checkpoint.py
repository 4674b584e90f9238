"""Checkpoints: written atomically, read without unpickling arbitrary objects.

torch is imported where it is used, so `atomic_write` serves torch-free callers too.
"""

from __future__ import annotations

import io
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from trainlab.errors import TrainlabError

if TYPE_CHECKING:
    import torch

FORMAT = "trainlab-checkpoint"
VERSION = 2  # 2: loop state (partial epoch loss, stop flag, skipped steps) for exact resume


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file so that a reader sees the old file or the new one, never half of one.

    `write` fills a temporary file of this writer's own in the same folder; it is flushed
    to disk and renamed over `path` (an atomic replace on POSIX and Windows). A process
    killed mid-write leaves only a `.<name>.<pid>.*.tmp` file, which readers ignore and the
    next write of `path` removes once its writer is gone; a live writer's file is left be.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        if os.name == "posix":  # mkstemp's 0600: give the file what open() would
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)  # the rename itself survives a power cut
    remove_strays(path)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_write`): for any file of a run folder."""
    return atomic_write(path, lambda handle: handle.write(data))


def _umask() -> int:
    """This process's umask, read without setting it (os.umask would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _temp_prefix(path: Path) -> str:
    # The writer's pid in the name tells a file in progress from one a killed writer left.
    return f".{path.name}.{os.getpid()}."


def remove_strays(path: Path) -> None:
    """Remove the temporary files of `path` left by writers that are no longer running."""
    for stray in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stray.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or not _alive(int(pid)):
            stray.unlink(missing_ok=True)


def remove_dead_writers_files(folder: Path) -> None:
    """Remove every temporary file in `folder` left by a writer that is no longer running
    (one killed while writing a file that is not written again, e.g. best.pt)."""
    for stray in folder.glob(".*.tmp"):
        pid = stray.name[1:-4].rsplit(".", 2)
        if len(pid) == 3 and pid[1].isdigit() and not _alive(int(pid[1])):
            stray.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes `path` from one thread at a time
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _sync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write `payload` to `path` atomically (see `atomic_write`)."""
    return atomic_write_bytes(path, serialize(payload))


def serialize(payload: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file: a snapshot, unchanged by later training steps."""
    import torch

    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    return buffer.getvalue()


def link_atomic(source: Path, target: Path) -> None:
    """Make `target` the same file as `source` (a hard link: no second write), replacing
    any old `target` atomically; a copy where the file system has no hard links."""
    tmp = target.with_name(f"{_temp_prefix(target)}{secrets.token_hex(4)}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        data = source.read_bytes()
        atomic_write(target, lambda handle: handle.write(data))
        return
    os.replace(tmp, target)
    _sync_folder(target.parent)
    remove_strays(target)


class BackgroundWriter:
    """Writes checkpoints on a thread of its own, so training goes on while a file is
    written and flushed to disk (`fsync` takes milliseconds; an epoch of a small model
    is not much longer).

    `save` serialises on the caller's thread, then hands the bytes over; `wait` blocks
    until the last save is on disk and raises its error, if it had one. A save waits for
    the one before it, so files are written in order. The thread is not a daemon: a
    process ending mid-write finishes the write first.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, payload: dict[str, Any], paths: Sequence[Path]) -> None:
        """Write `payload` to `paths[0]` and make the other paths links to that file."""
        data = serialize(payload)
        self.wait()
        self._thread = threading.Thread(
            target=self._write, args=(data, list(paths)), name="trainlab-checkpoint"
        )
        self._thread.start()

    def _write(self, data: bytes, paths: list[Path]) -> None:
        try:
            first = atomic_write(paths[0], lambda handle: handle.write(data))
            for path in paths[1:]:
                link_atomic(first, path)
        except BaseException as ex:  # raised on the training thread by `wait`
            self._error = ex

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise TrainlabError(f"could not write a checkpoint: {error}") from error


class UnreadableCheckpoint(TrainlabError):
    """A file that is not a readable trainlab checkpoint; `reason` says why, in a few words."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a trainlab checkpoint; anything else is refused, never unpickled."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UnreadableCheckpoint(f"checkpoint not found: {path}", "no such file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as ex:
        reason = f"{type(ex).__name__}: truncated, corrupt or not a checkpoint"
        raise UnreadableCheckpoint(
            f"{path} is not a readable trainlab checkpoint ({type(ex).__name__}); "
            "point to a checkpoints/*.pt file written by trainlab",
            reason,
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UnreadableCheckpoint(
            f"{path} is not a trainlab checkpoint (no '{FORMAT}' marker)",
            f"no '{FORMAT}' marker: not written by trainlab",
        )
    return payload
