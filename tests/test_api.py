"""The Python API: `Trainer.fit` takes a DataLoader or a list of batches."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from trainlab.components.metrics import TaskMetrics
from trainlab.engine.batches import IterableBatches, TensorBatches
from trainlab.engine.trainer import Trainer
from trainlab.errors import TrainlabError


def digits(rows: int = 1797) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits in a fixed shuffled order (the file's order groups writers)."""
    inputs, targets = load_digits(return_X_y=True)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0))[:rows]
    return torch.tensor(inputs / 16.0, dtype=torch.float32)[order], torch.tensor(targets)[order]


def mlp_trainer(init_seed: int = 0, **options) -> Trainer:
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return Trainer(model, optimizer, nn.CrossEntropyLoss(), **{"max_epochs": 2} | options)


def weights(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


class Rows(IterableDataset):
    """A stream of (input, target) rows with no length, as a reader of a large file is."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __iter__(self):
        return zip(self.inputs, self.targets, strict=True)


# ------------------------------------------------------------------ Trainer.fit inputs
def test_fit_on_a_dataloader_of_digits_reaches_an_accuracy_bar() -> None:
    inputs, targets = digits()
    train = DataLoader(TensorDataset(inputs[:1400], targets[:1400]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(inputs[1400:], targets[1400:]), batch_size=256)
    trainer = mlp_trainer(max_epochs=8, metrics=TaskMetrics("multiclass", 10, torch.device("cpu")))
    state = trainer.fit(train, val)
    assert state.global_step == 8 * math.ceil(1400 / 64)
    assert state.metrics["val/acc"] > 0.93
    assert trainer.test(val)["test/acc"] == pytest.approx(state.metrics["val/acc"])


def test_fit_on_a_list_of_batches_reports_the_loss_only_without_metrics() -> None:
    inputs, targets = digits(640)
    batches = [(inputs[i : i + 64], targets[i : i + 64]) for i in range(0, 512, 64)]
    val = [(inputs[512:], targets[512:])]
    trainer = mlp_trainer(max_epochs=5)
    before = trainer.evaluate(val)["val/loss"]
    state = trainer.fit(batches, val)
    assert set(state.metrics) == {"train/loss", "val/loss"}
    assert state.global_step == 5 * 8
    assert state.metrics["val/loss"] < 0.5 * before


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_dataloader_trains_exactly_as_tensor_batches(shuffle: bool) -> None:
    """Same rows, same seed: the same weights, bit for bit. Shuffled, the DataLoader's
    sampler is reseeded by (seed, epoch) to draw TensorBatches' own order."""
    inputs, targets = digits(500)
    fast = mlp_trainer(init_seed=1, max_epochs=3)
    fast.fit(TensorBatches(inputs, targets, 32, shuffle=shuffle, seed=7), None)
    loader = mlp_trainer(init_seed=1, max_epochs=3, seed=7)
    loader.fit(DataLoader(TensorDataset(inputs, targets), batch_size=32, shuffle=shuffle))
    for a, b in zip(weights(fast), weights(loader), strict=True):
        assert torch.equal(a, b)


def test_an_iterable_dataset_learns_its_length_and_steps_on_the_last_batch() -> None:
    """No len(): the first epoch counts the batches, and the last (partial) accumulation
    step still happens, as with TensorBatches."""
    inputs, targets = digits(500)  # 16 batches of 32 (the last of 20 rows)
    stream = IterableBatches(DataLoader(Rows(inputs, targets), batch_size=32), torch.device("cpu"))
    with pytest.raises(TrainlabError, match="unknown until one epoch has run"):
        len(stream)
    streamed = mlp_trainer(init_seed=2, max_epochs=2, accumulate_grad_batches=3)
    state = streamed.fit(stream)
    assert len(stream) == streamed.batches_per_epoch == 16
    assert state.global_step == 2 * math.ceil(16 / 3)
    sliced = mlp_trainer(init_seed=2, max_epochs=2, accumulate_grad_batches=3)
    sliced.fit(TensorBatches(inputs, targets, 32))
    for a, b in zip(weights(sliced), weights(streamed), strict=True):
        assert torch.equal(a, b)


def test_a_resumed_epoch_of_a_shuffled_dataloader_draws_the_same_batches() -> None:
    inputs = torch.arange(100, dtype=torch.float32).unsqueeze(1)
    loader = DataLoader(TensorDataset(inputs, torch.arange(100)), batch_size=8, shuffle=True)
    batches = IterableBatches(loader, torch.device("cpu"), seed=3)
    torch.manual_seed(0)
    whole = [t.tolist() for _, t in batches.epoch(4)]
    torch.manual_seed(1)  # the global generator plays no part
    rest = [t.tolist() for _, t in batches.epoch(4, start=5)]
    assert rest == whole[5:]
    assert [t.tolist() for _, t in batches.epoch(5)] != whole
    assert sorted(row for batch in whole for row in batch) == list(range(100))


def test_a_torch_scheduler_is_stepped_each_epoch() -> None:
    inputs, targets = digits(128)
    model = nn.Linear(64, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer = Trainer(model, optimizer, nn.CrossEntropyLoss(), max_epochs=3, schedule=scheduler)
    trainer.fit([(inputs, targets)])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 8)
    assert trainer.state.last_lr == pytest.approx(0.1 / 4)  # the last step's


def test_a_one_shot_iterator_is_refused_in_words() -> None:
    inputs, targets = digits(64)
    with pytest.raises(TrainlabError, match=r"one-shot iterator.*pass a list"):
        mlp_trainer().fit(iter([(inputs, targets)]))
