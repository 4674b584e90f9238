"""EarlyStopping with Keras's arguments and semantics."""

from __future__ import annotations

import copy
import logging
from typing import Any

from trainlab.components.callbacks.monitor import Monitor
from trainlab.engine.callback import Callback

log = logging.getLogger(__name__)


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs.

    As in Keras: epochs before `start_from_epoch` are ignored; the wait count is reset only
    by a value that beats both the best so far and `baseline`; with `restore_best_weights`
    the model ends with the weights of its best epoch.
    """

    def __init__(
        self,
        monitor: str = "val/loss",
        mode: str = "auto",
        min_delta: float = 0.0,
        patience: int = 0,
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        self.tracker = Monitor(monitor, mode, min_delta)
        self.patience = patience
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.wait = 0
        self.best: float | None = None
        self.best_epoch = 0
        self.stopped_epoch: int | None = None
        self.best_weights: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.tracker.monitor, mode=self.tracker.mode)

    def on_validation_end(self, trainer, state) -> None:
        current = self.tracker.value(state.metrics)
        if current is None or state.epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self._keep_weights(trainer, state.epoch)
        self.wait += 1
        if self.tracker.is_improvement(current, self.best):
            self.best, self.best_epoch = current, state.epoch
            if self.restore_best_weights:
                self._keep_weights(trainer, state.epoch)
            if self.baseline is None or self.tracker.is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and state.epoch > 0:
            self.stopped_epoch = state.epoch
            state.should_stop = True

    def on_fit_end(self, trainer, state) -> None:
        if self.stopped_epoch is not None:
            log.info(
                f"early stopping at epoch {self.stopped_epoch + 1}: {self.tracker.monitor} "
                f"did not improve for {self.patience} epochs (best {self.best:.4g} "
                f"at epoch {self.best_epoch + 1})"
            )
        if self.restore_best_weights and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)
            log.info(f"restored the weights of the best epoch, {self.best_epoch + 1}")

    def _keep_weights(self, trainer, epoch: int) -> None:
        self.best_weights = copy.deepcopy(trainer.model.state_dict())
        self.best_epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait": self.wait,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait, self.best = state["wait"], state["best"]
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]
        self.best_weights = state["best_weights"]
