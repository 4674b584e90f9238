"""The training loop: fit, evaluate, predict. One readable loop; the rest are callbacks.

The events and when they fire are drawn in `trainlab/callbacks/base.py`. `checkpoint()`
holds everything that decides the rest of a run and `restore()` continues from one, so a
run stopped at any step and resumed ends with the same weights, bit for bit, as a run
never stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainlab import preemption
from trainlab.callbacks.base import Callback
from trainlab.data.batches import TensorBatches
from trainlab.metrics import TaskMetrics
from trainlab.optim import Schedule, current_lr
from trainlab.seeding import rng_state, set_rng_state

# Losses stay on the device and are read back in blocks of this many steps: reading
# every step would make the host wait for the device at each one.
LOSS_READBACK_STEPS = 100


@dataclass
class TrainState:
    """Where the run is, and the one place callbacks change it."""

    epoch: int = 0  # index of the epoch in progress (or just finished)
    batch_in_epoch: int = 0  # batches of this epoch already trained
    global_step: int = 0  # optimizer steps taken since the run began
    last_lr: float = 0.0  # learning rate of the latest step
    metrics: dict[str, float] = field(default_factory=dict)  # latest epoch-level values
    should_stop: bool = False
    stopped_by: str | None = None  # the stop signal that ended fit early (SIGTERM, SIGUSR1)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        max_epochs: int,
        schedule: Schedule | None = None,
        metrics: TaskMetrics | None = None,
        callbacks: Sequence[Callback] = (),
        logger: Any = None,
        log_every_n_steps: int = 1,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        l1: float = 0.0,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.max_epochs = max_epochs
        self.schedule = schedule
        self.metrics = metrics
        self.callbacks = list(callbacks)
        self.logger = logger
        self.log_every_n_steps = log_every_n_steps
        self.accumulate = accumulate_grad_batches
        self.clip_value, self.clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self.l1 = l1
        # L1 acts on weights (matrices, kernels, embeddings), not on biases or norm scales.
        self.penalised = [p for p in model.parameters() if p.ndim > 1] if l1 else []
        self.config = config or {}
        self.state = TrainState()
        self.start_epoch = 0  # the epoch fit begins with; restore() moves it
        self.batches_per_epoch = 0
        self.example_input: torch.Tensor | None = None  # a small batch, for the model graph
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None  # of the last test()
        self._epoch_loss: torch.Tensor | None = None  # summed over the epoch's trained batches
        self._epoch_batches = 0
        self._losses: list[torch.Tensor] = []
        self._loss_steps: list[int] = []

    @staticmethod
    def steps_per_epoch(batches: int, accumulate: int) -> int:
        return math.ceil(batches / accumulate)

    # ---------------------------------------------------------------------------- fit
    def fit(self, train: TensorBatches, val: TensorBatches) -> TrainState:
        state = self.state
        self.batches_per_epoch = len(train)
        self.example_input = train.inputs[:2]
        device = train.inputs.device
        self._emit("on_fit_start")
        for epoch in range(self.start_epoch, self.max_epochs):
            if state.should_stop:
                break
            state.epoch = epoch
            if state.batch_in_epoch == 0:  # a new epoch (a resumed run may re-enter one)
                self._epoch_loss, self._epoch_batches = torch.zeros((), device=device), 0
            self._emit("on_epoch_start")
            self.model.train()
            step_loss, step_batches = torch.zeros((), device=device), 0
            for inputs, targets in train.epoch(epoch, start=state.batch_in_epoch):
                step_loss += self._forward_backward(inputs, targets)
                step_batches += 1
                state.batch_in_epoch += 1
                # Step every `accumulate` batches, and on the epoch's last batch.
                if state.batch_in_epoch % self.accumulate and state.batch_in_epoch < len(train):
                    continue
                self._optimizer_step()
                self._epoch_loss += step_loss
                self._epoch_batches += step_batches
                state.global_step += 1
                self._record_loss(step_loss / self.accumulate)
                step_loss, step_batches = torch.zeros((), device=device), 0
                self._emit("on_train_step_end")
                if preemption.requested():
                    return self._stop_for_signal()
            self._write_losses()

            mean_loss = self._epoch_loss.item() / max(self._epoch_batches, 1)
            state.metrics = {"train/loss": mean_loss}
            state.metrics.update(self.evaluate(val, "val"))
            # Epoch-level values share the step axis with train/loss (x: optimizer steps).
            self._log(
                state.metrics | {"epoch": epoch}, step=state.global_step, skip=("train/loss",)
            )
            if self.schedule is not None and self.schedule.interval == "epoch":
                self.schedule.step(state.metrics)
            self._emit("on_validation_end")
            state.batch_in_epoch = 0
            self._emit("on_epoch_end")
            if preemption.requested():
                return self._stop_for_signal()
        self._emit("on_fit_end")
        if self.logger is not None:
            self.logger.flush()
        return state

    def _forward_backward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(self.model(inputs), targets)
        total = loss
        if self.l1:
            total = total + self.l1 * sum(p.abs().sum() for p in self.penalised)
        # Scale so that accumulated gradients average over the batches of one step.
        (total / self.accumulate).backward()
        return loss.detach()

    def is_last_step_of_epoch(self) -> bool:
        return self.state.batch_in_epoch >= self.batches_per_epoch

    def _optimizer_step(self) -> None:
        if self.clip_value is not None:
            parameters = self.model.parameters()
            if self.clip_algorithm == "norm":
                nn.utils.clip_grad_norm_(parameters, self.clip_value)
            else:
                nn.utils.clip_grad_value_(parameters, self.clip_value)
        self._emit("on_before_optimizer_step")
        self.state.last_lr = current_lr(self.optimizer)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.schedule is not None and self.schedule.interval == "step":
            self.schedule.step(self.state.metrics)

    # ---------------------------------------------------------------------- evaluate
    def test(self, batches: TensorBatches) -> dict[str, float]:
        """Evaluate on the test split, keep its outputs for callbacks, emit `on_test_end`."""
        values = self.evaluate(batches, "test", keep_outputs=True)
        self._emit("on_test_end")
        return values

    @torch.inference_mode()
    def evaluate(
        self, batches: TensorBatches, prefix: str, keep_outputs: bool = False
    ) -> dict[str, float]:
        """Mean loss and every metric over `batches`, as `{prefix}/{name}` floats."""
        was_training = self.model.training
        self.model.eval()
        total_loss = torch.zeros((), device=batches.inputs.device)
        count = 0
        if self.metrics is not None:
            self.metrics.reset()
        kept = []
        for inputs, targets in batches:
            outputs = self.model(inputs)
            total_loss += self.loss_fn(outputs, targets) * len(targets)
            count += len(targets)
            if self.metrics is not None:
                self.metrics.update(outputs, targets)
            if keep_outputs:
                kept.append((outputs, targets))
        if keep_outputs:
            self.outputs = (torch.cat([o for o, _ in kept]), torch.cat([t for _, t in kept]))
        values = {"loss": total_loss / max(count, 1)}
        if self.metrics is not None:
            values.update(self.metrics.compute())
        self.model.train(was_training)
        # One device-to-host copy for all values.
        numbers = torch.stack([v.float() for v in values.values()]).tolist()
        return {f"{prefix}/{name}": v for name, v in zip(values, numbers, strict=True)}

    # ----------------------------------------------------------- checkpoint, resume
    def checkpoint(self) -> dict[str, Any]:
        """Everything that decides the rest of the run, which continues at the next batch.

        Buffered logs are written first, so the event files hold every step up to this one.
        """
        self._write_losses()
        self._emit("on_save_checkpoint")
        if self.logger is not None:
            self.logger.flush()
        state = self.state
        # Mid-epoch: the next batch of this epoch. At an epoch's end, where the loop has
        # reset batch_in_epoch: the next epoch.
        if state.batch_in_epoch:
            epoch, batch = state.epoch, state.batch_in_epoch
        else:
            epoch, batch = state.epoch + 1, 0
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.scheduler.state_dict() if self.schedule else None,
            "scaler": None,  # the AMP GradScaler's state, once mixed precision exists
            "position": {"epoch": epoch, "batch_in_epoch": batch, "global_step": state.global_step},
            "loop": {
                # So that the mean train/loss of an epoch resumed part-way is exact.
                "epoch_loss_sum": None if self._epoch_loss is None else self._epoch_loss.clone(),
                "epoch_batches": self._epoch_batches,
                "should_stop": state.should_stop,
            },
            "metrics": dict(state.metrics),
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
            "rng": rng_state(),
            "config": self.config,
        }

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue the run `payload` (a `checkpoint()`) was taken from."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.schedule is not None and payload["scheduler"] is not None:
            self.schedule.scheduler.load_state_dict(payload["scheduler"])
        for callback in self.callbacks:
            if (saved := payload["callbacks"].get(type(callback).__name__)) is not None:
                callback.load_state_dict(saved)
        state, position, loop = self.state, payload["position"], payload["loop"]
        self.start_epoch = position["epoch"]
        state.batch_in_epoch = position["batch_in_epoch"]
        # At an epoch boundary, the epoch "just finished" is the one before.
        state.epoch = self.start_epoch if state.batch_in_epoch else max(self.start_epoch - 1, 0)
        state.global_step = position["global_step"]
        state.metrics = dict(payload["metrics"])
        state.should_stop = loop["should_stop"]
        self._epoch_loss, self._epoch_batches = loop["epoch_loss_sum"], loop["epoch_batches"]
        # Last: nothing may draw random numbers between here and the first batch.
        set_rng_state(payload["rng"])

    def _stop_for_signal(self) -> TrainState:
        """A stop signal arrived: callbacks save the run where it is (`on_interrupt`)."""
        self.state.stopped_by = preemption.requested()
        self._emit("on_interrupt")
        if self.logger is not None:
            self.logger.flush()
        return self.state

    # ---------------------------------------------------------------------- helpers
    def _emit(self, event: str) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, self.state)

    def _record_loss(self, loss: torch.Tensor) -> None:
        if self.state.global_step % self.log_every_n_steps == 0:
            self._losses.append(loss)
            self._loss_steps.append(self.state.global_step)
            if len(self._losses) >= LOSS_READBACK_STEPS:
                self._write_losses()

    def _write_losses(self) -> None:
        if self._losses and self.logger is not None:
            values = torch.stack(self._losses).tolist()
            self.logger.log_scalar_series("train/loss", values, self._loss_steps)
        self._losses, self._loss_steps = [], []

    def _log(self, values: dict[str, float], step: int, skip: Sequence[str] = ()) -> None:
        if self.logger is not None:
            self.logger.log_scalars({k: v for k, v in values.items() if k not in skip}, step)
