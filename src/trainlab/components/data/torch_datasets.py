"""Splits that are `torch.utils.data.Dataset`s, read item by item by a DataLoader.

The per-item path (image folders, a user's own Dataset): a DataLoader's worker processes
(`data.num_workers`) read the items and `default_collate` stacks them. The order is the
one `TensorBatches` draws: `EpochBatchSampler` (loaders.py) cuts `epoch_order(seed, epoch,
n)` into batches in the main process and hands each worker the keys `(epoch, index)` of a
whole batch. Each item is read with torch's random generator seeded by (seed, epoch,
index), so a random transform (torch's, torchvision's) draws the same for any number of workers,
and a run resumed at (epoch, batch) sees the same items: the checkpoint's position is the
whole state of this loader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from trainlab.components.data.datasets import DATA_INFO_FILE, DataInfo, training_batches
from trainlab.components.data.files import write_text_atomic
from trainlab.components.data.loaders import EpochBatchSampler
from trainlab.engine import distributed
from trainlab.engine.batches import Batches, Transform
from trainlab.errors import TrainlabError

ItemTransform = Callable[[Any], Any]


MASK64 = 2**64 - 1


@cache
def _items_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 2]).generate_state(2, np.uint64)[0])


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed item `index` is read with in `epoch`: SplitMix64 of the index, offset by
    a seed drawn from (seed, epoch) apart from every batch seed (a `SeedSequence` per item
    would cost more than reading a small item)."""
    z = (_items_seed(seed, epoch) + (index + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return (z ^ (z >> 31)) >> 1  # 63 bits: a valid torch seed


@contextmanager
def seeded(value: int) -> Iterator[None]:
    """torch's global CPU generator seeded with `value`, put back as it was afterwards:
    reading an item in the main process leaves it unchanged. (`torch.manual_seed` would
    also seed every accelerator, 1000x slower; NumPy's and Python's generators are left
    alone: saving and seeding them costs more than decoding a small image.)"""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(value)
    try:
        yield
    finally:
        generator.set_state(state)


def as_pair(item: Any, index: int, where: str) -> tuple[Any, Any]:
    """An item as `(input, target)` tensors; anything else is refused naming the item."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        got = f"a {type(item).__name__}" + (
            f" of {len(item)}" if isinstance(item, (tuple, list)) else ""
        )
        raise TrainlabError(
            f"{where}: item {index} is {got}, not an (input, target) pair; make the "
            "Dataset's __getitem__ return `inputs, target`"
        )
    inputs, target = item
    if type(target) is int and isinstance(inputs, torch.Tensor) and inputs.dtype != torch.float64:
        return inputs, torch.tensor(target)  # the common case, quickly
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(np.ascontiguousarray(inputs))
    if isinstance(inputs, torch.Tensor) and inputs.dtype == torch.float64:
        inputs = inputs.float()  # the models' weights are float32
    if isinstance(target, (list, tuple)) and all(isinstance(v, (int, float)) for v in target):
        target = torch.as_tensor(target)
    if isinstance(target, (np.ndarray, np.generic)):
        target = torch.as_tensor(target)
    if isinstance(target, (bool, int)) or (
        isinstance(target, torch.Tensor) and not target.is_floating_point()
    ):
        target = torch.as_tensor(target, dtype=torch.long)
    elif isinstance(target, (float, torch.Tensor)):  # regression: one value per output
        target = torch.as_tensor(target, dtype=torch.float32).reshape(-1)
    else:
        raise TrainlabError(
            f"{where}: item {index} has a target of type {type(target).__name__}; a target "
            "is a class index (int) or a value (float, or a tensor of them)"
        )
    if not isinstance(inputs, torch.Tensor):
        raise TrainlabError(
            f"{where}: item {index} has an input of type {type(inputs).__name__}; return a "
            "tensor or a NumPy array (or give data.transform that makes one)"
        )
    return inputs, target


class ItemSource(Dataset):
    """A split's dataset as its DataLoader reads it: the key `(epoch, index)` reads item
    `index` under generators seeded by (seed, epoch, index), through `transform`, checked
    to be an `(input, target)` pair (and a class index below `num_classes`)."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        seed: int,
        where: str,
        transform: ItemTransform | None = None,
        num_classes: int | None = None,
    ) -> None:
        self.dataset, self.seed, self.where = dataset, seed, where
        self.transform, self.num_classes = transform, num_classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, Any]:
        return self.read(key, plain=False)

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[tuple[Any, Any]]:
        """A batch's items, as the DataLoader reads them: an int class index is left an
        int, for `default_collate` to make one tensor of the batch's (a tensor per item
        costs about a tenth of reading a small image)."""
        return [self.read(key, plain=True) for key in keys]

    def read(self, key: tuple[int, int], plain: bool) -> tuple[Any, Any]:
        epoch, index = key
        random = self.transform is not None or getattr(self.dataset, "draws_random_numbers", True)
        with seeded(item_seed(self.seed, epoch, index)) if random else nullcontext():
            try:
                item = self.dataset[index]
                if self.transform is not None and isinstance(item, (tuple, list)):
                    item = (self.transform(item[0]), *item[1:])
            except TrainlabError:
                raise
            except Exception as ex:  # the user's code: one line naming the item
                raise TrainlabError(
                    f"{self.where}: reading item {index} failed: {one_line(ex)}"
                ) from None
        if plain and _plain(item) and self.num_classes is not None:
            self.check_class(item[1], index)
            return item
        inputs, target = as_pair(item, index, self.where)
        if self.num_classes is not None and target.ndim == 0:
            self.check_class(int(target), index)
        return inputs, target

    def check_class(self, label: int, index: int) -> None:
        if not 0 <= label < self.num_classes:
            raise TrainlabError(
                f"{self.where}: item {index} has class {label}, outside 0..."
                f"{self.num_classes - 1}; set data.num_classes to the number of classes"
            )


