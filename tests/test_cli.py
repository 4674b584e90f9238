"""The commands in the README, run as a user runs them: `python train.py ...`, `trainlab ...`,
`python -m trainlab ...`, from the user's own project folder too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIG_DIR, SMOKE, cli_env, read_metrics, script_cli, train_cli
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from trainlab.app.cli import cli
from trainlab.app.config import register_resolvers, validate
from trainlab.engine.checkpoint import load_checkpoint


def test_default_command_reaches_the_bar_and_fills_the_run_folder(tmp_path) -> None:
    result = train_cli(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = read_metrics(run_dir)
    assert metrics["test"]["test/acc"] >= 0.96
    assert metrics["objective"]["name"] == "val/acc"
    for path in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "train.log",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "metrics.json",
    ):
        assert (run_dir / path).is_file(), path
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    log = (run_dir / "train.log").read_text()
    assert "epoch 1/30" in log and "test: test/loss" in log


def test_grid_sweep_runs_four_jobs_each_with_its_objective(tmp_path) -> None:
    result = train_cli(
        "-m", "optim.lr=1e-3,1e-2", "model.dropout=0,0.3", "trainer.max_epochs=2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        seen.add(tuple(o for o in overrides if not o.startswith("paths.")))
        metrics = read_metrics(job)
        assert 0.5 < metrics["objective"]["value"] <= 1.0
        assert json.loads((job / "metrics.json").read_text())["epochs"] == 2
    assert len(seen) == 4

    # The leaderboard, sorted by the objective, best first.
    board = (sweep_dir / "leaderboard.csv").read_text().splitlines()
    assert board[0].startswith("rank,run,overrides,status,objective,value")
    values = [float(line.split(",")[5]) for line in board[1:]]
    assert len(values) == 4 and values == sorted(values, reverse=True)
    assert (sweep_dir / "leaderboard.md").read_text() in result.stdout

    # TensorBoard's HParams tab: each job's hyperparameters and final metrics.
    for job in jobs:
        events = EventAccumulator(str(job / "tb"))
        events.Reload()
        content = events.PluginTagToContent("hparams")
        start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        params = start.session_start_info.hparams
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        lr = float(next(o for o in overrides if o.startswith("optim.lr=")).split("=")[1])
        assert params["optim.lr"].number_value == pytest.approx(lr)
        assert params["model"].string_value == "mlp" and params["data"].string_value == "digits"
        experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        assert {"val/acc", "test/acc"} <= {m.name.tag for m in experiment.metric_infos}


def test_issue_examples_run(run_experiment) -> None:
    for overrides in (
        ["model=mlp", "optim=adam"],
        ["optim=sgd", "optim.lr=0.05", "optim.momentum=0.9", "sched=cosine"],
        [
            "model.hidden_sizes=[512,256]",
            "model.activation=gelu",
            "model.dropout=0.2",
            "model.batch_norm=true",
            "data.batch_size=128",
        ],
    ):
        objective, _ = run_experiment(*overrides, "trainer.max_epochs=3")
        assert objective > 0.85, overrides


# ------------------------------------------------------------------ the `trainlab` command
TINY_NET = '''
import math

from torch import nn


class TinyNet(nn.Module):
    """A user's own model, with a field of its own (width)."""

    def __init__(self, input_shape, num_outputs, width=16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
            nn.Linear(width, num_outputs),
        )

    def forward(self, x):
        return self.net(x)
