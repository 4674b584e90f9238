"""The training loop: fit, evaluate, predict. One readable loop; the rest are callbacks.

The events and when they fire are drawn in `trainlab/engine/callback.py`. `checkpoint()`
holds everything that decides the rest of a run and `restore()` continues from one, so a
run stopped at any step and resumed ends with the same weights, bit for bit, as a run
never stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from trainlab.engine import distributed, preemption
from trainlab.engine.batches import Batches, IterableBatches, as_batches
from trainlab.engine.callback import Callback
from trainlab.engine.runtime import MIN_LOSS_SCALE, CompiledOrEager, autocast, grad_scaler
from trainlab.engine.schedule import Schedule, current_lr
from trainlab.engine.seeding import rng_state, set_rng_state
from trainlab.errors import ConfigError, DivergenceError

if TYPE_CHECKING:
    from trainlab.components.metrics import TaskMetrics

# Losses stay on the device and are read back in blocks of this many steps: reading
# every step would make the host wait for the device at each one.
LOSS_READBACK_STEPS = 100

# What fit, evaluate and test draw batches from: trainlab's own `Batches`, a torch
# DataLoader, or any re-iterable of (inputs, targets) batches (see `as_batches`).
BatchSource = Batches | IterableBatches | Iterable


@dataclass
class TrainState:
    """Where the run is, and the one place callbacks change it."""

    epoch: int = 0  # index of the epoch in progress (or just finished)
    batch_in_epoch: int = 0  # batches of this epoch already trained
    global_step: int = 0  # optimizer steps taken since the run began
    last_lr: float = 0.0  # learning rate of the latest step
    metrics: dict[str, float] = field(default_factory=dict)  # latest epoch-level values
    should_stop: bool = False
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient (nan_policy=skip)
    stopped_by: str | None = None  # the stop signal that ended fit early (SIGTERM, SIGUSR1)


class Trainer:
    """Fit a model: `Trainer(model, optimizer, loss_fn, max_epochs=3).fit(train, val)`.

    `schedule` is a `Schedule`, or a torch scheduler stepped after each epoch (wrap it as
    `Schedule(scheduler, interval="step")` to step it after each optimizer step).
    `metrics=None` reports the loss only. `seed` fixes the order of a shuffling DataLoader
    by (seed, epoch) (see `IterableBatches`).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        max_epochs: int,
        schedule: Schedule | LRScheduler | ReduceLROnPlateau | None = None,
        metrics: TaskMetrics | None = None,
        callbacks: Sequence[Callback] = (),
        logger: Any = None,
        log_every_n_steps: int = 1,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        l1: float = 0.0,
        nan_policy: str = "stop",
        max_skipped_steps: int = 10,
        detect_anomaly: bool = False,
        precision: str = "32",
        compile_model: bool = False,
        channels_last: bool = False,
        config: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.max_epochs = max_epochs
        if schedule is not None and not isinstance(schedule, Schedule):
            schedule = Schedule(schedule)
        self.schedule = schedule
        self.metrics = metrics
        self.callbacks = list(callbacks)
        self.logger = logger
        self.log_every_n_steps = log_every_n_steps
        self.accumulate = accumulate_grad_batches
        self.clip_value, self.clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self.l1 = l1
        # Listed once: walking the module tree for them every step costs more than it seems.
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        # L1 acts on weights (matrices, kernels, embeddings), not on biases or norm scales.
        self.penalised = [p for p in self.trainable if p.ndim > 1] if l1 else []
        self.nan_policy, self.max_skipped_steps = nan_policy, max_skipped_steps
        self.detect_anomaly = detect_anomaly
        # Mixed precision: forward and loss run under autocast (bfloat16 or float16);
        # float16 also scales the loss (`scaler`), bfloat16 has float32's range and need not.
        device = optimizer.param_groups[0]["params"][0].device  # where training runs
        self.device, self.seed = device, seed
        self.precision = str(precision)
        self.autocast = autocast(self.precision, device)
        self.scaler = grad_scaler(self.precision, device)
        # Channels-last: NHWC weights and batches (batches drawn by index come back NCHW).
        self.memory_format = torch.channels_last if channels_last else None
        if channels_last:
            model.to(memory_format=torch.channels_last)  # in place: the optimizer keeps its tensors
        # Several processes: training runs through DistributedDataParallel, which averages
        # the gradients over the processes during backward (`ddp`; None for one process).
        # A model sharded with FSDP (`distributed.shard_model`) syncs its own gradients.
        self.world_size = distributed.world_size()
        self._stop_vote: distributed.Vote | None = None  # the last step's, still running
        self.sharded = distributed.is_sharded(model)
        parallel = self.world_size > 1 and not self.sharded
        self.ddp = distributed.data_parallel(model) if parallel else None
        # Training calls `train_forward`; `model` is what evaluation runs and checkpoints save.
        trained = self.ddp if self.ddp is not None else model
        self.train_forward = CompiledOrEager(trained) if compile_model else trained
        self.config = config or {}
        self.state = TrainState()
        self.start_epoch = 0  # the epoch fit begins with; restore() moves it
        self.train_batches: Batches | IterableBatches | None = None  # what fit draws from
        self.example_input: torch.Tensor | None = None  # a small batch, for the model graph
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None  # of the last test()
        self._epoch_loss: torch.Tensor | None = None  # summed over the epoch's trained batches
        self._epoch_batches = 0
        # (step, epoch, [loss, gradient norm]) of steps not yet read back to the host
        self._pending: list[tuple[int, int, torch.Tensor]] = []
        self._last_finite: tuple[int, float] | None = None  # (step, loss)
        # event -> the callbacks' methods that do something for it (see `_emit`)
        self._handlers: dict[str, list[Callable[..., None]]] = {}
        self._handlers_for: list[Callback] = []

    @staticmethod
    def steps_per_epoch(batches: int, accumulate: int) -> int:
        return math.ceil(batches / accumulate)

    @property
    def batches_per_epoch(self) -> int | None:
        """Batches in a training epoch; None until an unsized loader's first epoch ends."""
        return None if self.train_batches is None else self.train_batches.num_batches

    # ---------------------------------------------------------------------------- fit
    def fit(self, train: BatchSource, val: BatchSource | None = None) -> TrainState:
        """Train until `max_epochs` (or a callback stops it), validating on `val` after
        each epoch; batches are moved to the model's device."""
        train = self.train_batches = as_batches(train, self.device, self.seed)
        val = None if val is None else as_batches(val, self.device, self.seed)
        state = self.state
        self.example_input, _ = train.example(2)
        device = train.device
        self._emit("on_fit_start")
        for epoch in range(self.start_epoch, self.max_epochs):
            if state.should_stop:
                break
            state.epoch = epoch
            if state.batch_in_epoch == 0:  # a new epoch (a resumed run may re-enter one)
                self._epoch_loss, self._epoch_batches = torch.zeros((), device=device), 0
            self._emit("on_epoch_start")
            self.model.train()
            step_loss, step_batches = None, 0
            for inputs, targets in train.epoch(epoch, start=state.batch_in_epoch):
                # Accumulating: the gradients are synced over the processes only on the
                # step's last batch (the others skip DDP's all-reduce, FSDP's reduce-scatter).
                if self.world_size > 1 and not self._steps_after(state.batch_in_epoch + 1):
                    synced = self.ddp if self.ddp is not None else self.model
                    with distributed.gradients_kept_local(synced):
                        loss = self._forward_backward(inputs, targets)
                else:
                    loss = self._forward_backward(inputs, targets)
                step_loss = loss if step_loss is None else step_loss + loss
                step_batches += 1
                state.batch_in_epoch += 1
                # Step every `accumulate` batches, and on the epoch's last batch (a loader
                # without a length has counted its batches by the time it yields the last).
                if not self._steps_after(state.batch_in_epoch):
                    continue
                if self._optimizer_step(step_loss / self.accumulate):
                    self._epoch_loss += step_loss
                    self._epoch_batches += step_batches
                state.global_step += 1
                step_loss, step_batches = None, 0
                self._emit("on_train_step_end")
                if self._stop_voted():  # every process stops at the same step
                    return self._stop_for_signal()
            if self._stop_vote is not None and self._stop_vote.result():  # the last step's
                return self._stop_for_signal()
            self._stop_vote = None
            self.check_finite()  # nothing validates or saves weights gone non-finite

            # Over every process's batches (one all-reduce an epoch).
            loss_sum, batches = distributed.reduce(
                torch.stack([self._epoch_loss, torch.tensor(float(self._epoch_batches))])
            ).tolist()
            mean_loss = loss_sum / max(batches, 1)
            state.metrics = {"train/loss": mean_loss}
            if val is not None:
                state.metrics.update(self.evaluate(val, "val"))
            # Epoch-level values share the step axis with train/loss (x: optimizer steps). The
            # epoch goes under train/: TensorBoard opens the first two tag groups in sorted
            # order, and a group of its own ("epoch") would be one of them.
            self._log(
                state.metrics | {"train/epoch": epoch},
                step=state.global_step,
                skip=("train/loss",),
            )
            if self.schedule is not None and self.schedule.interval == "epoch":
                self.schedule.step(state.metrics)
            self._emit("on_validation_end")
            if self.logger is not None:  # the epoch's logs, written between epochs
                self.logger.flush()
            state.batch_in_epoch = 0
            self._emit("on_epoch_end")
            if self._stop_requested():
                return self._stop_for_signal()
        self._emit("on_fit_end")
        if self.logger is not None:
            self.logger.flush()
        return state

    def _steps_after(self, batches_done: int) -> bool:
        """Whether the optimizer steps once `batches_done` batches of the epoch are trained:
        every `accumulate` batches, and after the epoch's last (a loader without a length
        has counted its batches by the time it yields the last; until then, False)."""
        return batches_done % self.accumulate == 0 or batches_done == self.batches_per_epoch

    def _stop_voted(self) -> bool:
        """After a step: whether to stop now. With several processes each votes on whether
        a stop signal arrived; the vote of one step is read after the next (the small
        all-reduce runs beside that step's work), so all stop at the same step, one step
        after the signal."""
        if self.world_size == 1:
            return preemption.requested() is not None
        previous, self._stop_vote = (
            self._stop_vote,
            distributed.Vote(preemption.requested() is not None),
        )
        if previous is not None and previous.result():
            self._stop_vote.result()  # every process started it: finish it before the save
            return True
        return False

    def _stop_requested(self) -> bool:
        """A stop signal arrived, at this process or (agreed by one small all-reduce a
        step) at any other: all stop at the same step."""
        if self.world_size == 1:
            return preemption.requested() is not None
        return distributed.any_process(preemption.requested() is not None)

    def _forward_backward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.memory_format is not None:
            inputs = inputs.contiguous(memory_format=self.memory_format)
        with torch.autograd.set_detect_anomaly(True) if self.detect_anomaly else nullcontext():
            with self.autocast:  # forward and loss; backward runs in the dtypes they chose
                loss = self.loss_fn(self.train_forward(inputs), targets)
            total = loss
            if self.l1:
                total = total + self.l1 * sum(p.abs().sum() for p in self.penalised)
            if self.accumulate > 1:  # accumulated gradients average over the step's batches
                total = total / self.accumulate
            if self.scaler is not None:  # float16: lift small gradients above underflow
                total = self.scaler.scale(total)
            total.backward()
        return loss.detach()

    def is_last_step_of_epoch(self) -> bool:
        total = self.batches_per_epoch
        return total is not None and self.state.batch_in_epoch >= total

    def _optimizer_step(self, loss: torch.Tensor) -> bool:
        """Clip, check and step; False if the step was skipped (nan_policy=skip)."""
        if self.scaler is not None:
            # Unscale before clipping: clipping and the NaN guard must see true gradients.
            self.scaler.unscale_(self.optimizer)
        grad_norm = self._clip_gradients()
        watched = [loss, grad_norm.float()]
        if self.scaler is not None:
            # The scale of this step: the guard tells a float16 overflow from divergence by
            # it (read as a tensor: get_scale() would wait for the device).
            watched.append(self.scaler._get_scale_async())
        step = self.state.global_step + 1
        self._pending.append((step, self.state.epoch, torch.stack(watched)))
        # `skip` must know before stepping, so it reads each step back (a device sync);
        # `stop` reads back in blocks and reports the first bad step of the block.
        stepped = True
        if self.nan_policy == "skip":
            stepped = self._read_back()
        elif len(self._pending) >= LOSS_READBACK_STEPS:
            self._read_back()
        if stepped:
            self._emit("on_before_optimizer_step")
            self.state.last_lr = current_lr(self.optimizer)
            if self.scaler is None:
                self.optimizer.step()
            else:
                self.scaler.step(self.optimizer)  # no update if a gradient is inf or NaN
        if self.scaler is not None:
            self.scaler.update()  # halve the scale after an overflow; grow it when none come
        self.optimizer.zero_grad(set_to_none=True)
        # A skipped step still advances the schedule, which keeps its planned length.
        if self.schedule is not None and self.schedule.interval == "step":
            self.schedule.step(self.state.metrics)
        return stepped

    def _clip_gradients(self) -> torch.Tensor:
        """Clip if asked; return the total gradient norm before clipping (inf or nan if
        any gradient is)."""
        parameters = [p for p in self.trainable if p.grad is not None]
        if self.clip_value is not None and self.clip_algorithm == "norm":
            return distributed.whole(nn.utils.clip_grad_norm_(parameters, self.clip_value))
        if self.sharded:  # each process holds a shard of each gradient
            norm = distributed.whole(nn.utils.get_total_norm([p.grad for p in parameters]))
        else:
            norm = total_norm([p.grad for p in parameters])
        if self.clip_value is not None:
            nn.utils.clip_grad_value_(parameters, self.clip_value)
        return norm

    # ---------------------------------------------------------------------- evaluate
    def test(self, batches: BatchSource) -> dict[str, float]:
        """Evaluate on the test split, keep its outputs for callbacks, emit `on_test_end`."""
        values = self.evaluate(batches, "test", keep_outputs=True)
        self._emit("on_test_end")
        return values

    @torch.inference_mode()
    def evaluate(
        self, batches: BatchSource, prefix: str = "val", keep_outputs: bool = False
    ) -> dict[str, float]:
        """Mean loss and every metric over `batches`, as `{prefix}/{name}` floats."""
        batches = as_batches(batches, self.device, self.seed)
        was_training = self.model.training
        self.model.eval()
        total_loss = torch.zeros((), device=batches.device)
        count = 0
        if self.metrics is not None:
            self.metrics.reset()
        kept, forwards = [], 0
        for inputs, targets in batches:
            forwards += 1
            if self.memory_format is not None:
                inputs = inputs.contiguous(memory_format=self.memory_format)
            with self.autocast:
                outputs = self.model(inputs)
                loss = self.loss_fn(outputs, targets)
            outputs = outputs.float()  # metrics and kept outputs in float32 (no copy if so)
            total_loss += loss * len(targets)
            count += len(targets)
            if self.metrics is not None:
                self.metrics.update(outputs, targets)
            if keep_outputs:
                kept.append((outputs, targets))
        if self.sharded:  # a sharded forward pass gathers weights with every other process
            empty = batches.example(1)[0][:0]
            for _ in range(int(distributed.reduce(torch.tensor(forwards), "max")) - forwards):
                self.model(empty)
        if keep_outputs:  # the whole split's, in row order (each process evaluated a part)
            outputs, targets = (torch.cat([o for o, _ in kept]), torch.cat([t for _, t in kept]))
            self.outputs = (distributed.gather_rows(outputs), distributed.gather_rows(targets))
        # Summed over the processes' parts; torchmetrics syncs its own states in compute().
        total_loss, count = distributed.reduce(
            torch.stack([total_loss.float(), torch.tensor(float(count), device=total_loss.device)])
        )
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

        Buffered logs are written first, so the event files hold every step up to this
        one, and the weights are checked: a checkpoint never holds non-finite weights.
        """
        self.check_finite()
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
        if self.sharded:  # whole, on the main process: loadable without FSDP (predict)
            model_state, optimizer_state = distributed.full_state(self.model, self.optimizer)
        else:
            model_state, optimizer_state = self.model.state_dict(), self.optimizer.state_dict()
        return {
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": self.schedule.scheduler.state_dict() if self.schedule else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "position": {"epoch": epoch, "batch_in_epoch": batch, "global_step": state.global_step},
            "loop": {
                # So that the mean train/loss of an epoch resumed part-way is exact.
                "epoch_loss_sum": None if self._epoch_loss is None else self._epoch_loss.clone(),
                "epoch_batches": self._epoch_batches,
                "should_stop": state.should_stop,
                "skipped_steps": state.skipped_steps,
            },
            "metrics": dict(state.metrics),
            "callbacks": {key: cb.state_dict() for key, cb in self._keyed_callbacks().items()},
            "rng": rng_state(),
            # Every process's generators, by rank (gathered: all processes call this).
            "rng_by_rank": distributed.gather_objects(rng_state()),
            "world_size": self.world_size,
            "config": self.config,
        }

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue the run `payload` (a `checkpoint()`) was taken from."""
        saved_world = payload.get("world_size", 1)
        if saved_world != self.world_size:
            raise ConfigError(
                f"the checkpoint was written by a run on {saved_world} process(es) and this "
                f"one has {self.world_size}: resume with {saved_world} (torchrun "
                f"--nproc_per_node / trainer.devices), or start a new run (drop resume=)"
            )
        if self.sharded:
            distributed.load_full_state(self.model, payload, self.optimizer)
        else:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        if self.schedule is not None and payload["scheduler"] is not None:
            self.schedule.scheduler.load_state_dict(payload["scheduler"])
        # A run resumed with another precision starts its scaler afresh (or drops it).
        if self.scaler is not None and payload.get("scaler") is not None:
            self.scaler.load_state_dict(payload["scaler"])
        saved_states = payload["callbacks"]
        for key, callback in self._keyed_callbacks().items():
            # Checkpoints written before `state_key` keyed callbacks by class name.
            saved = saved_states.get(key, saved_states.get(type(callback).__name__))
            if saved is not None:
                callback.load_state_dict(saved)
        state, position, loop = self.state, payload["position"], payload["loop"]
        self.start_epoch = position["epoch"]
        state.batch_in_epoch = position["batch_in_epoch"]
        # At an epoch boundary, the epoch "just finished" is the one before.
        state.epoch = self.start_epoch if state.batch_in_epoch else max(self.start_epoch - 1, 0)
        state.global_step = position["global_step"]
        state.metrics = dict(payload["metrics"])
        state.should_stop, state.skipped_steps = loop["should_stop"], loop["skipped_steps"]
        self._epoch_loss, self._epoch_batches = loop["epoch_loss_sum"], loop["epoch_batches"]
        # Last: nothing may draw random numbers between here and the first batch.
        by_rank = payload.get("rng_by_rank")
        set_rng_state(by_rank[distributed.rank()] if by_rank else payload["rng"])

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Load a checkpoint's model weights (whole, also into a sharded model)."""
        if self.sharded:
            distributed.load_full_state(self.model, {"model": state})
        else:
            self.model.load_state_dict(state)

    def _keyed_callbacks(self) -> dict[str, Callback]:
        """The callbacks by `state_key`; two with one key would overwrite each other's state."""
        keyed: dict[str, Callback] = {}
        for callback in self.callbacks:
            if (key := callback.state_key) in keyed:
                raise ConfigError(
                    f"two callbacks have the state key {key}, so a checkpoint cannot keep "
                    "both states: give them different arguments (e.g. monitor) or drop one"
                )
            keyed[key] = callback
        return keyed

    def _stop_for_signal(self) -> TrainState:
        """A stop signal arrived: callbacks save the run where it is (`on_interrupt`)."""
        # A process the signal did not reach stops because another's did.
        self.state.stopped_by = preemption.requested() or "SIGTERM"
        self._emit("on_interrupt")
        if self.logger is not None:
            self.logger.flush()
        return self.state

    # -------------------------------------------------------------- the NaN guard
    def check_finite(self) -> None:
        """Read back the pending steps and check the weights: raise if anything diverged."""
        self._read_back()
        step = self.state.global_step
        tensors = chain(self.model.parameters(), self.model.buffers())
        floats = [distributed.local_part(t) for t in tensors if t.is_floating_point()]
        # A norm is finite exactly when the values are (summed in float64, no finite
        # float32 value overflows it): one pass over the weights, no tensor-by-tensor test.
        norms = torch._foreach_norm(floats, dtype=torch.float64) if floats else []
        finite = not norms or bool(torch.stack(norms).isfinite().all())
        if self.sharded:  # each process checked its shards
            finite = not distributed.any_process(not finite)
        if not finite:
            raise DivergenceError(
                self._diverged(f"the weights are no longer finite after step {step}")
            )

    def _read_back(self) -> bool:
        """Copy the pending steps' (loss, gradient norm[, loss scale]) to the host in one
        transfer, log the losses, and check each step: the first non-finite one raises
        DivergenceError (nan_policy=stop, or skip past max_skipped_steps) or is counted as
        skipped (skip; returns False).

        With float16 loss scaling, a non-finite gradient norm is normal: the scaler skips
        that update itself and halves the scale. It counts as divergence only once the
        scale is below MIN_LOSS_SCALE, where the gradients overflow even unscaled.
        """
        if not self._pending:
            return True
        # Averaged over the processes: train/loss is the whole batch's, and every process
        # sees the same values, so all take the same decision (a NaN on one is on all).
        values = distributed.reduce(torch.stack([v for _, _, v in self._pending]), "mean")
        values = values.tolist()
        steps = [(step, epoch) for step, epoch, _ in self._pending]
        self._pending = []
        losses, loss_steps, all_finite = [], [], True
        for (step, epoch), (loss, grad_norm, *scale) in zip(steps, values, strict=True):
            overflow = bool(scale) and scale[0] >= MIN_LOSS_SCALE  # the scaler's to handle
            if math.isfinite(loss) and (math.isfinite(grad_norm) or overflow):
                self._last_finite = (step, loss)
                if step % self.log_every_n_steps == 0:
                    losses.append(loss)
                    loss_steps.append(step)
                continue
            what = "loss" if not math.isfinite(loss) else "gradient norm"
            value = loss if what == "loss" else grad_norm
            bad = f"the {what} is {value} at step {step} (epoch {epoch + 1})"
            if what == "gradient norm" and scale:
                bad += f" with the float16 loss scale down to {scale[0]:g}"
            if self.nan_policy == "stop" or self.state.skipped_steps >= self.max_skipped_steps:
                self._log_losses(losses, loss_steps)  # what came before it
                if self.nan_policy == "skip":
                    bad += (
                        f", after {self.state.skipped_steps} skipped steps "
                        f"(trainer.max_skipped_steps={self.max_skipped_steps})"
                    )
                raise DivergenceError(self._diverged(bad))
            self.state.skipped_steps += 1
            self._log({"train/skipped_steps": self.state.skipped_steps}, step)
            all_finite = False
        self._log_losses(losses, loss_steps)
        return all_finite

    def _diverged(self, what: str) -> str:
        last = (
            f"last finite loss {self._last_finite[1]:.4g} at step {self._last_finite[0]}"
            if self._last_finite
            else "no finite loss before it"
        )
        clip = (
            f"lower trainer.gradient_clip_val (now {self.clip_value:g})"
            if self.clip_value
            else "clip gradients with trainer.gradient_clip_val=1.0"
        )
        fixes = [f"Lower optim.lr (now {current_lr(self.optimizer):g})", clip]
        if self.precision == "16-mixed":
            fixes.append("train with trainer.precision=bf16-mixed (float32's range)")
        skip = "; trainer.nan_policy=skip skips such steps" if self.nan_policy == "stop" else ""
        return f"training diverged: {what}; {last}. {', '.join(fixes[:-1])} or {fixes[-1]}{skip}"

    # ---------------------------------------------------------------------- helpers
    def _emit(self, event: str) -> None:
        if self._handlers_for != self.callbacks:  # callbacks added since the last event
            self._handlers, self._handlers_for = {}, list(self.callbacks)
        handlers = self._handlers.get(event)
        if handlers is None:  # only the callbacks that do something: events fire every step
            handlers = self._handlers[event] = [
                getattr(callback, event)
                for callback in self.callbacks
                if getattr(type(callback), event, None) is not getattr(Callback, event)
            ]
        for handler in handlers:
            handler(self, self.state)

    def _log_losses(self, values: list[float], steps: list[int]) -> None:
        if values and self.logger is not None:
            self.logger.log_scalar_series("train/loss", values, steps)

    def _log(self, values: dict[str, float], step: int, skip: Sequence[str] = ()) -> None:
        if self.logger is not None:
            self.logger.log_scalars({k: v for k, v in values.items() if k not in skip}, step)


def total_norm(gradients: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all `gradients` together, inf or nan if any of them is.

    `torch.nn.utils.get_total_norm` computes the same; it first sorts the tensors by device
    and dtype in Python, which costs more than the norms themselves for a small model.
    The gradients of a trainlab model share one device, so one fused pass does it.
    """
    if not gradients:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gradients)))
