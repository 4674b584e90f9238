"""Checkpoints: written atomically, read without unpickling arbitrary objects."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainlab.errors import TrainlabError

FORMAT = "trainlab-checkpoint"
VERSION = 1


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write `payload` to `path` so that a reader sees the old file or the new, never half.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the file
    is renamed over `path` (an atomic replace on POSIX and Windows).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a trainlab checkpoint; anything else is refused, never unpickled."""
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
