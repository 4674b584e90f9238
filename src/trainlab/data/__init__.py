"""Datasets, splits and batching."""

from trainlab.data.augment import ImageAugment
from trainlab.data.batches import TensorBatches, batch_seed, epoch_seed
from trainlab.data.datasets import (
    DataBundle,
    DataInfo,
    Split,
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_synthetic,
)

__all__ = [
    "DataBundle",
    "DataInfo",
    "ImageAugment",
    "Split",
    "TensorBatches",
    "batch_seed",
    "epoch_seed",
    "load_breast_cancer",
    "load_diabetes",
    "load_digits",
    "load_synthetic",
]
