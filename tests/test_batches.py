"""Batches: every row once per epoch, an order fixed by (seed, epoch), exact mid-epoch restart."""

from __future__ import annotations

import torch

from trainlab.components.data import TensorBatches


def rows(batches: TensorBatches, epoch: int, start: int = 0) -> list[list[int]]:
    return [inputs[:, 0].long().tolist() for inputs, _ in batches.epoch(epoch, start)]


def make(size: int = 103, **kwargs) -> TensorBatches:
    inputs = torch.arange(size, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    return TensorBatches(inputs, torch.arange(size), kwargs.pop("batch_size", 10), **kwargs)


def test_each_row_once_per_epoch_and_targets_follow_inputs() -> None:
    batches = make(shuffle=True, seed=3)
    assert len(batches) == 11
    seen = [r for batch in rows(batches, 0) for r in batch]
    assert sorted(seen) == list(range(103))
    for inputs, targets in batches.epoch(1):
        assert torch.equal(inputs[:, 0].long(), targets)


def test_order_depends_on_seed_and_epoch_only() -> None:
    first, second = make(shuffle=True, seed=3), make(shuffle=True, seed=3)
    torch.manual_seed(123)  # the global RNG must not matter
    assert rows(first, 2) == rows(second, 2)
    assert rows(first, 2) != rows(first, 3)
    assert rows(first, 2) != rows(make(shuffle=True, seed=4), 2)


def test_restart_mid_epoch_yields_the_remaining_batches() -> None:
    batches = make(shuffle=True, seed=7)
    assert rows(batches, 5, start=4) == rows(batches, 5)[4:]


def test_drop_last_full_batch_limit_and_no_shuffle() -> None:
    assert len(make(drop_last=True)) == 10
    assert len(make(batch_size=1000)) == 1  # full batch
    assert len(make(limit=3)) == 3
    assert rows(make(), 0)[0] == list(range(10))
