"""data=dataset: a user's own torch Dataset by `_target_`, read item by item.

The Datasets are in tests/user_datasets.py (the docs' example). Batches are a function of
(seed, epoch) for any number of workers, also when the Dataset draws random numbers.
"""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import compose_config, read_metrics, train_in_process
from torch.utils.data import Dataset
from user_datasets import DigitsDataset, NotPairs, Stream

from trainlab.app.config import validate
from trainlab.components.data.own_dataset import load_dataset
from trainlab.errors import ConfigError, TrainlabError, one_line

CPU = torch.device("cpu")
TARGET = "user_datasets.DigitsDataset"


def load(**options) -> object:
    return load_dataset(seed=1, batch_size=32, **options).stream_to(CPU)


def test_what_the_model_needs_is_read_from_the_items() -> None:
    images = load(train=DigitsDataset())
    info = images.info
    assert (info.task, info.input_kind, info.input_shape, info.num_classes) == (
        "multiclass",
        "image",
        (1, 8, 8),
        10,
    )
    assert (len(images.train), len(images.val), len(images.test)) == (1257, 270, 270)
    flat = load(train=DigitsDataset(flat=True), val=DigitsDataset(flat=True))
    assert flat.info.input_kind == "features" and flat.info.input_shape == (64,)
    assert len(flat.val) == 1797 and len(flat.train) + len(flat.test) == 1797

    class Values(Dataset):
        def __len__(self) -> int:
            return 50

        def __getitem__(self, index: int):
            return torch.full((3,), float(index)), [float(index), 2.0 * index]

    regression = load(train=Values(), task="auto")
    assert (regression.info.task, regression.info.num_targets) == ("regression", 2)
    targets = next(iter(regression.eval_batches("test")))[1]
    assert targets.dtype == torch.float32 and targets.shape[1] == 2

    class Tokens(Dataset):
        def __len__(self) -> int:
            return 40

        def __getitem__(self, index: int):
            return torch.arange(5) + index, index % 2

    tokens = load(train=Tokens())
    assert (tokens.info.input_kind, tokens.info.vocab_size, tokens.info.task) == (
        "tokens",
        43 + 1,  # the largest id, plus one
        "binary",
    )


def test_batches_are_the_same_for_0_and_2_workers_when_items_draw_random_numbers() -> None:
    epochs = {}
    for workers in (0, 2):
        data = load(train=DigitsDataset(noise=0.5), num_workers=workers)
        train = data.train_batches(seed=1, limit=6)
        epochs[workers] = [torch.cat([x.flatten() for x, _ in train.epoch(e)]) for e in (0, 1)]
        tail = torch.cat([x.flatten() for x, _ in train.epoch(1, start=4)])
        assert torch.equal(tail, epochs[workers][1][-len(tail) :])
    assert torch.equal(epochs[0][0], epochs[2][0]) and torch.equal(epochs[0][1], epochs[2][1])
    assert not torch.equal(epochs[0][0][:64], epochs[0][1][:64])
    before = torch.get_rng_state()
    next(iter(load(train=DigitsDataset(noise=0.5)).train_batches(seed=1).epoch(0)))
    assert torch.equal(before, torch.get_rng_state())  # the global generator is left alone


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"train": NotPairs()},
            "data.train: item 0 is a Tensor, not an (input, target) pair; make the Dataset's "
            "__getitem__ return `inputs, target`",
        ),
        (
            {"train": DigitsDataset(), "num_classes": 5},
            "item {index} has class {label}, outside 0...4; set data.num_classes",
        ),
        (
            {"train": Stream(), "val": Stream(20)},
            "data.train is an IterableDataset, which cannot be cut into splits: give data.val "
            "and data.test Datasets too",
        ),
        (
            {"train": DigitsDataset(), "val": DigitsDataset(), "fold": (0, 3)},
            "cv.folds cuts each fold's validation split from data.train: drop data.val",
        ),
        ({"train": [1, 2]}, "data.train built a list, not a torch Dataset"),
        (
            {"train": DigitsDataset(), "input_shape": [64]},
            "data.input_shape=[64] but item 0's input has shape [1, 8, 8]",
        ),
        (
            {"train": DigitsDataset(), "task": "regression"},
            "data.task=regression but item 0's target is a class index (an integer)",
        ),
    ],
    ids=[
        "not_pairs",
        "class_out_of_range",
        "iterable_fractions",
        "fold_with_val",
        "not_dataset",
        "shape",
        "task",
    ],
)
def test_bad_datasets_are_one_line_naming_the_item(options, message) -> None:
    with pytest.raises(TrainlabError) as caught:
        data = load(**options)
        for split in ("train", "val", "test"):
            for _ in data.eval_batches(split):
                pass
    text = str(caught.value)
    assert "\n" not in text, text
    if "{index}" in message:
        assert text.startswith("data (") and "outside 0...4; set data.num_classes" in text, text
    else:
        assert message in text, text


def test_an_iterable_dataset_is_read_once_and_batched(caplog) -> None:
    caplog.set_level(logging.INFO, logger="trainlab")
    data = load(train=Stream(200), val=Stream(40), test=Stream(40))
    assert len(data.train) == 200 and data.info.input_shape == (4,)
    assert "data.train is an IterableDataset: read once, 200 items" in caplog.text
    assert len(list(data.train_batches(seed=1).epoch(0))) == 7


@pytest.mark.slow  # test_configs trains data=dataset one epoch by default
def test_a_user_dataset_trains_by_target_and_a_bad_target_is_one_line(tmp_path) -> None:
    done = train_in_process(
        "data=dataset",
        f"data.train._target_={TARGET}",
        "+data.train.flat=true",
        "trainer.max_epochs=1",
        "data.batch_size=16",
        "logger=none",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    metrics = read_metrics(tmp_path / "outputs" / "runs" / "in-process")
    assert metrics["test"]["test/acc"] >= 0.8
    (tmp_path / "bad").mkdir()
    failed = train_in_process(
        "data=dataset", "data.train._target_=user_datasets.Nope", cwd=tmp_path / "bad"
    )
    assert failed.returncode == 2
    assert "data.train._target_=user_datasets.Nope could not be built" in failed.stderr


def test_bad_dataset_settings_are_one_line() -> None:
    for override, message in (
        ("data.train._target_=null", "data.train is not set: give your Dataset class"),
        ("+data.val.flat=true", "data.val={'_target_': None, 'flat': True} has arguments but no"),
        ("data.num_workers=-2", "data.num_workers=-2 is out of range: it must be >= 0"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
            validate(compose_config("data=dataset", f"data.train._target_={TARGET}", override))


def test_trainer_num_workers_moved_to_data() -> None:
    with pytest.raises(Exception) as caught:
        compose_config("trainer.num_workers=2")
    assert one_line(caught.value) == (
        "trainer.num_workers moved to data.num_workers: use data.num_workers=... instead"
    )


@pytest.mark.slow
def test_a_user_cnn_dataset_reaches_the_digits_bar(tmp_path) -> None:
    done = train_in_process(
        "data=dataset",
        f"data.train._target_={TARGET}",
        "model=cnn",
        "trainer.max_epochs=15",
        "data.num_workers=2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    metrics = read_metrics(tmp_path / "outputs" / "runs" / "in-process")
    assert metrics["test"]["test/acc"] >= 0.97
