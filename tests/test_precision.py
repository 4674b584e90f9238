"""Speed settings: mixed precision (bf16-mixed, 16-mixed with loss scaling and the NaN
guard), torch.compile and its fallback, channels-last, cudnn.benchmark; all on CPU.

The CUDA branches (16-mixed through the command line, channels_last=auto and
cudnn_benchmark=auto turning on) are tested at the end, on a machine with a CUDA GPU.
"""

from __future__ import annotations

import copy
import logging
import subprocess

import pytest
import torch
from conftest import (
    SMOKE,
    cli_env,
    compose_config,
    read_metrics,
    train_command,
    train_in_process,
)
from torch import nn

from trainlab.app.config import validate
from trainlab.app.experiment import build, run
from trainlab.components.data import load_digits
from trainlab.components.models import CNN, MLP
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.engine.trainer import Trainer
from trainlab.errors import ConfigError, DivergenceError

CNN_SMALL = ("model=cnn", "model.channels=[8,16]")


# ------------------------------------------------------------------- config and refusal
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.precision=64", "trainer.precision='64' must be one of: 32, bf16-mixed, 16-mixed"),
        ("trainer.precision=bf16", "older name of trainer.precision=bf16-mixed: use that"),
        ("trainer.precision=16", "older name of trainer.precision=16-mixed: use that"),
        ("trainer.compile=maybe", "trainer.compile='maybe' has the wrong type"),
        ("trainer.channels_last=yes", "trainer.channels_last='yes' must be one of: auto, true"),
        ("trainer.cudnn_benchmark=fast", "trainer.cudnn_benchmark='fast' must be one of: auto"),
    ],
)
def test_bad_speed_settings_are_refused_in_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(compose_config(override))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", ["32", "'32'", "bf16-mixed", "16-mixed"])
def test_precision_takes_lightnings_names(value: str) -> None:
    checked = validate(compose_config(f"trainer.precision={value}"))
    assert checked["trainer"].precision == value.strip("'")


