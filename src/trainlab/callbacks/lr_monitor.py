"""LearningRateMonitor: the learning rate of every optimizer step, as `train/lr`."""

from __future__ import annotations

from trainlab.callbacks.base import Callback
from trainlab.optim import current_lr


class LearningRateMonitor(Callback):
    """Buffers the rates (host-side values, no device sync) and writes them after each
    validation and before each checkpoint."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[float] = []

    def on_before_optimizer_step(self, trainer, state) -> None:
        # Recorded before the step, so a checkpoint taken at its end already holds it.
        step = state.global_step + 1
        if step % trainer.log_every_n_steps == 0:
            self.steps.append(step)
            self.values.append(current_lr(trainer.optimizer))

    def on_validation_end(self, trainer, state) -> None:
        self._write(trainer)

    def on_save_checkpoint(self, trainer, state) -> None:
        self._write(trainer)

    def _write(self, trainer) -> None:
        if trainer.logger is not None and self.steps:
            trainer.logger.log_scalar_series("train/lr", self.values, self.steps)
        self.steps, self.values = [], []
