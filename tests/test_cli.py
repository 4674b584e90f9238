"""The commands in the README, run as a user runs them: `python train.py ...`."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import read_metrics, train_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData


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
