"""The events of the training loop, and the base class callbacks subscribe with.

    fit():
        on_fit_start
        for each epoch:
            on_epoch_start
            for each batch:  forward, backward (gradients accumulate)
                every `accumulate_grad_batches` batches: [clip],
                    on_before_optimizer_step
                    optimizer step, [step schedule]
                    on_train_step_end
            validate  ->  state.metrics
            [step epoch schedule]
            on_validation_end
            on_epoch_end            (stop here if state.should_stop)
        on_fit_end
    test():  evaluate on the test split, keeping the outputs
        on_test_end

Callbacks read the trainer (model, optimizer, logger) and change the run only through
`state` (e.g. `state.should_stop = True`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainlab.trainer import Trainer, TrainState

EVENTS = (
    "on_fit_start",
    "on_epoch_start",
    "on_before_optimizer_step",
    "on_train_step_end",
    "on_validation_end",
    "on_epoch_end",
    "on_fit_end",
    "on_test_end",
)


class Callback:
    """Override the events you need; every event gets the trainer and the shared state."""

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None: ...

    def on_epoch_start(self, trainer: Trainer, state: TrainState) -> None: ...

    def on_before_optimizer_step(self, trainer: Trainer, state: TrainState) -> None: ...

    def on_train_step_end(self, trainer: Trainer, state: TrainState) -> None: ...

    def on_validation_end(self, trainer: Trainer, state: TrainState) -> None: ...

    def on_epoch_end(self, trainer: Trainer, state: TrainState) -> None: ...

    def on_fit_end(self, trainer: Trainer, state: TrainState) -> None: ...

    def on_test_end(self, trainer: Trainer, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What this callback needs to continue after a resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state
