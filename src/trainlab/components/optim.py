"""Optimizers and learning-rate schedules from their configs."""

from __future__ import annotations

import inspect

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)

from trainlab.engine.schedule import Schedule

# Keys of a schedule config that tell the trainer how to drive it, not the scheduler itself.
DRIVER_KEYS = ("interval", "monitor")


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """`cfg` is a partial optimizer (`_partial_: true`); the model supplies the parameters.

    With `decay_bias_and_norm: false`, weight decay applies to weight matrices, kernels
    and embeddings only; biases and normalisation scales (1-d parameters) get none.
    """
    options = OmegaConf.to_container(cfg, resolve=True)
    decay_all = options.pop("decay_bias_and_norm", True)
    factory = instantiate(options)
    if decay_all or not options.get("weight_decay"):
        return factory(model.parameters())
    parameters = list(model.parameters())
    return factory(
        [
            {"params": [p for p in parameters if p.ndim > 1]},
            {"params": [p for p in parameters if p.ndim <= 1], "weight_decay": 0.0},
        ]
    )


def build_schedule(
    cfg: DictConfig | None,
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    max_epochs: int,
) -> Schedule | None:
    """Build the schedule `cfg` names; None for a constant learning rate.

    Schedules that need the length of training (cosine, one-cycle) get `total_steps`
    and `steps_per_epoch` when their signature asks for them.
    """
    if cfg is None or cfg.get("_target_") is None:
        return None
    options = OmegaConf.to_container(cfg, resolve=True)
    interval = options.pop("interval", "epoch")
    monitor = options.pop("monitor", None)
    if monitor is not None and "mode" not in options:
        options["mode"] = "min"
    factory = instantiate(options)
    total_steps = steps_per_epoch * max_epochs if interval == "step" else max_epochs
    known = {"total_steps": total_steps, "steps_per_epoch": steps_per_epoch}
    accepted = inspect.signature(factory.func).parameters
    extra = {name: value for name, value in known.items() if name in accepted}
    return Schedule(factory(optimizer, **extra), interval=interval, monitor=monitor)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    eta_min: float = 0.0,
) -> LRScheduler:
    """Linear warmup over `warmup_epochs`, then cosine decay to `eta_min` at `total_steps`."""
    warmup_steps = min(round(warmup_epochs * steps_per_epoch), total_steps - 1)
    cosine = CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup_steps, 1), eta_min=eta_min)
    if warmup_steps <= 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1.0 / (warmup_steps + 1), total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])

