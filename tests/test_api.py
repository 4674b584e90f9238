"""The Python API: `import trainlab` stays light, `Trainer.fit` takes a DataLoader or a list
of batches, and `trainlab.run(trainlab.compose(...))` is the command's own run."""

from __future__ import annotations

import json
import logging
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIG_DIR, cli_env, train_cli
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import trainlab
from trainlab import IterableBatches, TaskMetrics, TensorBatches, Trainer, TrainlabError


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


# ------------------------------------------------------------------------- the package
def test_import_trainlab_imports_no_torch_until_a_class_is_used() -> None:
    code = (
        "import sys, trainlab\n"
        "assert 'torch' not in sys.modules, 'import trainlab'\n"
        "trainlab.compose, trainlab.ConfigError\n"
        "assert 'torch' not in sys.modules, 'trainlab.compose'\n"
        "assert set(trainlab.__all__) <= set(dir(trainlab))\n"
        "trainlab.Trainer\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_every_public_name_resolves() -> None:
    for name in trainlab.__all__:
        assert getattr(trainlab, name) is not None
    from trainlab.components.callbacks import EarlyStopping

    assert trainlab.EarlyStopping is EarlyStopping
    with pytest.raises(AttributeError, match="no attribute 'Trainr'"):
        trainlab.Trainr  # noqa: B018


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


def test_the_progress_bar_counts_batches_of_a_stream_of_unknown_length(capfd) -> None:
    """A loader with no len() gets a batch count in its first epoch, a bar once it is known."""
    from trainlab import ProgressDisplay

    inputs, targets = digits(200)  # 100 batches of 2
    stream = IterableBatches(DataLoader(Rows(inputs, targets), batch_size=2), torch.device("cpu"))
    trainer = mlp_trainer(max_epochs=2, callbacks=[ProgressDisplay(bar=True)])
    state = trainer.fit(stream)
    assert state.global_step == 200
    shown = capfd.readouterr().err
    assert "epoch 1/2 batch 50" in shown
    assert f"epoch 2/2 [{'#' * 12}{'.' * 12}] 50/100" in shown


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


# ------------------------------------------------------------- a whole experiment
@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_run_from_python_equals_the_command_line(tmp_path: Path) -> None:
    """The same config through `trainlab.run` and through `python train.py`: the same
    metrics.json values. The call leaves the process's handlers and levels as they were."""
    overrides = ["debug=fast", "seed=3"]
    handlers = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGTERM", "SIGUSR1")}
    root = logging.getLogger()
    root_state = (root.level, list(root.handlers), logging.getLogger("trainlab").level)
    threads = torch.get_num_threads()

    result = trainlab.run(trainlab.compose(overrides), output_dir=tmp_path / "python")

    assert {n: signal.getsignal(getattr(signal, n)) for n in handlers} == handlers
    assert (root.level, list(root.handlers), logging.getLogger("trainlab").level) == root_state
    assert torch.get_num_threads() == threads
    done = train_cli(*overrides, "hydra.run.dir=command", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from_python = json.loads((tmp_path / "python" / "metrics.json").read_text())
    from_command = json.loads((tmp_path / "command" / "metrics.json").read_text())
    for key in ("objective", "val", "test", "epochs", "steps", "seed"):
        assert from_python[key] == from_command[key], key
    assert result.objective == from_python["objective"]["value"]
    assert result.test == from_python["test"] and result.run_dir == tmp_path / "python"
    assert result.best_checkpoint.is_file()
    assert "objective val/acc" in (tmp_path / "python" / "train.log").read_text()
    assert (tmp_path / "python" / "tb").is_dir()


def test_run_makes_a_new_folder_and_never_writes_into_another_run(tmp_path: Path) -> None:
    cfg = trainlab.compose(["debug=fast", f"paths.root_dir={tmp_path}", "name=try"])
    first = trainlab.run(cfg)
    second = trainlab.run(cfg)
    assert first.run_dir.parent == second.run_dir.parent == tmp_path / "runs"
    assert first.run_dir.name.endswith("_try") and first.run_dir != second.run_dir
    caller_paths = OmegaConf.to_container(cfg.paths)  # the caller's config is left as it was
    assert caller_paths["output_dir"] == "${hydra:runtime.output_dir}"
    with pytest.raises(TrainlabError, match="already holds a run"):
        trainlab.run(cfg, output_dir=first.run_dir)
    with pytest.raises(trainlab.ConfigError, match="resume=auto from Python needs output_dir"):
        trainlab.run(trainlab.compose(["resume=auto"]))
    bad = trainlab.compose(["model=cnn", "data=synthetic"])
    with pytest.raises(trainlab.ConfigError, match="CNN cannot take features data"):
        trainlab.run(bad, output_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # a failed run leaves no folder behind


def test_compose_adds_a_users_config_folder(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tiny.yaml").write_text("_target_: mypkg.models.TinyNet\nwidth: 8\n")
    (tmp_path / "mine.yaml").write_text("defaults:\n  - train\n  - _self_\nseed: 5\n")
    cfg = trainlab.compose(["model=tiny"], config_dir=tmp_path)
    assert cfg.model._target_ == "mypkg.models.TinyNet" and cfg.optim.lr == 1e-3
    mine = trainlab.compose(["trainer.max_epochs=2"], config_name="mine", config_dir=tmp_path)
    assert mine.seed == 5 and mine.trainer.max_epochs == 2 and mine.data.batch_size > 0
    with pytest.raises(trainlab.ConfigError, match="no such folder"):
        trainlab.compose(config_dir=tmp_path / "missing")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):  # a caller's
        assert trainlab.compose(["seed=1"]).seed == 1
        assert hydra_compose("train", ["seed=2"]).seed == 2  # the caller's Hydra is still there


def test_run_resumes_a_run_in_its_own_folder(tmp_path: Path) -> None:
    """`resume=FOLDER` from Python continues that run where its last.pt left it."""
    overrides = ["debug=fast", "trainer.max_epochs=2"]
    first = trainlab.run(trainlab.compose(overrides), output_dir=tmp_path / "run")
    finished = json.loads((first.run_dir / "metrics.json").read_text())
    (first.run_dir / "metrics.json").unlink()  # as if stopped after its last checkpoint
    resumed = trainlab.run(trainlab.compose([*overrides, f"resume={first.run_dir}"]))
    assert resumed.run_dir == first.run_dir
    assert resumed.test == finished["test"] and resumed.objective == first.objective
    log = (first.run_dir / "train.log").read_text()
    assert log.count("testing the best checkpoint") == 2 and "resuming from" in log
    again = trainlab.compose([*overrides, f"resume={first.run_dir}"])
    with pytest.raises(TrainlabError, match="already finished"):
        trainlab.run(again)
    (first.run_dir / "metrics.json").unlink()
    with pytest.raises(trainlab.ConfigError, match="name different folders"):
        trainlab.run(again, output_dir=tmp_path)
