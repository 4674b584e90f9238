"""LR and batch-size finders: they measure, suggest, and leave the model as it was."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from conftest import compose_config, read_metrics

from trainlab.app.experiment import build
from trainlab.app.finders import find_batch_size, find_lr, scaled_lr


def snapshot(exp):
    return (
        {k: v.clone() for k, v in exp.trainer.model.state_dict().items()},
        str(exp.trainer.optimizer.state_dict()),
    )


def test_lr_finder_restores_the_model_and_stops_on_divergence(tmp_path) -> None:
    exp = build(compose_config("optim=sgd", output_dir=tmp_path))
    before = snapshot(exp)
    result = find_lr(exp, min_lr=1e-5, max_lr=1e4, num_steps=200)
    after = snapshot(exp)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1] == after[1]
    assert result.diverged and len(result.lrs) < 200  # 1e4 is far past any usable rate
    assert 1e-5 <= result.suggestion <= result.lrs[-1]
    # The ramp is exponential: equal ratios between consecutive rates.
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)


def test_lr_find_mode_suggests_a_rate_that_trains(run_experiment, caplog) -> None:
    with caplog.at_level(logging.INFO):
        _, run_dir = run_experiment("mode=lr_find", "optim=sgd")
    found = json.loads((run_dir / "lr_find.json").read_text())
    assert (run_dir / "lr_find.png").stat().st_size > 1000
    lr = found["suggested_lr"]
    assert f"next run: python train.py optim.lr={lr:.3g}" in caplog.text
    assert not (run_dir / "checkpoints").exists()  # nothing was trained

    _, next_dir = run_experiment("optim=sgd", f"optim.lr={lr:.3g}", "trainer.max_epochs=8")
    assert read_metrics(next_dir)["test"]["test/acc"] > 0.9


def test_batch_size_finder_on_cpu(tmp_path) -> None:
    # Pinned: on CUDA the finder picks the largest batch that fits, not the fastest.
    exp = build(compose_config("trainer.device=cpu", output_dir=tmp_path))
    before = snapshot(exp)
    best, throughput = find_batch_size(exp, [16, 64, 256, 100_000], steps=2)
    after = snapshot(exp)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert set(throughput) == {16, 64, 256}  # larger than the training split: skipped
    assert best in throughput and throughput[best] == max(throughput.values())


def test_lr_scaling_rules() -> None:
    assert scaled_lr(0.1, 64, 256, "linear") == pytest.approx(0.4)
    assert scaled_lr(0.1, 64, 256, "sqrt") == pytest.approx(0.2)
    assert scaled_lr(0.1, 64, 256, "none") == 0.1
    assert math.isclose(scaled_lr(0.1, 256, 64, "linear"), 0.025)
