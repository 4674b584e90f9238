"""ModelCheckpoint: `last.pt` after every epoch, `best.pt` whenever `monitor` improves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from trainlab.callbacks.base import Callback
from trainlab.callbacks.monitor import Monitor
from trainlab.checkpoint import save_checkpoint


class ModelCheckpoint(Callback):
    def __init__(
        self,
        dirpath: str | Path,
        monitor: str = "val/acc",
        mode: str = "auto",
        save_last: bool = True,
        save_best: bool = True,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.tracker = Monitor(monitor, mode)
        self.save_last, self.save_best = save_last, save_best
        self.best: float | None = None
        self.best_epoch: int | None = None

    @property
    def best_path(self) -> Path | None:
        return self.dirpath / "best.pt" if self.save_best and self.best is not None else None

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
        if (improved and self.save_best) or self.save_last:
            payload = trainer.checkpoint(next_epoch=state.epoch + 1, next_batch=0)
            if improved and self.save_best:
                save_checkpoint(payload, self.dirpath / "best.pt")
            if self.save_last:
                save_checkpoint(payload, self.dirpath / "last.pt")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
