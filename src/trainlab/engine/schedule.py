"""A learning-rate scheduler plus when the loop steps it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau


@dataclass
class Schedule:
    """A scheduler plus when to step it: after each optimizer step or each epoch."""

    scheduler: LRScheduler | ReduceLROnPlateau
    interval: str = "epoch"
    monitor: str | None = None
    # The `max_epochs` its length was planned for; None when its length does not depend
    # on it. A run resumed with another `max_epochs` plans such a schedule anew.
    planned_epochs: int | None = None

    def step(self, metrics: dict[str, float]) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(metrics[self.monitor or "val/loss"])
        else:
            self.scheduler.step()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