def _plain(item: Any) -> bool:
    """An `(input tensor, int class)` pair that needs no conversion."""
    return (
        type(item) is tuple
        and len(item) == 2
        and type(item[1]) is int
        and isinstance(item[0], torch.Tensor)
        and item[0].dtype != torch.float64
    )


def one_line(error: BaseException) -> str:
    """What the user's code raised, as one short line: `KeyError: 'x'`."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:200]


def worker_message(error: TrainlabError) -> str:
    """A `TrainlabError` raised in a worker comes back with the worker's traceback in its
    message: its last line is the original message."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return str(error)
    return re.sub(r"^[\w.]+: ", "", lines[-1].strip())


def collate(items: list[tuple[Any, Any]]) -> Any:
    """`default_collate`, with one line when the items' shapes differ."""
    try:
        return default_collate(items)
    except RuntimeError as ex:
        shapes = sorted({tuple(item[0].shape) for item in items if hasattr(item[0], "shape")})
        raise TrainlabError(
            f"items of different shapes in one batch ({', '.join(map(str, shapes[:3]))}): "
            f"{one_line(ex)}; make every item the same shape (e.g. data.image_size)"
        ) from None


class Rows(Dataset):
    """The items `rows` of `dataset` (all of them when None), with their `targets` as a
    tensor (for class weights): the dataset's own `labels` / `targets`, else read item by
    item."""

    def __init__(self, dataset: Dataset, rows: list[int] | None = None) -> None:
        self.dataset = dataset
        self.rows = list(range(len(dataset))) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.rows[index]]

    @property
    def targets(self) -> torch.Tensor:
        labels = getattr(self.dataset, "labels", getattr(self.dataset, "targets", None))
        if labels is not None and len(labels) == len(self.dataset):
            return torch.as_tensor(np.asarray(labels)[self.rows])
        source = ItemSource(self, seed=0, where="data")
        return torch.stack([source[(0, index)][1] for index in range(len(self))])


class ItemBatchSampler(EpochBatchSampler):
    """`EpochBatchSampler`'s batches as the keys `(epoch, index)` of their items; `offset`
    is where this process's part of an evaluation split begins."""

    def __init__(self, batches: ItemBatches) -> None:
        super().__init__(batches)
        self.offset = batches.offset

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for rows in super().__iter__():
            yield [(self.epoch, int(row) + self.offset) for row in rows]


def count_batches(
    num_samples: int,
    batch_size: int,
    drop_last: bool,
    drop_last_single: bool,
    limit: int | None,
    world: int = 1,
) -> tuple[int, int, bool]:
    """(global batch size, number of batches, whether a last batch of one is left out), as
    `Batches` counts them; a global batch holds `batch_size` rows of each of `world`
    processes."""
    size = max(min(batch_size * world, num_samples), 1)
    full, rest = divmod(num_samples, size)
    drops_single = drop_last_single and rest == 1 and full > 0
    # A last global batch with fewer rows than processes would leave one empty.
    too_short = 0 < rest < world and full > 0
    count = full if drop_last or rest == 0 or drops_single or too_short else full + 1
    return size, min(count, limit) if limit is not None else count, drops_single


