"""Built-in datasets: each returns a `DataBundle` with its splits and what the model needs."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn import datasets as sk_datasets
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from trainlab.components.data.augment import ImageAugment
from trainlab.components.data.files import write_text_atomic
from trainlab.components.data.loaders import LoaderBatches
from trainlab.engine.batches import Batches, TensorBatches
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

TASKS = ("multiclass", "binary", "regression")
INPUT_KINDS = ("features", "image", "tokens")
DATA_INFO_FILE = "data_info.json"


@dataclass
class DataInfo:
    """What a model, the loss and the metrics need to know about the data.

    `task` is "multiclass", "binary" (two classes) or "regression"; `input_kind` is
    "features" (a vector per row), "image" (channels x height x width) or "tokens" (a
    sequence of token ids, `padding_idx` marking padding, ids below `vocab_size`).
    """

    name: str
    task: str
    input_kind: str
    input_shape: tuple[int, ...]
    num_classes: int = 0  # classification only
    num_targets: int = 1  # regression only
    class_names: list[str] = field(default_factory=list)
    vocab_size: int | None = None
    padding_idx: int = 0
    # Regression targets are standardised for training; metrics undo it (data units).
    target_mean: list[float] | None = None
    target_std: list[float] | None = None

    def __post_init__(self) -> None:
        assert self.task in TASKS, self.task
        assert self.input_kind in INPUT_KINDS, self.input_kind
        self.input_shape = tuple(self.input_shape)  # a list when read back from JSON

    @classmethod
    def load(cls, run_dir: str | Path) -> DataInfo:
        """The DataInfo a run saved (`data_info.json` in its folder); plain JSON, checked."""
        path = Path(run_dir) / DATA_INFO_FILE
        try:
            values = json.loads(path.read_text())
            info = cls(**values)
            if info.task not in TASKS or info.input_kind not in INPUT_KINDS:
                raise ValueError(f"task {info.task!r}, input kind {info.input_kind!r}")
            if not all(isinstance(size, int) for size in info.input_shape):
                raise ValueError(f"input shape {info.input_shape}")
            if not all(isinstance(name, str) for name in info.class_names):
                raise ValueError("class names that are not texts")
        except (OSError, ValueError, TypeError, AssertionError, RecursionError) as ex:
            reason = str(ex).splitlines()[0][:120] if str(ex) else type(ex).__name__
            raise TrainlabError(
                f"{path} cannot be read as a run's data description ({reason}); "
                "point at a run folder trainlab wrote, or retrain the run"
            ) from None
        return info


@dataclass
class Split:
    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class DataBundle:
    """Train / validation / test splits plus the batching settings from the config.

    Batches come one of two ways: `to(device)` moves the splits to the device once, to be
    batched there by slicing (`TensorBatches`); `stream_to(device, ...)` keeps them in host
    memory and copies each batch over as it is used (`LoaderBatches`). `train_transform`
    (augmentation) changes training batches only; see `Batches`.
    """

    train: Split
    val: Split
    test: Split
    info: DataInfo
    batch_size: int | str = 64
    eval_batch_size: int = 1024
    shuffle: bool = True
    drop_last: bool = False
    num_workers: int = 0  # DataLoader worker processes, when batches come from one
    preprocessor: Any = None
    train_transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    # Set by `stream_to`: the DataLoader settings (device, num_workers, pin_memory).
    loading: dict[str, Any] | None = None

    @property
    def nbytes(self) -> int:
        """Memory the three splits take (inputs and targets)."""
        splits = (self.train, self.val, self.test)
        return sum(s.inputs.nbytes + s.targets.nbytes for s in splits)

    def to(self, device: torch.device) -> DataBundle:
        """Move every split to `device` once, so batches are sliced where they are used."""
        for split in (self.train, self.val, self.test):
            split.inputs = split.inputs.to(device)
            split.targets = split.targets.to(device)
        self.loading = None
        return self

    def stream_to(
        self, device: torch.device, num_workers: int = 0, pin_memory: bool = False
    ) -> DataBundle:
        """Keep every split in host memory; batches come from a DataLoader with
        `num_workers` worker processes and are copied to `device` as they are used."""
        self.to(torch.device("cpu"))
        self.loading = {"device": device, "num_workers": num_workers, "pin_memory": pin_memory}
        return self

    def save(self, run_dir: str | Path) -> None:
        """Write what prediction needs besides the weights into the run folder.

        `data_info.json` (the DataInfo, to rebuild the model) and, when the preprocessing
        can save itself (`data=csv`), its fitted transform.
        """
        write_text_atomic(Path(run_dir) / DATA_INFO_FILE, json.dumps(asdict(self.info), indent=2))
        if hasattr(self.preprocessor, "save"):
            self.preprocessor.save(run_dir)

    def train_batches(
        self, seed: int, limit: int | None = None, drop_last_single: bool = False
    ) -> Batches:
        """The training batches. `drop_last_single` (for a model with batch norm, which
        cannot train on one row) leaves out a last batch of a single row, with a note."""
        return training_batches(
            self, self.train, seed, limit, drop_last_single, transform=self.train_transform
        )

    def eval_batches(self, split: str, limit: int | None = None) -> Batches:
        return self._batches(getattr(self, split), self.eval_batch_size, limit=limit)

    def _batches(self, split: Split, batch_size: int, **options: Any) -> Batches:
        if self.loading is None:
            return TensorBatches(split.inputs, split.targets, batch_size, **options)
        return LoaderBatches(split.inputs, split.targets, batch_size, **self.loading, **options)


def training_batches(
    bundle: Any, split: Any, seed: int, limit: int | None, drop_last_single: bool, **options: Any
) -> Batches:
    """The training batches of any bundle (in memory, item by item, streamed), cut from
    `bundle.batch_size` by its own `_batches(split, ...)`; a last batch of one row left out
    for batch norm is said once."""
    size = len(bundle.train) if bundle.batch_size == "full" else int(bundle.batch_size)
    batches = bundle._batches(
        split,
        size,
        shuffle=bundle.shuffle,
        seed=seed,
        drop_last=bundle.drop_last,
        limit=limit,
        drop_last_single=drop_last_single,
        sharding="batches",  # several processes: each takes its part of every batch
        **options,
    )
    if batches.drops_single:
        log.info(
            f"note: {len(bundle.train)} training rows in batches of {size} leave a last batch "
            "of one row, which batch norm cannot train on: it is left out of each epoch "
            "(another data.batch_size keeps every row)"
        )
    return batches


SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler}


def split_rows(
    targets: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify: bool,
    fold: tuple[int, int] | None = None,
    class_names: list[str] | None = None,
    target: str = "the target",
    fix: str = "or set data.task=regression",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of the train / val / test splits; stratified by class when asked.

    With `fold=(k, folds)` (cross-validation) the rows outside the test split are cut into
    `folds` parts and part k is the validation split; the test split is the same for all k.
    `class_names` and `target` (the setting that names the target) make the messages
    about classes too small to split name them; `fix` ends that message.
    """
    rows = np.arange(len(targets))
    if stratify and len(np.unique(targets)) < 2:
        raise TrainlabError("the data has a single class; a classifier needs at least two")
    if stratify:
        counts = np.bincount(targets)
        single = np.flatnonzero(counts == 1)
        if len(single):
            names = class_names or [str(c) for c in range(len(counts))]
            examples = ", ".join(repr(names[c]) for c in single[:3])
            raise TrainlabError(
                f"{target} has {len(counts)} classes, {len(single)} of them with a single row "
                f"(e.g. {examples}); a split needs 2+ rows per class: is it an ID column? "
                f"Remove or merge rare classes, {fix}"
            )
    try:
        rest, test = train_test_split(
            rows,
            test_size=test_fraction,
            random_state=seed,
            stratify=targets if stratify else None,
        )
        if fold is not None:
            index, folds = fold
            splitter = (StratifiedKFold if stratify else KFold)(
                n_splits=folds, shuffle=True, random_state=seed
            )
            train, val = list(splitter.split(rest, targets[rest]))[index]
            return rest[train], rest[val], test
        train, val = train_test_split(
            rest,
            test_size=val_fraction / (1.0 - test_fraction),
            random_state=seed,
            stratify=targets[rest] if stratify else None,
        )
    except ValueError as ex:
        if fold is not None:
            raise TrainlabError(
                f"cannot cut the {len(targets)} rows into cv.folds={fold[1]} folds "
                f"({str(ex).splitlines()[0][:160]}); "
                "use fewer folds, e.g. cv.folds=5"
            ) from None
        reason = str(ex).splitlines()[0][:160]
        raise TrainlabError(
            f"cannot split {len(targets)} rows into train/val/test sets ({reason}); "
            "use more rows or larger data.val_fraction / data.test_fraction"
        ) from None
    return train, val, test


def split_and_scale(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    name: str,
    val_fraction: float,
    test_fraction: float,
    scaling: str,
    seed: int,
    class_names: list[str] | None = None,
    image_shape: tuple[int, ...] | None = None,
    target_scaling: str = "standard",
    fold: tuple[int, int] | None = None,
    **batching: Any,
) -> DataBundle:
    """Split a numeric table (stratified for classification) and scale it.

    The scaler is fitted on the training split only. `class_names` marks a classification
    task (targets are class indices); without it the targets are regression values.
    `image_shape` reshapes each row into an image after scaling. Regression targets are
    standardised with the training split's mean and deviation when `target_scaling` is
    "standard".
    """
    classification = class_names is not None
    train, val, test = split_rows(
        targets,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify=classification,
        fold=fold,
    )
    scaler = SCALERS[scaling]() if scaling != "none" else None
    if scaler is not None:
        scaler.fit(features[train])
    shape = image_shape or (features.shape[1],)
    values = targets.reshape(len(targets), -1).astype(np.float64)
    mean, std = np.zeros(values.shape[1]), np.ones(values.shape[1])
    if not classification and target_scaling == "standard":
        mean, std = values[train].mean(axis=0), values[train].std(axis=0) + 1e-12

    def as_split(rows: np.ndarray) -> Split:
        x = scaler.transform(features[rows]) if scaler is not None else features[rows]
        x = torch.as_tensor(x, dtype=torch.float32).reshape(len(rows), *shape)
        if classification:
            return Split(x, torch.as_tensor(targets[rows], dtype=torch.long))
        return Split(x, torch.as_tensor((values[rows] - mean) / std, dtype=torch.float32))

    task = "regression"
    if classification:
        task = "binary" if len(class_names) == 2 else "multiclass"
    info = DataInfo(
        name=name,
        task=task,
        input_kind="image" if image_shape else "features",
        input_shape=shape,
        num_classes=len(class_names) if classification else 0,
        num_targets=values.shape[1],
        class_names=class_names or [],
        target_mean=None if classification else mean.tolist(),
        target_std=None if classification else std.tolist(),
    )
    return DataBundle(
        train=as_split(train),
        val=as_split(val),
        test=as_split(test),
        info=info,
        preprocessor=scaler,
        **batching,
    )


