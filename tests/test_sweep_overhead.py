"""What a sweep job no longer does twice: compose its config, measure its thread count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode

from trainlab.app.sweeps.compose import ComposeOnce
from trainlab.engine.threads import work_key

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "trainlab" / "configs"


@pytest.fixture(scope="module")
def loader_and_master():
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONFIGS)))
    master = loader.load_configuration("train", ["optim.lr=0.01"], RunMode.MULTIRUN)
    return loader, master


def test_the_launcher_takes_the_config_the_check_composed_once(loader_and_master):
    loader, master = loader_and_master
    once = ComposeOnce(loader)
    job = ["optim.lr=0.5", "model.dropout=0.25"]
    once.check(master, [job])
    first = once.load_sweep_config(master, list(job))
    assert (first.optim.lr, first.model.dropout) == (0.5, 0.25)
    # Handed out once: asking again (a retry) composes afresh, to the same settings.
    again = once.load_sweep_config(master, list(job))
    assert again is not first
    assert (again.optim.lr, again.model.dropout) == (0.5, 0.25)
    assert once.get_sources() == loader.get_sources()  # the rest goes to Hydra's loader


def test_a_job_that_does_not_compose_fails_at_the_check(loader_and_master):
    loader, master = loader_and_master
    once = ComposeOnce(loader)
    with pytest.raises(ConfigCompositionException, match="Could not find 'optim/nosuchoptimizer'"):
        once.check(master, [["optim=nosuchoptimizer"]])
    assert once._composed == {}


def mlp(width: int, dropout: float) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Dropout(dropout),
        torch.nn.BatchNorm1d(width, eps=1e-5), torch.nn.Linear(width, 10),
    )  # fmt: skip


def key(model: torch.nn.Module, batch_size: int = 64) -> str:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = (torch.zeros(batch_size, 64), torch.zeros(batch_size, dtype=torch.long))
    return work_key(model, optimizer, torch.nn.CrossEntropyLoss(), batch, None, 2)


def test_jobs_that_differ_in_dropout_share_one_thread_measurement():
    assert key(mlp(128, 0.1)) == key(mlp(128, 0.45))
    assert key(mlp(128, 0.0)) == key(mlp(128, 0.5))


def test_jobs_that_differ_in_shape_are_measured_apart():
    assert key(mlp(128, 0.1)) != key(mlp(256, 0.1))
    assert key(mlp(128, 0.1)) != key(mlp(128, 0.1), batch_size=32)
    assert key(torch.nn.Conv1d(4, 8, 3, stride=1)) != key(torch.nn.Conv1d(4, 8, 3, stride=2))


def plain(config) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config, resolve=False)


@pytest.mark.parametrize(
    "job",
    [
        ["optim.lr=0.5", "model.dropout=0.25", "model.hidden_sizes=[512,256]"],
        ["seed=7", "+optuna_trial={storage:'sqlite:///x.db',study_name:s,number:3}"],
        ["optim.lr=0.002", "model=cnn"],
        ["optim=sgd", "optim.momentum=0.5", "trainer.max_epochs=2"],
        ["hydra.job.name=other", "optim.lr=0.1"],
        ["~callbacks.early_stopping", "optim.lr=0.1"],
        ["callbacks.early_stopping.patience=3", "~callbacks.early_stopping"],
    ],
)
def test_a_job_copied_from_a_composition_equals_hydras_own(loader_and_master, job):
    loader, master = loader_and_master
    once = ComposeOnce(loader)
    hydras = plain(loader.load_sweep_config(master, list(job)))
    assert plain(once.compose(master, list(job))) == hydras
    # again, now a copy of the composition kept the first time
    assert plain(once.compose(master, list(job))) == hydras


def test_value_jobs_share_one_composition(loader_and_master):
    loader, master = loader_and_master
    once = ComposeOnce(loader)
    for lr in (0.1, 0.2, 0.3):
        assert once.compose(master, [f"optim.lr={lr}", "model=cnn"]).optim.lr == lr
    assert list(once._bases) == [(id(master), ("model=cnn",))]


def test_a_value_job_that_does_not_compose_fails_as_hydra_says(loader_and_master):
    loader, master = loader_and_master
    once = ComposeOnce(loader)
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'optim\.nosuch'"):
        once.compose(master, ["optim.nosuch=1"])
    with pytest.raises(ConfigCompositionException, match="Could not append to config"):
        once.compose(master, ["+optim.lr=1"])


def test_a_bundled_data_set_is_read_once_and_no_run_changes_another():
    from trainlab.components.data.datasets import bundled, load_digits

    options = {"val_fraction": 0.15, "test_fraction": 0.15, "scaling": "standard"}
    first = load_digits(seed=0, **options)
    first.train.inputs.mul_(0)  # a run scaling its tensors in place
    second = load_digits(seed=0, **options)
    assert bundled("digits") is bundled("digits")
    assert not bundled("digits").data.flags.writeable
    assert second.train.inputs.abs().sum() > 0
    assert abs(second.train.inputs.mean().item()) < 1e-6  # standard-scaled afresh


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("optim.lr=0.5", "trainer.max_epochs=1", "+callbacks.fault._target_=fault_parts.SignalAt"),
        ("model=cnn", "optim=sgd", "optim.momentum=0.5", "seed=3"),
        ("callbacks.early_stopping.patience=3", "~callbacks.early_stopping"),
    ],
)
def test_the_tests_compose_config_gives_hydras_config(overrides):
    """conftest.compose_config copies compositions as sweeps do: what Hydra composes."""
    from conftest import compose_config
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        hydras = compose("train", [*overrides, "paths.output_dir=somewhere"])
    for _ in range(2):  # composed, then copied from the kept composition
        assert plain(compose_config(*overrides, output_dir="somewhere")) == plain(hydras)


@pytest.mark.parametrize("warmup", [0, 2])
def test_the_pruner_is_asked_from_its_first_epoch_after_the_warm_up(tmp_path, warmup):
    """Skipping the pruner during `n_warmup_steps` stops no trial it would have stopped:
    a trial far behind the others is stopped at the first epoch the pruner may judge."""
    import optuna

    from trainlab.app.sweeps.pruning import OptunaPruning
    from trainlab.engine.trainer import TrainState

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for _ in range(3):  # peers that reached 0.9 at every epoch
        peer = study.ask()
        for step in range(5):
            peer.report(0.9, step)
        study.tell(peer, 0.9)
    number = study.ask().number
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1,
              "n_warmup_steps": warmup}  # fmt: skip
    callback = OptunaPruning(url, "s", number, "val/acc", pruner)
    stopped_at = None
    for epoch in range(5):
        state = TrainState(epoch=epoch, metrics={"val/acc": 0.1})
        callback.on_validation_end(None, state)
        if state.should_stop:
            stopped_at = epoch
            break
    assert stopped_at == warmup
