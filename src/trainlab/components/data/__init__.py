"""Datasets, splits and batching.

The loaders are imported when first used (PEP 562), so `data.schemas` (their settings) is
read without importing torch: `--help` and config errors stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainlab.lazy import lazy_exports

if TYPE_CHECKING:
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

_DATASETS = "trainlab.components.data.datasets"
_BATCHES = "trainlab.engine.batches"
# name -> the module that defines it (batching is the engine's)
_MODULES = {
    "Batches": _BATCHES,
    "DataBundle": _DATASETS,
    "DataInfo": _DATASETS,
    "ImageAugment": "trainlab.components.data.augment",
    "LoaderBatches": "trainlab.components.data.loaders",
    "Split": _DATASETS,
    "TensorBatches": _BATCHES,
    "batch_seed": _BATCHES,
    "epoch_seed": _BATCHES,
    "load_breast_cancer": _DATASETS,
    "load_diabetes": _DATASETS,
    "load_digits": _DATASETS,
    "load_synthetic": _DATASETS,
    "load_text": "trainlab.components.data.text_datasets",
    "load_text_demo": "trainlab.components.data.text_datasets",
}


__getattr__ = lazy_exports(__name__, _MODULES)


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
