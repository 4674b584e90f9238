"""ModelCheckpoint: `last.pt` to resume from, `best.pt` whenever `monitor` improves."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from trainlab.components.callbacks.monitor import Monitor
from trainlab.engine.callback import Callback
from trainlab.engine.checkpoint import BackgroundWriter
from trainlab.engine.distributed import is_main_process


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
        self._improved = False  # this epoch's validation improved on the best
        self.writer = BackgroundWriter()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.tracker.monitor,
            mode=self.tracker.mode,
            every_n_epochs=self.every_n_epochs,
            every_n_steps=self.every_n_steps,
        )

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
            self._save(trainer, state, last=True, best=False)

    def on_validation_end(self, trainer, state) -> None:
        # The best is updated here and saved at the epoch's end, so that every callback's
        # state (another ModelCheckpoint's best included) is current in the checkpoint.
        current = self.tracker.value(state.metrics)
        # A non-finite value is never "best", whatever the mode.
        self._improved = (
            current is not None
            and math.isfinite(current)
            and self.tracker.is_improvement(current, self.best)
        )
        if self._improved:
            self.best, self.best_epoch = current, state.epoch

    def on_epoch_end(self, trainer, state) -> None:
        improved, self._improved = self._improved, False
        due = (
            (self.every_n_epochs is not None and (state.epoch + 1) % self.every_n_epochs == 0)
            or self._step_due(state)
            or state.epoch + 1 == trainer.max_epochs
            or state.should_stop
        )
        self._save(trainer, state, last=due, best=improved)

    def on_fit_end(self, trainer, state) -> None:
        self.writer.wait()  # best.pt is read next, for testing

    def on_interrupt(self, trainer, state) -> None:
        if self.save_last and self._saved_at != state.global_step:
            self._save(trainer, state, last=True, best=False)
        self.writer.wait()  # the process exits next

    def _step_due(self, state) -> bool:
        return bool(self.every_n_steps) and state.global_step % self.every_n_steps == 0

    def _save(self, trainer, state, *, last: bool, best: bool) -> None:
        """One checkpoint, written once (in the background) to every file that wants it:
        last.pt, a kept step_<N>.pt, best.pt (the others are hard links to the first)."""
        paths = []
        if last and self.save_last:
            paths.append(self.last_path)
            if self.keep_last and self._step_due(state):
                paths.append(self.dirpath / f"step_{state.global_step}.pt")
        if best and self.save_best:
            paths.append(self.dirpath / "best.pt")
        if not paths:
            return
        payload = trainer.checkpoint()  # on every process: it gathers each one's RNG state
        if last and self.save_last:  # on every process too: they decide the next save alike
            self._saved_at = state.global_step
        if not is_main_process():  # the main process writes for all
            return
        self.writer.save(payload, paths)
        if last and self.save_last and self.keep_last and self._step_due(state):
            self._forget_old_steps()

    def _forget_old_steps(self) -> None:
        """Keep the newest `keep_last` step_<N>.pt files (the one being written included)."""
        self.writer.wait()
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
