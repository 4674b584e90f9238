"""Checkpoints: written atomically, read without unpickling arbitrary objects.

torch is imported where it is used, so `atomic_write` serves torch-free callers too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from trainlab.errors import TrainlabError

if TYPE_CHECKING:
    import torch

FORMAT = "trainlab-checkpoint"
VERSION = 2  # 2: loop state (partial epoch loss, stop flag, skipped steps) for exact resume


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file so that a reader sees the old file or the new one, never half of one.

    `write` fills a temporary file in the same folder; it is flushed to disk and renamed
    over `path` (an atomic replace on POSIX and Windows). A process killed mid-write leaves
    only a `.<name>.*.tmp` file, which readers ignore and the next write of `path` removes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)  # the rename itself survives a power cut
    for stray in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
        stray.unlink(missing_ok=True)
    return path


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
    import torch

    payload = {"format": FORMAT, "version": VERSION, **payload}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a trainlab checkpoint; anything else is refused, never unpickled."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise TrainlabError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as ex:
        raise TrainlabError(
            f"{path} is not a readable trainlab checkpoint ({type(ex).__name__}); "
            "point to a checkpoints/*.pt file written by trainlab"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise TrainlabError(f"{path} is not a trainlab checkpoint (no '{FORMAT}' marker)")
    return payload
