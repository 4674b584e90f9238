"""Test-only parts that configs load by `_target_` (tests/ is on the path of `train.py`
subprocesses, see `conftest.train_env`), as a user's own classes would be."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from trainlab.components.callbacks import Callback


class NaNOnCalls(nn.CrossEntropyLoss):
    """Cross-entropy that returns NaN on the given training calls (1-based; evaluation
    calls, made without gradients, are not counted): with one batch per optimizer step,
    call N is step N."""

    def __init__(self, nan_on_calls: Sequence[int] = (), **options) -> None:
        super().__init__(**options)
        self.nan_on_calls = set(nan_on_calls)
        self.calls = 0

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = super().forward(outputs, targets)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls in self.nan_on_calls:
                return loss * float("nan")
        return loss


class Slowdown(Callback):
    """Sleeps after each optimizer step, so a test can stop a run at a step of its choice.
    Draws no random numbers and changes nothing: a run with it trains as one without."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_train_step_end(self, trainer, state) -> None:
        time.sleep(self.seconds)


class KeepsDataInfo(Callback):
    """Takes `data_info`, as a user's callback may; keeps what it was given where a test
    can look (`KeepsDataInfo.given`)."""

    given: list = []

    def __init__(self, data_info=None, label: str = "") -> None:
        KeepsDataInfo.given.append((label, data_info))
