"""Callback state is keyed per instance (`Callback.state_key`): two callbacks of one class
keep their own state across a resume; two with the same key are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from trainlab.components.callbacks import EarlyStopping, ModelCheckpoint
from trainlab.components.data import TensorBatches
from trainlab.components.metrics import TaskMetrics
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.engine.trainer import Trainer
from trainlab.errors import ConfigError


def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """Three overlapping Gaussian classes in 4 dimensions: accuracy and loss keep moving."""
    generator = torch.Generator().manual_seed(3)
    targets = torch.arange(96) % 3
    inputs = torch.randn(96, 4, generator=generator) * 1.5 + targets[:, None].float()
    return inputs, targets


def two_checkpoints_trainer(folder: Path, max_epochs: int) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    callbacks = [
        ModelCheckpoint(folder / "by_loss", monitor="val/loss"),
        ModelCheckpoint(folder / "by_acc", monitor="val/acc"),
    ]
    return Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05),
        nn.CrossEntropyLoss(),
        max_epochs=max_epochs,
        metrics=TaskMetrics("multiclass", 3, torch.device("cpu")),
        callbacks=callbacks,
    )


def fit(trainer: Trainer) -> None:
    inputs, targets = blobs()
    trainer.fit(
        TensorBatches(inputs[:64], targets[:64], 16, shuffle=True, seed=1),
        TensorBatches(inputs[64:], targets[64:], 32),
    )


def bests(trainer: Trainer) -> list[tuple[float | None, int | None]]:
    return [(cb.best, cb.best_epoch) for cb in trainer.callbacks]


def test_two_model_checkpoints_keep_their_own_best_across_a_resume(tmp_path) -> None:
    uninterrupted = two_checkpoints_trainer(tmp_path / "whole", max_epochs=8)
    fit(uninterrupted)
    by_loss, by_acc = bests(uninterrupted)
    assert by_loss[0] < 1.2 and 0.3 < by_acc[0] <= 1.0  # a loss and an accuracy

    stopped = two_checkpoints_trainer(tmp_path / "parts", max_epochs=4)
    fit(stopped)
    payload = load_checkpoint(tmp_path / "parts" / "by_loss" / "last.pt")
    assert sorted(payload["callbacks"]) == [
        "ModelCheckpoint{'monitor': 'val/acc', 'mode': 'max', 'every_n_epochs': 1, "
        "'every_n_steps': None}",
        "ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min', 'every_n_epochs': 1, "
        "'every_n_steps': None}",
    ]
    resumed = two_checkpoints_trainer(tmp_path / "parts", max_epochs=8)
    resumed.restore(payload)
    assert bests(resumed) == bests(stopped)  # each its own, not the other's
    fit(resumed)
    assert bests(resumed) == [by_loss, by_acc]
    assert by_loss[0] != by_acc[0]


def test_two_callbacks_with_one_state_key_are_refused(tmp_path) -> None:
    model = nn.Linear(4, 3)
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        max_epochs=1,
        callbacks=[EarlyStopping(monitor="val/loss"), EarlyStopping(monitor="val/loss")],
    )
    with pytest.raises(ConfigError) as caught:
        trainer.checkpoint()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("two callbacks have the state key EarlyStopping{'monitor': ")
    assert "give them different arguments" in message


def test_a_checkpoint_keyed_by_class_name_still_loads(tmp_path) -> None:
    # Checkpoints written before `state_key` keyed each callback by its class name.
    trainer = two_checkpoints_trainer(tmp_path, max_epochs=1)
    payload = trainer.checkpoint()
    payload["callbacks"] = {"ModelCheckpoint": {"best": 0.25, "best_epoch": 3}}
    trainer.restore(payload)
    assert bests(trainer) == [(0.25, 3), (0.25, 3)]
