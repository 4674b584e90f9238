"""Bad configs are refused before any work, in one line naming the key and what is allowed."""

from __future__ import annotations

import pytest
from conftest import compose_config, train_cli

from trainlab.app.config import validate
from trainlab.errors import ConfigError

BAD_VALUES = [
    ("optim.lr=-1", "optim.lr=-1.0 is out of range: it must be > 0"),
    ("optim.lr=abc", "optim.lr='abc' has the wrong type: expected a number"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is out of range: it must be >= 1"),
    ("trainer.max_epochs=1.5", "trainer.max_epochs=1.5 has the wrong type"),
    ("model.dropout=1.5", "model.dropout=1.5 is out of range: it must be < 1"),
    ("model.activation=swish", "choose one of: relu, gelu, tanh, sigmoid, leaky_relu"),
    ("model.hidden_sizes=[0,3]", "model.hidden_sizes=[0, 3] must be a list of positive integers"),
    (
        "model.hidden_sizes=[true]",
        "model.hidden_sizes=[True] has the wrong type: it must be a list of positive integers",
    ),
    (
        "trainer.limit_train_batches=some",
        "trainer.limit_train_batches='some' has the wrong type: expected an integer (or null)",
    ),
    ("optim.betas=[a,b]", "optim.betas=['a', 'b'] has the wrong type: it must be two numbers"),
    ("data.batch_size=0", "data.batch_size=0 must be a positive integer or 'full'"),
    ("data.batch_size=big", "data.batch_size='big' must be a positive integer or 'full'"),
    ("data.val_fraction=0.8", "data.val_fraction + data.test_fraction = 0.95 leaves too little"),
    ("data.scaling=robust", "choose one of: standard, minmax, none"),
    ("trainer.device=gpu", "trainer.device='gpu' must be one of: auto, cpu, cuda, cuda:N, mps"),
    ("seed=-3", "seed=-3 must be an integer in [0, 2**32) or null"),
    ("objective=val/accuracy", "objective='val/accuracy' is not a logged metric"),
    ("callbacks.early_stopping.monitor=val/lss", "did you mean 'val/loss'?"),
    ("callbacks.early_stopping.mode=maxx", "(did you mean 'max'?); choose one of: auto, min, max"),
    ("callbacks.early_stopping.patience=-1", "patience=-1 is out of range: it must be >= 0"),
    (
        "+optim.foo=1",
        "unknown config key 'optim.foo'; 'optim' takes: decay_bias_and_norm, lr, betas, eps",
    ),
    ("optim.betas=[0.9]", "optim.betas=[0.9] must be two numbers in [0, 1)"),
    ("loss.label_smoothing=2", "loss.label_smoothing=2.0 is out of range: it must be <= 1"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES)
def test_bad_value_is_refused_with_its_key(override: str, message: str) -> None:
    cfg = compose_config(override)
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim=sgd", "optim.nesterov=true"], "optim.nesterov=true needs optim.momentum > 0"),
        (["sched=step", "sched.step_size=0"], "sched.step_size=0 is out of range"),
        (["sched=plateau", "sched.monitor=val/acc", "sched.mode=up"], "sched.mode='up'"),
        (["data=synthetic", "data.n_informative=50"], "n_informative=50 exceeds"),
    ],
)
def test_cross_field_and_group_checks(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(compose_config(*overrides))


def test_validate_hands_over_the_checked_settings_with_defaults_filled_in() -> None:
    from omegaconf import open_dict

    from trainlab.engine.schemas import TrainerSchema

    cfg = compose_config("optim=sgd", "trainer.max_epochs=3")
    with open_dict(cfg):  # a config that leaves keys out gets the schemas' defaults
        del cfg.trainer.precision, cfg.trainer.nan_policy, cfg.optim.momentum
    settings = validate(cfg)
    assert isinstance(settings["trainer"], TrainerSchema)
    assert settings["trainer"].max_epochs == 3
    assert (settings["trainer"].precision, settings["trainer"].nan_policy) == ("32", "stop")
    assert (settings["optim"].lr, settings["optim"].momentum) == (0.05, 0.0)
    assert settings["model"].dropout == 0.1  # configs/model/mlp.yaml's choice
    assert settings["callbacks.early_stopping"].patience == 10
    assert settings["data"].augment.shift == 0


def test_build_runs_on_the_checked_trainer_settings(tmp_path) -> None:
    """A trainer node without most keys builds with the schema's defaults."""
    from omegaconf import open_dict

    from trainlab.app.experiment import build

    cfg = compose_config("trainer.device=cpu", "logger=none", output_dir=tmp_path)
    with open_dict(cfg):
        for key in ("precision", "nan_policy", "loader", "num_threads", "keep_freed_memory"):
            del cfg.trainer[key]
    trainer = build(cfg).trainer
    assert (trainer.precision, trainer.nan_policy, trainer.max_epochs) == ("32", "stop", 30)


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_every_shipped_option_validates() -> None:
    from test_configs import COMPANIONS, options

    for group, option in options():
        validate(compose_config(f"{group}={option}", *COMPANIONS.get((group, option), [])))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["optim.lr=-1"],
            "error: optim.lr=-1.0 is out of range: it must be > 0, e.g. optim.lr=0.001",
        ),
        (["optim.lrr=0.1"], "error: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        (
            ["model=foo"],
            "error: unknown option model=foo; choose one of: cnn, mlp, rnn, transformer "
            "(e.g. model=cnn)",
        ),
        (["modle=mlp"], "error: unknown config key 'modle' (did you mean"),
        (["optim.lr=0.1=2"], "error: cannot parse the override"),
        (
            ["trainer.device=cuda:7"],
            "error: trainer.device=cuda:7 but this machine has no CUDA GPU",
        ),
    ],
)
def test_cli_reports_one_line_and_leaves_no_run_folder(tmp_path, args, message) -> None:
    result = train_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_full_error_env_shows_the_traceback(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "optim.lr=-1", f"paths.root_dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr
