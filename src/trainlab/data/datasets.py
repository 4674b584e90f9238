"""Built-in datasets: each returns a `DataBundle` with its splits and what the model needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from trainlab.data.batches import TensorBatches
from trainlab.errors import TrainlabError


@dataclass
class DataInfo:
    """What a model and the metrics need to know about the data."""

    task: str
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str] = field(default_factory=list)


@dataclass
class Split:
    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class DataBundle:
    """Train / validation / test splits plus the batching settings from the config."""

    train: Split
    val: Split
    test: Split
    info: DataInfo
    batch_size: int | str = 64
    eval_batch_size: int = 1024
    shuffle: bool = True
    drop_last: bool = False
    preprocessor: Any = None

    def to(self, device: torch.device) -> DataBundle:
        """Move every split to `device` once, so batches are sliced where they are used."""
        for split in (self.train, self.val, self.test):
            split.inputs = split.inputs.to(device)
            split.targets = split.targets.to(device)
        return self

    def train_batches(self, seed: int, limit: int | None = None) -> TensorBatches:
        size = len(self.train) if self.batch_size == "full" else int(self.batch_size)
        return TensorBatches(
            self.train.inputs,
            self.train.targets,
            size,
            shuffle=self.shuffle,
            seed=seed,
            drop_last=self.drop_last,
            limit=limit,
        )

    def eval_batches(self, split: str, limit: int | None = None) -> TensorBatches:
        data = getattr(self, split)
        return TensorBatches(data.inputs, data.targets, self.eval_batch_size, limit=limit)


SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler}


def split_and_scale(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    scaling: str,
    seed: int,
    class_names: list[str],
    **batching: Any,
) -> DataBundle:
    """Stratified train/val/test split; the scaler is fitted on the training split only."""
    counts = np.bincount(labels)
    if (counts > 0).sum() < 2:
        raise TrainlabError("the data has a single class; a classifier needs at least two")
    try:
        x_rest, x_test, y_rest, y_test = train_test_split(
            features, labels, test_size=test_fraction, stratify=labels, random_state=seed
        )
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest,
            y_rest,
            test_size=val_fraction / (1.0 - test_fraction),
            stratify=y_rest,
            random_state=seed,
        )
    except ValueError as ex:
        raise TrainlabError(
            f"cannot split {len(labels)} rows into stratified train/val/test sets ({ex}); "
            "use more rows or larger data.val_fraction / data.test_fraction"
        ) from None
    scaler = SCALERS[scaling]() if scaling != "none" else None
    if scaler is not None:
        x_train = scaler.fit_transform(x_train)
        x_val, x_test = scaler.transform(x_val), scaler.transform(x_test)

    def as_split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))

    return DataBundle(
        train=as_split(x_train, y_train),
        val=as_split(x_val, y_val),
        test=as_split(x_test, y_test),
        info=DataInfo(
            task="classification",
            input_shape=(features.shape[1],),
            num_classes=len(class_names),
            class_names=class_names,
        ),
        preprocessor=scaler,
        **batching,
    )


def load_digits(seed: int, **options: Any) -> DataBundle:
    """scikit-learn's 8x8 digits as 64 pixel features (values 0..16 before scaling)."""
    digits = sk_datasets.load_digits()
    names = [str(name) for name in digits.target_names]
    return split_and_scale(digits.data, digits.target, seed=seed, class_names=names, **options)


def load_synthetic(
    seed: int,
    n_samples: int = 2000,
    n_features: int = 20,
    n_informative: int = 10,
    n_classes: int = 4,
    class_sep: float = 1.0,
    **options: Any,
) -> DataBundle:
    """A generated classification task (scikit-learn's make_classification)."""
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
    return split_and_scale(features, labels, seed=seed, class_names=names, **options)
