"""The NaN guard: a non-finite loss or gradient is caught at the step where it appears;
`stop` ends the run in one line, `skip` skips exactly those steps; no checkpoint ever holds
non-finite weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import compose_config, train_in_process
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from trainlab.app.experiment import run
from trainlab.components.data import TensorBatches
from trainlab.components.models import MLP
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.engine.trainer import Trainer
from trainlab.errors import DivergenceError


def nan_loss_on(*steps: int) -> tuple[str, ...]:
    """A loss that is NaN at these training steps (one batch per step)."""
    return (
        "loss._target_=custom_parts.NaNOnCalls",
        f"+loss.nan_on_calls=[{','.join(map(str, steps))}]",
    )


def all_finite(checkpoint: dict) -> bool:
    tensors = [t for t in checkpoint["model"].values() if t.is_floating_point()]
    return all(bool(t.isfinite().all()) for t in tensors)


def logged(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return (
        [(s.step, s.value) for s in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []
    )


def test_a_huge_learning_rate_stops_the_run_in_one_line(tmp_path) -> None:
    result = train_in_process("optim=sgd", "optim.lr=1e6", "trainer.max_epochs=3", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: training diverged: the "), line
    assert "optim.lr (now 1e+06)" in line and "trainer.gradient_clip_val" in line
    assert "Traceback" not in result.stderr
    step = int(line.split(" at step ")[1].split()[0])
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    losses = logged(run_dir, "train/loss")  # every finite step up to the bad one, no further
    assert [s for s, _ in losses] == list(range(1, step)) and all(
        math.isfinite(v) for _, v in losses
    )
    for checkpoint in (
        (run_dir / "checkpoints").glob("*.pt") if (run_dir / "checkpoints").exists() else []
    ):
        assert all_finite(load_checkpoint(checkpoint)), checkpoint


def test_stop_names_the_first_bad_step_and_no_checkpoint_holds_it(tmp_path) -> None:
    options = (
        *nan_loss_on(30),
        "trainer.max_epochs=3",
        "callbacks.model_checkpoint.every_n_steps=7",
        "callbacks.model_checkpoint.keep_last=100",
    )
    with pytest.raises(DivergenceError) as caught:
        run(compose_config(*options, output_dir=tmp_path))
    message = str(caught.value)
    # Found when read back at the step-35 checkpoint, and reported where it happened.
    assert "the loss is nan at step 30 (epoch 2); last finite loss" in message
    assert " at step 29. Lower optim.lr (now 0.001)" in message
    saved = {p.name: load_checkpoint(p) for p in (tmp_path / "checkpoints").glob("*.pt")}
    assert sorted(saved) == [
        "best.pt",
        "last.pt",
        "step_14.pt",
        "step_21.pt",
        "step_28.pt",
        "step_7.pt",
    ]
    assert saved["last.pt"]["position"]["global_step"] == 28
    assert all(all_finite(checkpoint) for checkpoint in saved.values())
    assert [s for s, _ in logged(tmp_path, "train/loss")] == list(range(1, 30))


def test_skip_skips_exactly_the_bad_steps(tmp_path) -> None:
    options = (*nan_loss_on(3, 7, 25), "trainer.max_epochs=2", "trainer.nan_policy=skip")
    run(compose_config(*options, output_dir=tmp_path))
    assert logged(tmp_path, "train/skipped_steps") == [(3, 1.0), (7, 2.0), (25, 3.0)]
    assert [s for s, _ in logged(tmp_path, "train/loss")] == [
        s for s in range(1, 41) if s not in (3, 7, 25)
    ]
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["loop"]["skipped_steps"] == 3
    adam_steps = {float(s["step"]) for s in last["optimizer"]["state"].values()}
    assert adam_steps == {40.0 - 3}  # the skipped steps did not step the optimizer
    assert all_finite(last)
    assert all(math.isfinite(v) for _, v in logged(tmp_path, "train/loss"))


def test_skip_stops_past_max_skipped_steps(tmp_path) -> None:
    options = (*nan_loss_on(3, 7, 25), "trainer.nan_policy=skip", "trainer.max_skipped_steps=2")
    with pytest.raises(DivergenceError, match=r"the loss is nan at step 25 \(epoch 2\), after 2 "):
        run(compose_config(*options, "trainer.max_epochs=2", output_dir=tmp_path))


def test_non_finite_weights_are_never_validated_or_saved() -> None:
    torch.manual_seed(0)
    inputs, targets = torch.randn(32, 5), torch.randint(0, 3, (32,))
    model = MLP((5,), 3, hidden_sizes=[7])
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), max_epochs=1
    )
    trainer.fit(TensorBatches(inputs, targets, 8), TensorBatches(inputs, targets, 32))
    trainer.checkpoint()  # finite: fine
    with torch.no_grad():
        model.layers[1].weight[0, 0] = float("inf")
    with pytest.raises(DivergenceError, match="the weights are no longer finite after step 4"):
        trainer.checkpoint()


def test_anomaly_preset_names_the_operation(tmp_path) -> None:
    cfg = compose_config(
        "debug=anomaly", *nan_loss_on(2), "trainer.max_epochs=1", output_dir=tmp_path
    )
    assert cfg.trainer.detect_anomaly is True
    with pytest.raises(RuntimeError, match="returned nan values"), pytest.warns(UserWarning):
        run(cfg)