class ItemBatches(Batches):
    """The batches of a split read item by item, copied to `device`; `prepare` (e.g. the
    normalisation of uint8 images) runs on every device batch, the transform (training
    augmentation) after it. Worker processes live as long as this object."""

    def __init__(
        self,
        source: ItemSource,
        batch_size: int,
        *,
        device: torch.device,
        num_workers: int = 0,
        pin_memory: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        limit: int | None = None,
        transform: Transform | None = None,
        drop_last_single: bool = False,
        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
        sharding: str = "contiguous",
    ) -> None:
        self.source, self._device, self.prepare = source, torch.device(device), prepare
        self.shuffle, self.seed, self.drop_last, self.transform = (
            shuffle,
            seed,
            drop_last,
            transform,
        )
        # Several processes, as `Batches` shares them: training cuts each global batch
        # between them; evaluation gives each a contiguous part of the split.
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.sharding, self.offset, self._count = sharding, 0, len(source)
        if self.world > 1 and sharding == "contiguous":
            part = distributed.shard_batch(np.arange(len(source)), self.rank, self.world)
            self.offset, self._count = (int(part[0]) if len(part) else 0), len(part)
        self.shard_world = self.world if sharding == "batches" else 1
        self.global_batch_size, self.num_batches, self.drops_single = count_batches(
            self._count, batch_size, drop_last, drop_last_single, limit, self.shard_world
        )
        self.batch_size = max(min(batch_size, self._count), 1)
        self.sampler = ItemBatchSampler(self)
        self.loader = DataLoader(
            source,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=collate,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            # Not the global generator: it must draw what it would without a DataLoader.
            generator=torch.Generator().manual_seed(seed),
        )

    @property
    def num_samples(self) -> int:
        return self._count

    @property
    def device(self) -> torch.device:
        return self._device

    def example(self, count: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        keys = [(0, index) for index in range(min(count, len(self.source)))]
        inputs, targets = collate([self.source[key] for key in keys])
        return self._place(inputs), targets.to(self._device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(epoch, start)
        batches = iter(self.loader)
        index = start
        while True:
            try:
                inputs, targets = next(batches)
            except StopIteration:
                return
            except TrainlabError as ex:  # from a worker, with its traceback: one line
                raise TrainlabError(worker_message(ex)) from None
            inputs = self._place(inputs)
            if self.transform is not None:
                inputs = self.augment(inputs, epoch, index)
            yield inputs, targets.to(self._device, non_blocking=True)
            index += 1

    def _place(self, inputs: torch.Tensor) -> torch.Tensor:
        # From pinned memory the copy runs in the background (same stream as its first use).
        inputs = inputs.to(self._device, non_blocking=True)
        return self.prepare(inputs) if self.prepare is not None else inputs


@dataclass
class ItemBundle:
    """Train / validation / test Datasets plus the batching settings (a `DataBundle` whose
    splits are read item by item). `transform` changes training items, `eval_transform`
    validation and test items (per item, in the workers); `train_transform` changes
    training batches on the device; `prepare` every batch. `files` are written into the
    run folder beside `data_info.json` (name -> JSON text)."""

    train: Dataset
    val: Dataset
    test: Dataset
    info: DataInfo
    seed: int = 0
    batch_size: int | str = 64
    eval_batch_size: int = 1024
    shuffle: bool = True
    drop_last: bool = False
    num_workers: int = 0
    transform: ItemTransform | None = None
    eval_transform: ItemTransform | None = None
    train_transform: Transform | None = None
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
    files: dict[str, str] = field(default_factory=dict)
    item_bytes: int = 0  # one item's input, for `nbytes`
    loading: dict[str, Any] | None = None
    reads_items = True  # always batched by a DataLoader (see `place_data`)

    @property
    def nbytes(self) -> int:
        """About the memory the splits would take decoded (they are never held at once)."""
        return self.item_bytes * sum(len(s) for s in (self.train, self.val, self.test))

    def to(self, device: torch.device) -> ItemBundle:
        """Items are always read by a DataLoader: `to` streams them to `device`."""
        return self.stream_to(device, self.num_workers)

    def stream_to(
        self, device: torch.device, num_workers: int | None = None, pin_memory: bool = False
    ) -> ItemBundle:
        workers = self.num_workers if num_workers is None else num_workers
        self.loading = {"device": device, "num_workers": workers, "pin_memory": pin_memory}
        return self

    def save(self, run_dir: str | Path) -> None:
        write_text_atomic(Path(run_dir) / DATA_INFO_FILE, _json(asdict(self.info)))
        for name, text in self.files.items():
            write_text_atomic(Path(run_dir) / name, text)

    def train_batches(
        self, seed: int, limit: int | None = None, drop_last_single: bool = False
    ) -> ItemBatches:
        return training_batches(
            self, "train", seed, limit, drop_last_single, transform=self.train_transform
        )

    def eval_batches(self, split: str, limit: int | None = None) -> ItemBatches:
        return self._batches(split, self.eval_batch_size, seed=self.seed, limit=limit)

    def _batches(self, split: str, batch_size: int, **options: Any) -> ItemBatches:
        loading = self.loading or {"device": torch.device("cpu"), "num_workers": 0}
        source = ItemSource(
            getattr(self, split),
            seed=options["seed"],
            where=f"data ({split} split)",
            transform=self.transform if split == "train" else self.eval_transform,
            num_classes=self.info.num_classes or None,
        )
        return ItemBatches(source, batch_size, prepare=self.prepare, **loading, **options)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2)
