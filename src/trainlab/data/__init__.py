"""Datasets, splits and batching."""

from trainlab.data.batches import TensorBatches, epoch_seed
from trainlab.data.datasets import (
    DataBundle,
    DataInfo,
    Split,
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_synthetic,
)
from trainlab.data.text_datasets import load_text, load_text_demo

__all__ = [
    "DataBundle",
    "DataInfo",
    "Split",
    "TensorBatches",
    "epoch_seed",
    "load_breast_cancer",
    "load_diabetes",
    "load_digits",
    "load_synthetic",
    "load_text",
    "load_text_demo",
]
