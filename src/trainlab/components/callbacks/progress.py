"""ProgressDisplay: one line per epoch with the main metrics; a bar within the epoch on a TTY."""

from __future__ import annotations

import logging
import sys
import time

from trainlab.engine.callback import Callback
from trainlab.engine.distributed import is_main_process

log = logging.getLogger("trainlab")

SHOWN = ("train/loss", "val/loss", "val/acc", "val/f1")


class ProgressDisplay(Callback):
    def __init__(self, bar: bool | str = "auto", width: int = 24) -> None:
        self.bar = sys.stderr.isatty() if bar == "auto" else bool(bar)
        self.width = width
        self.epoch_started = 0.0

    def on_epoch_start(self, trainer, state) -> None:
        self.epoch_started = time.perf_counter()

    def on_train_step_end(self, trainer, state) -> None:
        # None: a loader of unknown length, until its first epoch ends (a count, no bar).
        total = trainer.batches_per_epoch
        # Redraw about 50 times an epoch: terminal writes are not free.
        every = max(total // 50, 1) if total else 50
        if not self.bar or (state.batch_in_epoch % every and state.batch_in_epoch != total):
            return
        if not is_main_process():
            return
        where = f"epoch {state.epoch + 1}/{trainer.max_epochs}"
        if total is None:
            sys.stderr.write(f"\r{where} batch {state.batch_in_epoch}")
        else:
            filled = self.width * state.batch_in_epoch // total
            bar = "#" * filled + "." * (self.width - filled)
            sys.stderr.write(f"\r{where} [{bar}] {state.batch_in_epoch}/{total}")
        sys.stderr.flush()

    def on_validation_end(self, trainer, state) -> None:
        if not is_main_process():
            return
        if self.bar:
            sys.stderr.write("\r\033[K")
        shown = "  ".join(f"{k} {state.metrics[k]:.4f}" for k in SHOWN if k in state.metrics)
        seconds = time.perf_counter() - self.epoch_started
        log.info(f"epoch {state.epoch + 1}/{trainer.max_epochs}  {shown}  ({seconds:.1f}s)")
