"""Datasets, splits and batching."""

from trainlab.data.augment import ImageAugment
from trainlab.data.batches import Batches, TensorBatches, batch_seed, epoch_seed
from trainlab.data.datasets import (
    DataBundle,
    DataInfo,
    Split,
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_synthetic,
)
from trainlab.data.loaders import LoaderBatches
from trainlab.data.text_datasets import load_text, load_text_demo

__all__ = [
    "Batches",
    "DataBundle",
    "DataInfo",
    "ImageAugment",
    "LoaderBatches",
    "Split",
    "TensorBatches",
    "batch_seed",
    "epoch_seed",
    "load_breast_cancer",
    "load_diabetes",
    "load_digits",
    "load_synthetic",
    "load_text",
    "load_text_demo",
]
