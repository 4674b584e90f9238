"""The DataLoader path (trainer.loader=dataloader) yields exactly the batches of the tensors
fast path, so a run trains, stops, resumes and ends the same on either."""

from __future__ import annotations

import logging
import multiprocessing
import signal

import pytest
import torch
from conftest import compose_config, read_metrics, train_in_process
from test_resume import COMMON, MLP, Run, assert_same_run, only_run

from trainlab.app.config import validate
from trainlab.app.experiment import build
from trainlab.app.finders import find_lr
from trainlab.components.data import ImageAugment, LoaderBatches, TensorBatches, load_digits
from trainlab.components.data.loaders import use_pin_memory
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.errors import ConfigError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    """The digits training split: 1,257 images (1x8x8), 20 batches of 64."""
    return load_digits(seed=0, val_fraction=0.15, test_fraction=0.15, scaling="standard").train


def both(split, num_workers: int = 0, **options) -> tuple[TensorBatches, LoaderBatches]:
    tensors = TensorBatches(split.inputs, split.targets, 64, seed=5, **options)
    loader = LoaderBatches(
        split.inputs, split.targets, 64, seed=5, device=CPU, num_workers=num_workers, **options
    )
    return tensors, loader


def assert_same_batches(tensors, loader, epoch: int, start: int = 0) -> None:
    expected, got = list(tensors.epoch(epoch, start)), list(loader.epoch(epoch, start))
    assert len(got) == len(expected) == len(tensors) - start
    for (x, y), (a, b) in zip(expected, got, strict=True):
        assert torch.equal(x, a) and torch.equal(y, b)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"shuffle": True},
        {"shuffle": True, "drop_last": True},
        {"shuffle": True, "limit": 10},
        {"shuffle": True, "transform": ImageAugment(shift=1)},
    ],
    ids=["in_order", "shuffle", "drop_last", "limit", "augment"],
)
def test_dataloader_yields_the_batches_of_the_tensors_path(digits, options) -> None:
    tensors, loader = both(digits, **options)
    assert (len(loader), loader.num_samples, loader.batch_size, loader.device) == (
        len(tensors),
        tensors.num_samples,
        tensors.batch_size,
        tensors.device,
    )
    rng = torch.get_rng_state()
    assert_same_batches(tensors, loader, epoch=0)
    assert_same_batches(tensors, loader, epoch=3, start=7)  # a run resumed mid-epoch
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator drew nothing
    for x, y in zip(tensors.example(2), loader.example(2), strict=True):
        assert torch.equal(x, y)


def test_workers_serve_epochs_in_turn_and_stop_with_their_batches(digits) -> None:
    tensors, loader = both(
        digits, num_workers=2, shuffle=True, transform=ImageAugment(shift=1, noise=0.1)
    )
    rng = torch.get_rng_state()
    assert_same_batches(tensors, loader, epoch=0)
    abandoned = loader.epoch(1)  # as a stop signal or the LR finder leaves an epoch
    next(abandoned), next(abandoned)
    del abandoned
    assert_same_batches(tensors, loader, epoch=2, start=5)
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(multiprocessing.active_children()) == 2  # persistent between epochs
    del loader
    assert multiprocessing.active_children() == []


def test_placement_follows_trainer_loader(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="trainlab"):
        fast = build(compose_config("trainer.device=cpu", output_dir=tmp_path / "auto"))
    assert isinstance(fast.train, TensorBatches)
    assert "trainer.loader=auto: tensors (the device is cpu" in caplog.text

    streamed_cfg = compose_config(
        "trainer.loader=dataloader", "trainer.device=cpu", output_dir=tmp_path / "dl"
    )
    streamed = build(streamed_cfg)
    assert isinstance(streamed.train, LoaderBatches) and isinstance(streamed.test, LoaderBatches)
    assert streamed.train.device == CPU and not streamed.train.loader.pin_memory
    # The finders see the same batches through the shared surface.
    first, second = (find_lr(exp, num_steps=20) for exp in (fast, streamed))
    assert first.losses == second.losses and first.lrs == second.lrs


def test_pin_memory_only_for_cuda(caplog) -> None:
    cuda = torch.device("cuda")
    assert use_pin_memory("auto", cuda) and use_pin_memory(True, cuda)
    assert not use_pin_memory("auto", CPU) and not use_pin_memory(False, cuda)
    with caplog.at_level(logging.WARNING, logger="trainlab"):
        assert not use_pin_memory(True, CPU)
    assert "trainer.pin_memory=true does nothing on cpu" in caplog.text


TEXT = (
    "data=text_demo",
    "data.max_length=24",
    "model=rnn",
    "model.embedding_dim=16",
    "model.hidden_size=32",
    "optim.lr=0.01",
)


@pytest.mark.parametrize(
    ("setup", "streamed"),
    [
        (("trainer.max_epochs=3",), ("trainer.loader=dataloader",)),
        ((*TEXT, "trainer.max_epochs=3"), ("trainer.loader=dataloader", "data.num_workers=2")),
    ],
    ids=["digits_mlp", "text_rnn_workers"],
)
def test_same_metrics_and_weights_with_and_without_the_fast_path(
    run_experiment, capfd, setup, streamed
):
    runs = {}
    for name, options in (("tensors", ("trainer.loader=tensors",)), ("dataloader", streamed)):
        _, runs[name] = run_experiment(*setup, *options)
        # Nothing went wrong quietly, in this process or in a loader's worker processes.
        printed = capfd.readouterr()
        assert "Traceback" not in printed.err and "Exception" not in printed.err
    fast, streamed_run = (read_metrics(runs[n]) for n in ("tensors", "dataloader"))
    for key in ("val", "test", "objective", "epochs", "steps"):
        assert fast[key] == streamed_run[key], key
    assert fast["test"]["test/acc"] > 0.5  # it learned something: the numbers mean something
    for checkpoint in ("last.pt", "best.pt"):
        a, b = (load_checkpoint(runs[n] / "checkpoints" / checkpoint)["model"] for n in runs)
        assert all(torch.equal(a[k], b[k]) for k in a), checkpoint


@pytest.mark.slow  # a real process killed and resumed: long; run with -m slow
def test_sigterm_mid_epoch_on_the_dataloader_path_resumes_exactly(tmp_path) -> None:
    options = (*MLP, *COMMON, "trainer.loader=dataloader", "data.num_workers=2")
    reference = Run(tmp_path / "reference", *options)
    stopped = Run(tmp_path / "stopped", *options)
    stopped.wait_for("step_14.pt")
    stopped.process.send_signal(signal.SIGTERM)
    assert stopped.wait() == 143, stopped.stderr
    run_dir = only_run(stopped.root)
    position = load_checkpoint(run_dir / "checkpoints" / "last.pt")["position"]
    assert position["batch_in_epoch"] > 0, position  # stopped mid-epoch

    assert Run(stopped.root, *options, "resume=auto").finish() == run_dir
    assert_same_run(run_dir, reference.finish())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "trainer.loader=disk",
            "trainer.loader='disk' is not allowed; choose one of: auto, tensors, dataloader",
        ),
        (
            "data.num_workers=-1",
            "data.num_workers=-1 is out of range: it must be >= 0, e.g. data.num_workers=0",
        ),
        ("trainer.pin_memory=maybe", "trainer.pin_memory='maybe' must be one of: auto, true"),
    ],
)
def test_bad_loader_settings_are_refused_in_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(compose_config(override))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cli_refuses_an_unknown_loader(tmp_path) -> None:
    result = train_in_process("trainer.loader=disk", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: trainer.loader='disk' is not allowed; choose one of: auto, tensors, dataloader"
    ]
