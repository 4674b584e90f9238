"""ModelCheckpoint: `last.pt` to resume from, `best.pt` whenever `monitor` improves."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from trainlab.callbacks.base import Callback
from trainlab.callbacks.monitor import Monitor
from trainlab.checkpoint import atomic_write, save_checkpoint


class ModelCheckpoint(Callback):
    """Saves the run so that `resume=` continues it exactly.

    `last.pt` is written every `every_n_epochs` epochs, every `every_n_steps` optimizer
    steps (mid-epoch: it holds the position of the next batch), at the end of training,
    and when a stop signal arrives. With `keep_last` > 0 the newest `keep_last` step
    checkpoints are also kept as `step_<N>.pt`. `best.pt` is written whenever the monitored
    metric improves.
    """

    def __init__(
        self,
        dirpath: str | Path,
        monitor: str = "val/acc",
        mode: str = "auto",
        save_last: bool = True,
        save_best: bool = True,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        keep_last: int = 0,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.tracker = Monitor(monitor, mode)
        self.save_last, self.save_best = save_last, save_best
        self.every_n_epochs, self.every_n_steps = every_n_epochs, every_n_steps
        self.keep_last = keep_last
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._saved_at: int | None = None  # global step of the latest last.pt

    @property
    def best_path(self) -> Path | None:
        return self.dirpath / "best.pt" if self.save_best and self.best is not None else None

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.pt"

    def on_train_step_end(self, trainer, state) -> None:
        # At an epoch's last step the save waits for the epoch's end, so that the
        # checkpoint comes after the epoch's validation rather than repeating it.
        if self._step_due(state) and not trainer.is_last_step_of_epoch():
            self._save_last(trainer, state, trainer.checkpoint())

    def on_epoch_end(self, trainer, state) -> None:
        current = self.tracker.value(state.metrics)
        # A non-finite value is never "best", whatever the mode.
        improved = (
            current is not None
            and math.isfinite(current)
            and self.tracker.is_improvement(current, self.best)
        )
        if improved:
            self.best, self.best_epoch = current, state.epoch
        due = (
            (self.every_n_epochs is not None and (state.epoch + 1) % self.every_n_epochs == 0)
            or self._step_due(state)
            or state.epoch + 1 == trainer.max_epochs
            or state.should_stop
        )
        if (improved and self.save_best) or (due and self.save_last):
            payload = trainer.checkpoint()
            if improved and self.save_best:
                save_checkpoint(payload, self.dirpath / "best.pt")
            if due:
                self._save_last(trainer, state, payload)

    def on_interrupt(self, trainer, state) -> None:
        if self.save_last and self._saved_at != state.global_step:
            self._save_last(trainer, state, trainer.checkpoint())

    def _step_due(self, state) -> bool:
        return bool(self.every_n_steps) and state.global_step % self.every_n_steps == 0

    def _save_last(self, trainer, state, payload: dict[str, Any]) -> None:
        if not self.save_last:
            return
        save_checkpoint(payload, self.last_path)
        self._saved_at = state.global_step
        if self.keep_last and self._step_due(state):
            self._keep_step_copy(state.global_step)

    def _keep_step_copy(self, step: int) -> None:
        """`step_<N>.pt`: a hard link to this last.pt (no second write), or a copy."""
        path = self.dirpath / f"step_{step}.pt"
        path.unlink(missing_ok=True)
        try:
            os.link(self.last_path, path)
        except OSError:  # a file system without hard links
            data = self.last_path.read_bytes()
            atomic_write(path, lambda handle: handle.write(data))
        numbered = sorted(
            (int(m.group(1)), p)
            for p in self.dirpath.glob("step_*.pt")
            if (m := re.fullmatch(r"step_(\d+)\.pt", p.name))
        )
        for _, old in numbered[: -self.keep_last]:
            old.unlink(missing_ok=True)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
