"""Datasets, splits and batching."""

from trainlab.data.batches import TensorBatches, epoch_seed
from trainlab.data.datasets import DataBundle, DataInfo, Split, load_digits, load_synthetic

__all__ = [
    "DataBundle",
    "DataInfo",
    "Split",
    "TensorBatches",
    "epoch_seed",
    "load_digits",
    "load_synthetic",
]
