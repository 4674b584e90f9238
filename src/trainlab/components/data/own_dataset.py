"""Your own `torch.utils.data.Dataset` (`data=dataset data.train._target_=mypkg.MyDataset`).

Any map-style Dataset whose items are `(input, target)` pairs trains, and so does an
`IterableDataset` (counted once, its batches in the order it yields them). What the model
needs is read from the first items: a 1-D float input is a feature vector, a 3-D one an
image (C, H, W), a 1-D integer one a sequence of token ids; an integer target is a class
index, a float one a value to regress. `data.task`, `data.num_classes`, `data.input_shape`
and `data.vocab_size` say it where the items cannot.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from torch.utils.data import Dataset, IterableDataset

from trainlab.components.data.datasets import DataInfo, split_rows
from trainlab.components.data.torch_datasets import ItemBundle, ItemSource, Rows
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

SCAN = 1000  # items read to find the number of classes (or tokens) when not given


def cut_rows(
    count: int,
    *,
    need_val: bool,
    need_test: bool,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    targets: np.ndarray | None = None,
    fold: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Train rows, and the val / test rows cut from the same `count` rows where they are
    needed (None where the split is given): seeded, stratified when `targets` are given.
    `fold=(k, folds)` makes part k of the non-test rows the validation rows."""
    stratify = targets is not None
    labels = targets if stratify else np.zeros(count, dtype=np.int64)
    if need_val and need_test:
        return split_rows(
            labels,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            stratify=stratify,
            fold=fold,
        )
    rows = np.arange(count)
    if fold is not None:  # the test split is given: fold all rows
        splitter = (StratifiedKFold if stratify else KFold)(
            n_splits=fold[1], shuffle=True, random_state=seed
        )
        train, val = list(splitter.split(rows, labels))[fold[0]]
        return train, val, None
    if not (need_val or need_test):
        return rows, None, None
    fraction = val_fraction if need_val else test_fraction
    try:
        train, cut = train_test_split(
            rows, test_size=fraction, random_state=seed, stratify=labels if stratify else None
        )
    except ValueError as ex:
        setting = "data.val_fraction" if need_val else "data.test_fraction"
        raise TrainlabError(
            f"cannot cut {setting}={fraction:g} from {count} rows "
            f"({str(ex).splitlines()[0][:160]}); use more rows or a larger {setting}"
        ) from None
    return (train, cut, None) if need_val else (train, None, cut)


def load_dataset(
    seed: int,
    train: Any = None,
    val: Any = None,
    test: Any = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    task: str = "auto",
    num_classes: int | None = None,
    input_shape: list[int] | None = None,
    vocab_size: int | None = None,
    class_names: list[str] | None = None,
    name: str | None = None,
    fold: tuple[int, int] | None = None,
    **batching: Any,
) -> ItemBundle:
    """Your Dataset(s) as trainlab's splits: `train`, and `val` / `test` or the fractions
    of `train` cut off for them (seeded by `seed`; cross-validation folds the rest).
    `train`, `val` and `test` are Datasets, or config nodes naming one by `_target_`."""
    for key in ("transform", "eval_transform"):
        batching[key] = build_node(batching.get(key), f"data.{key}")
    train, val, test = (
        build_node(node, f"data.{key}")
        for key, node in (("train", train), ("val", val), ("test", test))
    )
    for key, value in (("train", train), ("val", val), ("test", test)):
        if value is not None and not isinstance(value, (Dataset, IterableDataset)):
            raise TrainlabError(
                f"data.{key} built a {type(value).__name__}, not a torch Dataset; point "
                f"data.{key}._target_ at a torch.utils.data.Dataset class"
            )
    if train is None:
        raise TrainlabError(
            "data.train is not set: give your Dataset class, e.g. "
            "data.train._target_=mypkg.MyDataset (its arguments as data.train.<name>=...)"
        )
    if isinstance(train, IterableDataset):
        train = counted(train, "train")
        if val is None or test is None:
            raise TrainlabError(
                "data.train is an IterableDataset, which cannot be cut into splits: give "
                "data.val and data.test Datasets too"
            )
        if fold is not None:
            raise TrainlabError(
                "cv.folds needs a map-style data.train Dataset to cut into folds; an "
                "IterableDataset cannot be: drop cv.folds"
            )
    elif fold is not None and val is not None:
        raise TrainlabError(
            "cv.folds cuts each fold's validation split from data.train: drop data.val "
            "(or cv.folds)"
        )
    val, test = (counted(d, key) for d, key in ((val, "val"), (test, "test")))
    rows, val_rows, test_rows = cut_rows(
        len(train),
        need_val=val is None,
        need_test=test is None,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        fold=fold,
    )
    splits = {
        "val": Rows(val) if val is not None else Rows(train, val_rows.tolist()),
        "test": Rows(test) if test is not None else Rows(train, test_rows.tolist()),
    }
    info, item_bytes = describe(
        train,
        task=task,
        num_classes=num_classes,
        input_shape=input_shape,
        vocab_size=vocab_size,
        class_names=class_names or list(getattr(train, "classes", []) or []),
        name=name or type(getattr(train, "dataset", train)).__name__,
    )
    return ItemBundle(
        train=Rows(train, rows.tolist()),
        **splits,
        info=info,
        seed=seed,
        item_bytes=item_bytes,
        **batching,
    )