@functools.cache
def bundled(name: str) -> Any:
    """scikit-learn's bundled data set `name` (`load_<name>()`), read once a process: a
    sweep builds many runs of it. Its arrays are read-only, so no run changes another's."""
    data = getattr(sk_datasets, f"load_{name}")()
    for value in data.values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return data


def load_digits(seed: int, augment: dict[str, Any] | None = None, **options: Any) -> DataBundle:
    """scikit-learn's handwritten digits as 1x8x8 images (pixel values 0..16 before scaling).

    Models take them as they need: the MLP as 64 features, the CNN as images, sequence
    models as 8 rows of 8 pixels. `augment` (`shift`, `noise`: see `ImageAugment`) changes
    the training batches only.
    """
    digits = bundled("digits")
    names = [str(name) for name in digits.target_names]
    augmentation = ImageAugment(**(augment or {}))
    return split_and_scale(
        digits.data,
        digits.target,
        name="digits",
        seed=seed,
        class_names=names,
        image_shape=(1, 8, 8),
        train_transform=augmentation if augmentation.active else None,
        **options,
    )


def load_synthetic(
    seed: int,
    n_samples: int = 2000,
    n_features: int = 20,
    n_informative: int = 10,
    n_classes: int = 4,
    class_sep: float = 1.0,
    image_shape: list[int] | None = None,
    **options: Any,
) -> DataBundle:
    """A generated classification task (scikit-learn's make_classification).

    `image_shape` (e.g. [1, 8, 8] for 64 features) serves the rows as images, for models
    that take images.
    """
    features, labels = sk_datasets.make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=0,
        n_classes=n_classes,
        class_sep=class_sep,
        random_state=seed,
    )
    names = [str(c) for c in range(n_classes)]
    return split_and_scale(
        features,
        labels,
        name="synthetic",
        seed=seed,
        class_names=names,
        image_shape=tuple(image_shape) if image_shape else None,
        **options,
    )


def load_breast_cancer(seed: int, **options: Any) -> DataBundle:
    """scikit-learn's Wisconsin breast cancer set: 569 rows, 30 features, two classes."""
    data = bundled("breast_cancer")
    names = [str(name) for name in data.target_names]
    return split_and_scale(
        data.data, data.target, name="breast_cancer", seed=seed, class_names=names, **options
    )


def load_diabetes(seed: int, target_scaling: str = "standard", **options: Any) -> DataBundle:
    """scikit-learn's diabetes progression set: 442 rows, 10 features, a real target."""
    data = bundled("diabetes")
    return split_and_scale(
        data.data,
        data.target,
        name="diabetes",
        seed=seed,
        target_scaling=target_scaling,
        **options,
    )