'''


def write_user_project(folder: Path) -> Path:
    """A user's project folder: their package `mypkg`, and `conf/` with a model option and
    a primary config of their own that extends trainlab's `train`."""
    (folder / "mypkg").mkdir()
    (folder / "mypkg" / "__init__.py").write_text("")
    (folder / "mypkg" / "models.py").write_text(TINY_NET)
    (folder / "conf" / "model").mkdir(parents=True)
    (folder / "conf" / "model" / "tiny.yaml").write_text(
        "_target_: mypkg.models.TinyNet\nwidth: 24\n"
    )
    (folder / "conf" / "myexp.yaml").write_text(
        "defaults:\n  - train\n  - override model: tiny\n  - _self_\n\n"
        "model:\n  width: 8\noptim:\n  lr: 0.01\nname: myexp\n"
    )
    return folder


@pytest.fixture
def user_project(tmp_path: Path, monkeypatch) -> Path:
    """`write_user_project` in tmp_path, the working folder of the test."""
    write_user_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # cli() puts the cwd on it
    monkeypatch.setattr(sys, "argv", ["trainlab"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # main() sets it; restored after the test
    yield tmp_path
    for name in ("mypkg", "mypkg.models"):
        sys.modules.pop(name, None)


def compose_user_config(conf: Path, name: str, *overrides: str, output_dir: Path) -> DictConfig:
    """The config `trainlab --config-dir conf --config-name NAME OVERRIDES` runs: both
    folders on the search path (Hydra's compose finds the primary config in the first)."""
    register_resolvers()
    first, second = (conf, CONFIG_DIR) if (conf / f"{name}.yaml").is_file() else (CONFIG_DIR, conf)
    searchpath = f"hydra.searchpath=[file://{second}]"
    with initialize_config_dir(config_dir=str(first), version_base="1.3"):
        output = f"paths.output_dir={output_dir}"
        return compose(config_name=name, overrides=[searchpath, *overrides, output])


def test_a_user_model_from_the_config_dir_trains(user_project: Path) -> None:
    from trainlab.app.experiment import run

    sys.path.insert(0, str(user_project))  # as cli() does for the folder it runs in
    run_dir = user_project / "run"
    cfg = compose_user_config(
        user_project / "conf", "train", "model=tiny", *SMOKE, output_dir=run_dir
    )
    assert "model" not in validate(cfg)  # a user's class has no schema: it checks itself
    objective = run(cfg)
    assert read_metrics(run_dir)["objective"]["value"] == objective
    weights = load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"]
    assert weights["net.1.weight"].shape == (24, 64)  # digits: 8x8 pixels in, width 24
    assert weights["net.3.weight"].shape == (10, 24)


def test_a_user_primary_config_extends_train(user_project: Path) -> None:
    conf = user_project / "conf"
    cfg = compose_user_config(conf, "myexp", output_dir="unused")
    assert cfg.model == {"_target_": "mypkg.models.TinyNet", "width": 8}
    assert cfg.optim.lr == 0.01 and cfg.optim._target_ == "torch.optim.Adam"
    assert cfg.name == "myexp" and cfg.trainer.max_epochs == 30  # the rest is train's
    # The command line still has the last word.
    cfg = compose_user_config(conf, "myexp", "optim.lr=0.1", "model=mlp", output_dir="unused")
    assert cfg.optim.lr == 0.1 and cfg.model._target_ == "trainlab.components.models.MLP"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`trainlab ARGV` in this process: (exit status, stdout, stderr)."""
    try:
        cli(list(argv))
        status = 0
    except SystemExit as ex:
        status = ex.code
    out, err = capsys.readouterr()
    return status, out, err


def test_an_unknown_option_of_a_user_group_is_one_line(user_project: Path, capsys) -> None:
    status, _, err = run_cli(capsys, "--config-dir", "conf", "model=tinny")
    assert status == 2
    assert err.splitlines() == [
        "error: unknown option model=tinny (did you mean 'tiny'?); "
        "choose one of: cnn, mlp, rnn, tiny, transformer"
    ]
    status, _, err = run_cli(capsys, "--config-dir", "cnof", "model=tiny")
    assert status == 2
    assert err.splitlines() == [
        "error: --config-dir cnof: no such folder; give the folder that holds your "
        "<group>/<option>.yaml files, absolute or relative to where you run trainlab"
    ]


def test_help_lists_the_groups_and_marks_the_defaults(user_project: Path, capsys) -> None:
    status, out, _ = run_cli(capsys, "--help")
    assert status == 0 and out.startswith("usage: trainlab [group=option ...]")
    assert "  model: cnn mlp* rnn transformer\n" in out
    assert "  debug (optional): anomaly fast overfit\n" in out
    assert "  hydra" not in out  # Hydra's own settings are not an option to pick
    # A --config-dir adds its options; its primary config changes the defaults.
    _, out, _ = run_cli(capsys, "--config-dir", "conf", "--help")
    assert "  model: cnn mlp* rnn tiny transformer\n" in out
    _, out, _ = run_cli(capsys, "-h", "--config-dir=conf", "--config-name", "myexp")
    assert "  model: cnn mlp rnn tiny* transformer\n" in out


def test_predict_help_is_the_predict_modules_own(capsys) -> None:
    from trainlab.app import predict

    status, out, _ = run_cli(capsys, "predict", "--help")
    assert status == 0
    assert out == f"{predict.__doc__.strip()}\n\n{predict.USAGE}\n"


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_user_project_runs_with_the_real_command(user_project: Path) -> None:
    """From the user's folder: their package imports with no PYTHONPATH of theirs."""
    result = script_cli(
        "train.py",
        "--config-dir",
        "conf",
        "--config-name",
        "myexp",
        "debug=fast",
        cwd=user_project,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (user_project / "outputs" / "runs").iterdir()
    assert run_dir.name.endswith("_myexp")
    assert read_metrics(run_dir)["epochs"] == 1
    weights = load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"]
    assert weights["net.1.weight"].shape == (8, 64)


def test_python_m_trainlab_help_imports_neither_torch_nor_hydra(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trainlab", "--help"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: trainlab")
    imported = {
        line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if "|" in line
    }
    assert "trainlab.app.help" in imported
    assert "torch" not in imported and "hydra" not in imported  # it reads the YAML files


def test_a_config_error_in_an_empty_folder_leaves_it_empty(tmp_path: Path) -> None:
    result = script_cli("train.py", "optim.lr=fast", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: optim.lr='fast' has the wrong type: expected a number"
    ]
    assert list(tmp_path.iterdir()) == []
