"""LearningRateMonitor: the learning rate of every optimizer step, as `train/lr`."""

from __future__ import annotations

from trainlab.callbacks.base import Callback


class LearningRateMonitor(Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[float] = []

    def on_train_step_end(self, trainer, state) -> None:
        if state.global_step % trainer.log_every_n_steps == 0:
            # The rate the step just used; reading it is a host-side lookup, no device sync.
            self.steps.append(state.global_step)
            self.values.append(state.last_lr)

    def on_validation_end(self, trainer, state) -> None:
        if trainer.logger is not None and self.steps:
            trainer.logger.log_scalar_series("train/lr", self.values, self.steps)
        self.steps, self.values = [], []
