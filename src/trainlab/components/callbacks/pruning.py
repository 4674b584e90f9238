"""Magnitude pruning during training, with a sparsity that grows over the epochs."""

from __future__ import annotations

import logging
from typing import Any

from trainlab.components.compression import apply_masks, pruning_masks, sparsity
from trainlab.engine.callback import Callback

log = logging.getLogger(__name__)


class Pruning(Callback):
    """Prune the weights of Linear, Conv (and, unstructured, LSTM / GRU) layers while the
    model trains.

    At the start of each epoch from `start_epoch` to `end_epoch` (default: the run's last
    epoch) the target fraction rises along Zhu & Gupta's cubic schedule, from 0 to
    `amount` at `end_epoch`: `amount * (1 - (1 - t)^3)`, t the fraction of the pruning
    epochs begun. Each layer loses that fraction of its weights smallest in magnitude
    (`structured`: of its output units, by `norm`), and after every optimizer step the
    pruned weights are set back to zero, so the epochs between prunings fine-tune what is
    left. The zeros are in the weights themselves (the pruning is permanent as it goes):
    checkpoints, `predict` and export see a plain model. The masks are the callback's
    state, so a resumed run prunes as an unstopped one.
    """

    def __init__(
        self,
        amount: float = 0.5,
        structured: bool = False,
        norm: float = 1,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        self.amount, self.structured, self.norm = amount, structured, norm
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.masks: dict[str, Any] = {}
        self.pruned_epoch: int | None = None  # the last epoch whose pruning is done
        self.fraction = 0.0  # the fraction the masks hold

    @property
    def state_key(self) -> str:
        return self._generate_state_key(amount=self.amount, structured=self.structured)

    def target(self, epoch: int, max_epochs: int) -> float:
        """The fraction of each layer's weights pruned from `epoch` on."""
        end = max_epochs - 1 if self.end_epoch is None else self.end_epoch
        if epoch < self.start_epoch:
            return 0.0
        if epoch >= end:
            return self.amount
        done = (epoch - self.start_epoch + 1) / (end - self.start_epoch + 1)
        return self.amount * (1 - (1 - done) ** 3)

    def on_fit_start(self, trainer, state) -> None:
        if self.masks:  # resumed: the saved weights may predate the last step's masking
            apply_masks(trainer.model, self.masks)

    def on_epoch_start(self, trainer, state) -> None:
        if self.pruned_epoch == state.epoch:  # a run resumed mid-epoch: pruned already
            return
        fraction = self.target(state.epoch, trainer.max_epochs)
        self.pruned_epoch = state.epoch
        if fraction <= self.fraction:
            return
        self.masks = pruning_masks(
            trainer.model, fraction, self.structured, self.norm, masks=self.masks
        )
        self.fraction = fraction
        apply_masks(trainer.model, self.masks)
        log.debug(f"pruning: epoch {state.epoch + 1}, {fraction:.3f} of each layer's weights")

    def on_train_step_end(self, trainer, state) -> None:
        if self.masks:
            apply_masks(trainer.model, self.masks)

    def on_fit_end(self, trainer, state) -> None:
        if self.masks:
            apply_masks(trainer.model, self.masks)
            log.info(
                f"pruning: {sparsity(trainer.model):.1%} of the Linear/Conv weights are zero "
                f"({self.fraction:.3g} of each layer{' unit' if self.structured else ''})"
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": dict(self.masks),
            "pruned_epoch": self.pruned_epoch,
            "fraction": self.fraction,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = dict(state["masks"])
        self.pruned_epoch, self.fraction = state["pruned_epoch"], state["fraction"]
