"""Learning-rate schedules follow their definitions over a whole run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config

from trainlab.components.optim import build_schedule


def lrs(sched: str, *overrides: str, steps_per_epoch: int = 10, epochs: int = 5) -> list[float]:
    cfg = compose_config(f"sched={sched}", *overrides)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = build_schedule(
        cfg.sched, optimizer, steps_per_epoch=steps_per_epoch, max_epochs=epochs
    )
    seen = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if schedule.interval == "step":
                schedule.step({})
        if schedule.interval == "epoch":
            schedule.step({"val/loss": 1.0})
    return seen


def test_cosine_decays_to_eta_min_after_warmup() -> None:
    seen = lrs("cosine", "sched.warmup_epochs=1", "sched.eta_min=0.001")
    assert seen[0] < seen[5] < seen[9] <= 0.1  # warming up over the first epoch
    assert max(seen) == pytest.approx(0.1)
    assert seen[-1] == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi * 39 / 40)) / 2)


def test_step_exponential_onecycle_plateau() -> None:
    step = lrs("step", "sched.step_size=2", "sched.gamma=0.5")
    assert step[::10] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    expo = lrs("exponential", "sched.gamma=0.9")
    assert expo[::10] == pytest.approx([0.1 * 0.9**e for e in range(5)])
    cycle = lrs("onecycle", "sched.max_lr=0.2")
    assert max(cycle) == pytest.approx(0.2, rel=1e-3) and cycle[0] == pytest.approx(0.2 / 25)
    plateau = lrs("plateau", "sched.patience=1", "sched.factor=0.5")  # the loss never improves
    assert plateau[::10] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])
