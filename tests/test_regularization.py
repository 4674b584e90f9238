"""Regularization and gradient handling: L1, weight decay groups, clipping, accumulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_config
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from trainlab.components.data import TensorBatches
from trainlab.components.losses import class_weights
from trainlab.components.models import MLP
from trainlab.components.optim import build_optimizer
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.engine.trainer import Trainer


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("none", {"optim.weight_decay": 0.0, "loss.l1": 0.0, "model.dropout": 0.0}),
        ("l1", {"loss.l1": 1e-4}),
        ("l2", {"optim.weight_decay": 1e-3, "optim.decay_bias_and_norm": False}),
        ("dropout", {"model.dropout": 0.3}),
        ("strong", {"optim.weight_decay": 5e-3, "loss.l1": 1e-5, "model.dropout": 0.5}),
    ],
)
def test_presets_set_their_fields(preset: str, expected: dict) -> None:
    cfg = compose_config(f"regularization={preset}")
    for key, value in expected.items():
        group, name = key.split(".")
        assert cfg[group][name] == value, key


def test_l1_penalty_shrinks_the_weights(run_experiment) -> None:
    def weight_l1(*overrides: str) -> float:
        _, run_dir = run_experiment("trainer.max_epochs=3", *overrides)
        weights = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
        return sum(w.abs().sum().item() for k, w in weights.items() if k.endswith("weight"))

    assert weight_l1("loss.l1=1e-3") < 0.7 * weight_l1("loss.l1=0")


def test_weight_decay_can_spare_biases_and_norms() -> None:
    model = MLP((8,), 3, hidden_sizes=[16], batch_norm=True)
    cfg = compose_config("optim=adamw", "optim.decay_bias_and_norm=false")
    groups = build_optimizer(cfg.optim, model).param_groups
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert all(p.ndim > 1 for p in groups[0]["params"])
    assert sorted(p.ndim for p in groups[1]["params"]) == [1, 1, 1]  # norm weight, bias, head bias
    everything = build_optimizer(compose_config("optim=adamw").optim, model).param_groups
    assert len(everything) == 1 and everything[0]["weight_decay"] == 0.01


def one_epoch(batch_size: int, **trainer_options) -> tuple[dict, dict]:
    """Weights before and after one SGD epoch (lr=1) on fixed random data."""
    torch.manual_seed(0)
    inputs, targets = torch.randn(64, 5), torch.randint(0, 3, (64,))
    model = MLP((5,), 3, hidden_sizes=[7])
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = Trainer(model, optimizer, nn.CrossEntropyLoss(), max_epochs=1, **trainer_options)
    trainer.fit(TensorBatches(inputs, targets, batch_size), TensorBatches(inputs, targets, 64))
    return initial, {k: v.clone() for k, v in model.state_dict().items()}


def test_accumulating_two_half_batches_equals_one_full_batch() -> None:
    _, full = one_epoch(64)
    _, accumulated = one_epoch(32, accumulate_grad_batches=2)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], rtol=1e-5, atol=1e-6)
    _, two_steps = one_epoch(32)
    assert not torch.allclose(two_steps["layers.1.weight"], full["layers.1.weight"])


@pytest.mark.parametrize(("algorithm", "limit"), [("norm", 1e-3), ("value", 1e-4)])
def test_gradient_clipping(algorithm: str, limit: float) -> None:
    initial, final = one_epoch(64, gradient_clip_val=limit, gradient_clip_algorithm=algorithm)
    step = torch.cat([(final[k] - initial[k]).flatten() for k in initial])  # SGD lr=1: -grad
    size = step.norm() if algorithm == "norm" else step.abs().max()
    assert size.item() == pytest.approx(limit, rel=1e-3)
    _, unclipped = one_epoch(64)
    assert torch.cat([(unclipped[k] - initial[k]).flatten() for k in initial]).norm() > 10 * limit


def test_balanced_class_weights_match_scikit_learn() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 5)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    ours = class_weights("balanced", torch.as_tensor(labels), 3)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6)
    assert class_weights(None, torch.as_tensor(labels), 3) is None
