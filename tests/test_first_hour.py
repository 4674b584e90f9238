"""What a new user sees in their first hour: clean output for every shipped recipe, a model
graph in TensorBoard for each, the tag groups TensorBoard opens first, and the HParams tab.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from pathlib import Path

import pytest
from conftest import CONFIG_DIR, train_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

import trainlab
from trainlab.components.metrics import metric_names

RECIPES = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))
# Recipes that need a file of the user's: the `table_csv` fixture writes one.
NEEDS_TABLE = {"csv_mlp": ["data.target=label"]}
NOISE = re.compile(r"Traceback|Error|Warning")


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tb"), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


# debug=fast, for runs that take another debug option.
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.limit_eval_batches=2"]


def run_quietly(overrides: list[str], run_dir: Path, capfd, caplog) -> tuple[str, Path]:
    """Run in-process (debug=fast unless another debug option is given); return everything
    printed, logged or warned, and the run folder."""
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("default")  # what a user's `python train.py` shows
        fast = FAST if any(o.startswith("debug=") for o in overrides) else ["debug=fast"]
        result = trainlab.run(trainlab.compose([*overrides, *fast]), output_dir=run_dir)
    out, err = capfd.readouterr()
    shown = [str(w.message) for w in warned if not issubclass(w.category, DeprecationWarning)]
    text = "\n".join([out, err, caplog.text, (run_dir / "train.log").read_text(), *shown])
    return text, result.run_dir


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_runs_clean_with_a_graph(recipe, tmp_path, capfd, caplog, request) -> None:
    overrides = [f"experiment={recipe}"]
    if recipe in NEEDS_TABLE:
        overrides += [f"data.path={request.getfixturevalue('table_csv')}", *NEEDS_TABLE[recipe]]
    text, run_dir = run_quietly(overrides, tmp_path / "run", capfd, caplog)
    assert "objective" in text  # the run did print its lines
    assert not NOISE.findall(text), text
    assert events(run_dir).Tags()["graph"], f"{recipe}: no model graph in TensorBoard"


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=transformer"],  # digits as patches
        ["model=cnn", "model.batch_norm=true"],
        ["data=text_demo", "model=transformer", "model.pooling=cls"],
        ["data=text_demo", "model=rnn", "model.bidirectional=true"],
        ["data=diabetes", "loss=mse"],
    ],
)
def test_shipped_models_on_other_data_run_clean(overrides, tmp_path, capfd, caplog) -> None:
    text, run_dir = run_quietly(overrides, tmp_path / "run", capfd, caplog)
    assert not NOISE.findall(text), text
    assert events(run_dir).Tags()["graph"]


@pytest.mark.slow  # the in-process recipe tests above check the same words
def test_the_command_prints_no_trace_for_a_transformer(tmp_path) -> None:
    """What a user's terminal shows: the real command, in its own process."""
    proc = train_cli("experiment=text_transformer", "debug=fast", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not NOISE.findall(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert not NOISE.findall((run_dir / "train.log").read_text())
    assert events(run_dir).Tags()["graph"]


def tag_groups(tags: list[str]) -> list[str]:
    """TensorBoard's tag groups in the order it shows them: the first "/" component of each
    tag, sorted (its Time Series and Scalars dashboards open the first two)."""

    def natural(tag: str) -> list[tuple[int, str | int]]:
        return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", tag) if p]

    return list(dict.fromkeys(tag.split("/", 1)[0] for tag in sorted(tags, key=natural)))


@functools.cache
def shown_tags(run_dir: Path) -> list[str]:
    tags = events(run_dir).Tags()
    return [*tags["scalars"], *tags["images"], *tags["histograms"]]


def test_tensorboard_opens_train_and_test_first(tmp_path, capfd, caplog) -> None:
    _, run_dir = run_quietly([], tmp_path / "train", capfd, caplog)
    scalars = set(events(run_dir).Tags()["scalars"])
    # DESIGN.md's names, on one step axis; the epoch number is a train/ series, no group.
    assert scalars == {*metric_names("multiclass"), "train/lr", "train/epoch"}
    _, finder_dir = run_quietly(["mode=lr_find"], tmp_path / "finder", capfd, caplog)
    finder = events(finder_dir).Tags()
    assert set(finder["scalars"]) == {"zz_lr_find/loss", "zz_lr_find/lr"}
    assert finder["images"] == ["zz_lr_find/curve"]
    # One logdir holding both runs: the groups opened first are the training run's.
    groups = tag_groups(shown_tags(run_dir) + shown_tags(finder_dir))
    assert groups == ["test", "train", "val", "zz_lr_find"]
    assert set(groups[:2]) <= {"train", "val", "test"}


def hparams_data(run_dir: Path) -> tuple[api_pb2.Experiment, dict]:
    content = events(run_dir).PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    return experiment, dict(start.session_start_info.hparams)


@pytest.mark.parametrize(
    ("overrides", "task"),
    [
        (["data=diabetes", "loss=mse"], "regression"),
        (["data=breast_cancer", "model.batch_norm=true"], "binary"),
        (["model=cnn"], "multiclass"),
    ],
)
def test_hparams_types_and_metric_columns(overrides, task, tmp_path, capfd, caplog) -> None:
    _, run_dir = run_quietly(overrides, tmp_path / "run", capfd, caplog)
    experiment, values = hparams_data(run_dir)
    # Every val/ and test/ metric of the task is a column, the objective first.
    metrics = [m.name.tag for m in experiment.metric_infos]
    expected = {name for name in metric_names(task) if not name.startswith("train/")}
    assert set(metrics) == expected
    assert metrics[0] == ("val/r2" if task == "regression" else "val/acc")
    # A reasonable number, the essentials first; each value of its own type.
    names = [info.name for info in experiment.hparam_infos]
    assert names[:3] == ["data", "model", "optim"] and "optim.lr" in names
    assert len(names) <= 25
    assert not [name for name in names if name.startswith("data.") and name != "data.batch_size"]
    types = {info.name: info.type for info in experiment.hparam_infos}
    assert types["optim.lr"] == api_pb2.DATA_TYPE_FLOAT64
    assert values["optim.lr"].number_value == pytest.approx(1e-3)
    assert types["seed"] == api_pb2.DATA_TYPE_FLOAT64 and values["seed"].number_value == 42
    if overrides[0] == "model=cnn":
        assert values["model.channels"].string_value == "[32, 64]"
    else:
        assert types["model.batch_norm"] == api_pb2.DATA_TYPE_BOOL
        assert values["model.batch_norm"].bool_value is ("model.batch_norm=true" in overrides)
        assert values["model.activation"].string_value == "relu"


def test_anomaly_detection_says_it_is_on(tmp_path, capfd, caplog) -> None:
    text, _ = run_quietly(["debug=anomaly", "logger=none"], tmp_path / "run", capfd, caplog)
    lines = (tmp_path / "run" / "train.log").read_text().splitlines()
    assert sum(line.startswith("autograd anomaly detection on: slower; ") for line in lines) == 1
    assert not NOISE.findall(text), text