def build_node(node: Any, key: str) -> Any:
    """The object a config node names by `_target_` (None for no `_target_`); an object
    as it is. A failure to build is one line naming the setting."""
    if node is None or not hasattr(node, "get"):
        return node
    if not node.get("_target_"):
        return None
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as ex:
        cause = ex.__cause__ or ex
        lines = str(cause).strip().splitlines()
        reason = f"{type(cause).__name__}: {lines[0] if lines else ''}"[:200]
        raise TrainlabError(
            f"{key}._target_={node['_target_']} could not be built ({reason})"
        ) from None


class ListedItems(Dataset):
    """The items an IterableDataset yielded, held as a map-style Dataset."""

    def __init__(self, items: list[Any], source: IterableDataset) -> None:
        self.items, self.dataset = items, source

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


def counted(dataset: Any, key: str) -> Any:
    """An IterableDataset read once into a list (so it has a length, an order trainlab
    shuffles, and every item checked); a map-style Dataset as it is."""
    if dataset is None or not isinstance(dataset, IterableDataset):
        return dataset
    items = list(dataset)
    if not items:
        raise TrainlabError(f"data.{key}: the IterableDataset yielded no items")
    log.info(
        f"note: data.{key} is an IterableDataset: read once, {len(items)} items held in "
        "memory and batched like a map-style Dataset"
    )
    return ListedItems(items, dataset)


def describe(
    train: Dataset,
    *,
    task: str,
    num_classes: int | None,
    input_shape: list[int] | None,
    vocab_size: int | None,
    class_names: list[str],
    name: str,
) -> tuple[DataInfo, int]:
    """The DataInfo of `train`, read from its first items where the settings do not say,
    and the bytes of one item's input."""
    if len(train) == 0:
        raise TrainlabError("data.train holds no items")
    source = ItemSource(train, seed=0, where="data.train")
    inputs, target = source[(0, 0)]
    shape = tuple(input_shape) if input_shape else tuple(inputs.shape)
    if input_shape and tuple(inputs.shape) != shape:
        raise TrainlabError(
            f"data.input_shape={list(shape)} but item 0's input has shape "
            f"{list(inputs.shape)}; make them match, or leave data.input_shape unset"
        )
    integer = not inputs.is_floating_point()
    if len(shape) == 1 and integer:
        kind = "tokens"
    elif len(shape) in (1, 3):
        kind = "features" if len(shape) == 1 else "image"
    else:
        raise TrainlabError(
            f"data.train: item 0's input has shape {list(shape)}; trainlab's models take a "
            "vector (features), a (channels, height, width) image or a 1-D sequence of token "
            "ids: reshape it in __getitem__"
        )
    scanned = [source[(0, i)] for i in range(min(len(train), SCAN))]
    if kind == "tokens" and vocab_size is None:
        vocab_size = int(max(int(x.max()) for x, _ in scanned)) + 1
        log.info(
            f"note: data.vocab_size not set: {vocab_size} (largest id in the first "
            f"{len(scanned)} items + 1)"
        )
    classification = task == "classification" or (task == "auto" and target.ndim == 0)
    if not classification:
        if target.ndim == 0:
            raise TrainlabError(
                "data.task=regression but item 0's target is a class index (an integer); "
                "return float targets, or set data.task=classification"
            )
        info = DataInfo(
            name, "regression", kind, shape, num_targets=int(target.numel()), vocab_size=vocab_size
        )
        return info, inputs.numel() * inputs.element_size()
    if target.ndim != 0:
        raise TrainlabError(
            f"data.task=classification but item 0's target is {list(target.shape)} floats; "
            "return the class index as an int, or set data.task=regression"
        )
    if num_classes is None:
        num_classes = len(class_names) or max(int(t) for _, t in scanned) + 1
        if not class_names:
            log.info(
                f"note: data.num_classes not set: {num_classes} (largest class among the "
                f"first {len(scanned)} items + 1; set data.num_classes if there are more)"
            )
    if num_classes < 2:
        raise TrainlabError(
            f"data.train: {num_classes} class found in the first {len(scanned)} items; a "
            "classifier needs 2 or more (set data.num_classes, or data.task=regression)"
        )
    names = class_names if len(class_names) == num_classes else [str(c) for c in range(num_classes)]
    info = DataInfo(
        name,
        "binary" if num_classes == 2 else "multiclass",
        kind,
        shape,
        num_classes=num_classes,
        class_names=names,
        vocab_size=vocab_size,
    )
    return info, inputs.numel() * inputs.element_size()
