"""The events of the training loop, and the base class callbacks subscribe with.

    fit():
        on_fit_start
        for each epoch (from where a resumed run left off; none once state.should_stop):
            on_epoch_start
            for each batch:  forward, backward (gradients accumulate)
                every `accumulate_grad_batches` batches: [clip], check finite,
                    on_before_optimizer_step      (not for a skipped non-finite step)
                    optimizer step, [step schedule]
                    on_train_step_end
                    a stop signal (SIGTERM, SIGUSR1)?  on_interrupt, and fit returns
            validate  ->  state.metrics
            [step epoch schedule]
            on_validation_end
            on_epoch_end
            a stop signal?  on_interrupt, and fit returns
        on_fit_end
    test():  evaluate on the test split, keeping the outputs
        on_test_end

    checkpoint(), whenever a callback takes one:
        on_save_checkpoint      write out anything buffered, so the logs hold every
                                step up to the checkpoint

Callbacks read the trainer (model, optimizer, logger) and change the run only through
`state` (e.g. `state.should_stop = True`). What a callback must remember across a resume
goes in `state_dict()`, saved under the callback's `state_key`; it must not draw from the
global random generators, so that a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainlab.engine.trainer import Trainer, TrainState

EVENTS = (
    "on_fit_start",
    "on_epoch_start",
    "on_before_optimizer_step",
    "on_train_step_end",
    "on_validation_end",
    "on_epoch_end",
    "on_fit_end",
    "on_test_end",
    "on_save_checkpoint",
    "on_interrupt",
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

    def on_save_checkpoint(self, trainer: Trainer, state: TrainState) -> None: ...

    def on_interrupt(self, trainer: Trainer, state: TrainState) -> None: ...

    @property
    def state_key(self) -> str:
        """The key of this callback's `state_dict()` in a checkpoint: unique among a run's
        callbacks. A class of which a run may hold several (two ModelCheckpoints) adds the
        arguments that tell them apart, with `_generate_state_key` (Lightning's scheme)."""
        return type(self).__qualname__

    def _generate_state_key(self, **arguments: Any) -> str:
        return f"{type(self).__qualname__}{arguments!r}"

    def state_dict(self) -> dict[str, Any]:
        """What this callback needs to continue after a resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state