def test_16_mixed_on_cpu_is_refused_in_one_line_before_any_work(tmp_path) -> None:
    result = train_in_process("trainer.precision=16-mixed", "trainer.device=cpu", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: trainer.precision=16-mixed needs a CUDA GPU"), line
    assert "use trainer.precision=bf16-mixed or trainer.precision=32" in line
    assert "Traceback" not in result.stdout + result.stderr
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


# ---------------------------------------------------------------------------- bfloat16
def test_bf16_mixed_trains_the_default_mlp_to_the_bar(run_experiment) -> None:
    _, full_dir = run_experiment("trainer.max_epochs=5")
    _, bf16_dir = run_experiment("trainer.max_epochs=5", "trainer.precision=bf16-mixed")
    full, bf16 = read_metrics(full_dir), read_metrics(bf16_dir)
    assert bf16["test"]["test/acc"] >= 0.9
    # Autocast really ran: bfloat16 rounding changes the losses a little, not the outcome.
    assert bf16["val"]["val/loss"] != full["val"]["val/loss"]
    assert bf16["val"]["val/loss"] == pytest.approx(full["val"]["val/loss"], rel=0.1)
    for run_dir in (full_dir, bf16_dir):
        last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        assert "scaler" in last and last["scaler"] is None  # no loss scaling without float16
        assert all(t.dtype == torch.float32 for t in last["model"].values())  # fp32 weights
    assert last["config"]["trainer"]["precision"] == "bf16-mixed"


def test_resuming_with_another_precision_is_allowed_and_reported(tmp_path, caplog) -> None:
    run(compose_config("trainer.max_epochs=1", output_dir=tmp_path))
    (tmp_path / "metrics.json").unlink()  # as if stopped after its first epoch
    cfg = compose_config(
        "trainer.max_epochs=2",
        "trainer.precision=bf16-mixed",
        f"resume={tmp_path}",
        output_dir=tmp_path,
    )
    with caplog.at_level(logging.WARNING, logger="trainlab"):
        run(cfg)
    (changed,) = [r.message for r in caplog.records if "settings changed" in r.message]
    assert "trainer.precision (32 in the checkpoint, 'bf16-mixed' now)" in changed
    assert read_metrics(tmp_path)["epochs"] == 2


# ------------------------------------------------ float16 with loss scaling, NaN guard
# The command line refuses 16-mixed on CPU (slow); the Trainer itself trains it wherever
# torch can, so its loss scaling and NaN guard are tested here on CPU with real float16
# autocast and a real GradScaler("cpu").
DIGITS = load_digits(seed=0, val_fraction=0.15, test_fraction=0.15, scaling="standard")


def fp16_trainer(loss_fn: nn.Module, max_epochs: int, precision: str = "16-mixed") -> Trainer:
    torch.manual_seed(0)
    model = MLP(DIGITS.info.input_shape, 10, hidden_sizes=[64])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return Trainer(model, optimizer, loss_fn, max_epochs=max_epochs, precision=precision)


@torch.no_grad()
def accuracy(model: nn.Module) -> float:
    predicted = model(DIGITS.val.inputs).argmax(dim=1)
    return (predicted == DIGITS.val.targets).float().mean().item()


class SqrtAtZero(nn.Module):
    """Cross-entropy plus a distance that is 0 with a NaN gradient (sqrt at 0 times 0),
    a classic bug: the loss stays finite, every gradient is NaN."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        distance = ((outputs - outputs) ** 2).sum().sqrt()
        return nn.functional.cross_entropy(outputs, targets) + distance


def test_float16_overflow_steps_are_skipped_by_the_scaler_not_the_nan_guard() -> None:
    # A summed loss has large gradients: at the initial scale 2**16 they overflow float16,
    # the scaler skips those steps and halves the scale until they fit.
    trainer = fp16_trainer(nn.CrossEntropyLoss(reduction="sum"), max_epochs=3)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    state = trainer.fit(DIGITS.train_batches(0), DIGITS.eval_batches("val"))  # no raise
    assert 1.0 <= trainer.scaler.get_scale() < 2.0**16  # it overflowed, then fit
    assert state.skipped_steps == 0  # the guard counted none of them
    # It trains as float32 does (same seed and batches).
    full = fp16_trainer(nn.CrossEntropyLoss(reduction="sum"), max_epochs=3, precision="32")
    full.fit(DIGITS.train_batches(0), DIGITS.eval_batches("val"))
    assert accuracy(trainer.model) == pytest.approx(accuracy(full.model), abs=0.03)
    assert accuracy(trainer.model) > 0.75
    saved = trainer.checkpoint()["scaler"]
    assert saved["scale"] == trainer.scaler.get_scale() and "_growth_tracker" in saved


def test_float16_gradients_non_finite_at_any_scale_end_the_run() -> None:
    trainer = fp16_trainer(SqrtAtZero(), max_epochs=2)
    with pytest.raises(DivergenceError) as caught:
        trainer.fit(DIGITS.train_batches(0), DIGITS.eval_batches("val"))
    # Steps 1-17 overflow at scales 2**16 ... 1, which the scaler handles; step 18, at
    # scale 0.5, is no overflow any scale can fix.
    message = str(caught.value)
    assert "the gradient norm is nan at step 18 (epoch 1) with the float16 loss scale" in message
    assert "loss scale down to 0.5; last finite loss" in message
    assert message.endswith(
        "or train with trainer.precision=bf16-mixed (float32's range); "
        "trainer.nan_policy=skip skips such steps"
    )
    assert all(p.isfinite().all() for p in trainer.model.parameters())  # never updated


def test_float16_non_finite_loss_is_still_caught() -> None:
    class NaNFromStep(nn.CrossEntropyLoss):
        calls = 0

        def forward(self, outputs, targets):
            self.calls += 1
            return super().forward(outputs, targets) * (float("nan") if self.calls >= 5 else 1)

    trainer = fp16_trainer(NaNFromStep(), max_epochs=1)
    with pytest.raises(DivergenceError, match=r"the loss is nan at step 5 \(epoch 1\)"):
        trainer.fit(DIGITS.train_batches(0), DIGITS.eval_batches("val"))


def test_float16_resume_continues_the_scaler_exactly(tmp_path) -> None:
    loss = nn.CrossEntropyLoss(reduction="sum")
    reference = fp16_trainer(loss, max_epochs=2)
    reference.fit(DIGITS.train_batches(0), DIGITS.eval_batches("val"))

    first = fp16_trainer(loss, max_epochs=1)
    first.fit(DIGITS.train_batches(0), DIGITS.eval_batches("val"))
    saved = first.checkpoint()
    torch.save(saved, tmp_path / "last.pt")
    assert saved["scaler"]["scale"] < 2.0**16  # the scale moved: restoring it matters
    resumed = fp16_trainer(loss, max_epochs=2)
    resumed.restore(torch.load(tmp_path / "last.pt", weights_only=True))
    resumed.fit(DIGITS.train_batches(0), DIGITS.eval_batches("val"))

    assert resumed.scaler.state_dict() == reference.scaler.state_dict()
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    assert resumed.state.metrics == reference.state.metrics


# ------------------------------------------------------------------------ channels-last
def second_conv(model: nn.Module) -> nn.Conv2d:
    """A convolution with several input channels (the digits have one)."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)][1]


def test_channels_last_gives_the_same_predictions_on_cpu() -> None:
    torch.manual_seed(0)
    model = CNN(DIGITS.info.input_shape, 10, channels=[8, 16]).eval()
    images = DIGITS.test.inputs
    plain = Trainer(model, torch.optim.SGD(model.parameters()), nn.CrossEntropyLoss(), max_epochs=1)
    expected = model(images)
    nhwc_model = copy.deepcopy(model)
    nhwc = Trainer(
        nhwc_model,
        torch.optim.SGD(nhwc_model.parameters()),
        nn.CrossEntropyLoss(),
        max_epochs=1,
        channels_last=True,
    )
    weight = second_conv(nhwc_model).weight  # (16, 8, 3, 3): its layouts differ
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    assert torch.allclose(nhwc_model(images), expected, atol=1e-5)
    batches = DIGITS.eval_batches("test")
    assert nhwc.evaluate(batches, "test") == pytest.approx(plain.evaluate(batches, "test"))


def test_channels_last_true_trains_like_false_and_auto_is_off_on_cpu(
    run_experiment, tmp_path
) -> None:
    options = (*CNN_SMALL, "trainer.max_epochs=2", "callbacks.figures=null", "trainer.device=cpu")
    _, off_dir = run_experiment(*options, "trainer.channels_last=false")
    _, on_dir = run_experiment(*options, "trainer.channels_last=true")
    off, on = read_metrics(off_dir), read_metrics(on_dir)
    for split in ("val", "test"):
        assert on[split] == pytest.approx(off[split], rel=1e-3, abs=2e-3), split
    # The checkpoint holds the same keys and shapes (a layout is not a different model).
    off_model = load_checkpoint(off_dir / "checkpoints" / "last.pt")["model"]
    on_model = load_checkpoint(on_dir / "checkpoints" / "last.pt")["model"]
    assert {k: v.shape for k, v in on_model.items()} == {k: v.shape for k, v in off_model.items()}

    # auto on CPU: no change (the device is pinned, so this holds on a GPU machine too)
    exp = build(compose_config(*CNN_SMALL, "trainer.device=cpu", output_dir=tmp_path))
    assert exp.trainer.memory_format is None
    assert second_conv(exp.trainer.model).weight.is_contiguous()
    assert torch.backends.cudnn.benchmark is False  # cudnn_benchmark=auto: CUDA only


def test_channels_last_true_on_feature_data_is_refused(tmp_path) -> None:
    cfg = compose_config("data=breast_cancer", "trainer.channels_last=true", output_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"channels_last=true needs image data .* is features;"):
        build(cfg)


def test_cudnn_benchmark_true_is_set(tmp_path) -> None:
    build(compose_config("trainer.cudnn_benchmark=true", output_dir=tmp_path / "on"))
    assert torch.backends.cudnn.benchmark is True
    build(compose_config("trainer.cudnn_benchmark=false", output_dir=tmp_path / "off"))
    assert torch.backends.cudnn.benchmark is False


# ------------------------------------------------------------------------ torch.compile
@pytest.mark.slow  # a whole run compiling, then falling back: long; run with -m slow
def test_compile_without_a_cxx_compiler_falls_back_to_eager_in_one_line(tmp_path) -> None:
    # A machine without a working C++ compiler: inductor's code generation fails at the
    # first training step (a fresh cache, so no kernel compiled earlier is reused).
    env = cli_env() | {
        "CXX": str(tmp_path / "no-such-g++"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor-cache"),
    }
    result = subprocess.run(
        train_command(
            "trainer.compile=true", "trainer.max_epochs=3", "trainer.device=cpu", cwd=tmp_path
        ),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    log = (run_dir / "train.log").read_text()
    (warning,) = [line for line in log.splitlines() if "torch.compile failed" in line]
    assert warning.startswith("trainer.compile=true: torch.compile failed (")
    assert "No working C++ compiler" in warning
    assert warning.endswith("training continues uncompiled (eager)")
    assert read_metrics(run_dir)["test"]["test/acc"] >= 0.9
    keys = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert not any(key.startswith("_orig_mod.") for key in keys)


@pytest.mark.slow  # a cold torch.compile takes ~15-40 s on a CPU
def test_compiled_mlp_trains_like_the_eager_one(run_experiment, caplog) -> None:
    _, eager_dir = run_experiment("trainer.max_epochs=5")
    with caplog.at_level(logging.WARNING, logger="trainlab"):
        _, compiled_dir = run_experiment("trainer.max_epochs=5", "trainer.compile=true")
    assert not [r for r in caplog.records if "torch.compile failed" in r.message]
    eager, compiled = read_metrics(eager_dir), read_metrics(compiled_dir)
    assert compiled["test"]["test/acc"] >= 0.9
    assert compiled["test"]["test/acc"] == pytest.approx(eager["test"]["test/acc"], abs=0.03)
    keys = load_checkpoint(compiled_dir / "checkpoints" / "last.pt")["model"].keys()
    assert keys == load_checkpoint(eager_dir / "checkpoints" / "last.pt")["model"].keys()


def test_every_speed_setting_on_still_runs(run_experiment) -> None:
    _, run_dir = run_experiment(
        *CNN_SMALL, *SMOKE, "trainer.precision=bf16-mixed", "trainer.channels_last=true"
    )
    assert read_metrics(run_dir)["steps"] == 3


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_finders_still_run_with_speed_settings(run_experiment) -> None:
    # The finders train with the model and optimizer directly, in float32 and uncompiled.
    speed = ("trainer.precision=bf16-mixed", "trainer.compile=true")
    _, run_dir = run_experiment("mode=lr_find", "lr_find.num_steps=20", *speed)
    assert (run_dir / "lr_find.json").is_file()
    sizes = "batch_size_find.candidates=[32,64]"
    _, run_dir = run_experiment("mode=batch_size_find", sizes, *speed)
    assert (run_dir / "batch_size_find.json").is_file()


# ------------------------------------------------------------------------- CUDA only
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_16_mixed_on_cuda_trains_the_cnn_and_saves_its_scaler(run_experiment) -> None:
    _, run_dir = run_experiment("model=cnn", "trainer.max_epochs=5", "trainer.precision=16-mixed")
    metrics = read_metrics(run_dir)
    assert metrics["device"].startswith("cuda")
    assert metrics["test"]["test/acc"] >= 0.9
    scaler = load_checkpoint(run_dir / "checkpoints" / "last.pt")["scaler"]
    assert scaler["scale"] >= 1.0 and "_growth_tracker" in scaler


@cuda
def test_auto_turns_channels_last_and_cudnn_benchmark_on_for_a_cnn_on_cuda(tmp_path) -> None:
    exp = build(compose_config("model=cnn", output_dir=tmp_path / "cnn"))
    assert exp.trainer.memory_format is torch.channels_last
    assert second_conv(exp.trainer.model).weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.backends.cudnn.benchmark is True
    exp = build(compose_config("model=mlp", output_dir=tmp_path / "mlp"))
    assert exp.trainer.memory_format is None  # no convolutions
    build(compose_config("trainer.cudnn_benchmark=false", output_dir=tmp_path / "off"))
    assert torch.backends.cudnn.benchmark is False
