"""LearningRateMonitor: the learning rate of the optimizer steps, as `train/lr`."""

from __future__ import annotations

from typing import Any

from trainlab.engine.callback import Callback
from trainlab.engine.schedule import current_lr


class LearningRateMonitor(Callback):
    """Records the rate at each step where it changed, the run's first step and each
    epoch's last step: the same line in TensorBoard as a point per step, without writing
    thousands of equal values for a constant rate.

    The values are host-side (no device sync), buffered, and written after each
    validation and before each checkpoint.
    """

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[float] = []
        self.last: float | None = None  # the latest rate recorded

    def on_before_optimizer_step(self, trainer, state) -> None:
        # Recorded before the step, so a checkpoint taken at its end already holds it.
        step = state.global_step + 1
        if step % trainer.log_every_n_steps:
            return
        lr = current_lr(trainer.optimizer)
        if lr != self.last or trainer.is_last_step_of_epoch():
            self.steps.append(step)
            self.values.append(lr)
            self.last = lr

    def on_validation_end(self, trainer, state) -> None:
        self._write(trainer)

    def on_save_checkpoint(self, trainer, state) -> None:
        self._write(trainer)

    def _write(self, trainer) -> None:
        if trainer.logger is not None and self.steps:
            trainer.logger.log_scalar_series("train/lr", self.values, self.steps)
        self.steps, self.values = [], []

    def state_dict(self) -> dict[str, Any]:
        return {"last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last = state.get("last")
