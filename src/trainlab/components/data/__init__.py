"""Datasets, splits and batching."""

from trainlab.components.data.augment import ImageAugment
from trainlab.components.data.datasets import (
    DataBundle,
    DataInfo,
    Split,
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_synthetic,
)
from trainlab.components.data.loaders import LoaderBatches
from trainlab.components.data.text_datasets import load_text, load_text_demo
from trainlab.engine.batches import Batches, TensorBatches, batch_seed, epoch_seed

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
