"""Mini-batches of a split, in an order fixed by (seed, epoch).

`Batches` is what the trainer, the finders and the callbacks see of a split. Two kinds
share it: `TensorBatches` (here) slices tensors already on the target device, the fast
path for data that fits there; `LoaderBatches` (`trainlab.components.data.loaders`) keeps
the split in host memory and copies each batch to the device. Both yield the same batches.
`IterableBatches` lets the trainer draw from anything else a user has: a torch
`DataLoader`, a list of `(inputs, targets)` tuples (`as_batches` chooses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from trainlab.engine import distributed
from trainlab.engine.distributed import T, shard_batch
from trainlab.errors import TrainlabError

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
_END = object()  # an exhausted iterator's `next` default


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch `epoch` of a run seeded with `seed`, independent of all other RNGs."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for batch `index` of epoch `epoch`, independent of the epoch's batch order.

    A child of the epoch's seed sequence (numpy's `spawn_key`), so it never equals
    `epoch_seed(seed, epoch)` nor the seed of another batch.
    """
    sequence = np.random.SeedSequence([seed, epoch], spawn_key=(index,))
    return int(sequence.generate_state(1)[0])


def worker_seed(seed: int, epoch: int) -> int:
    """The seed a DataLoader's worker processes derive theirs from in `epoch`."""
    return int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0])


def batch_rows(order: T, index: int, global_batch_size: int, rank: int, world: int) -> T:
    """Rank `rank`'s rows of batch `index` of an epoch whose row order is `order`."""
    rows = order[index * global_batch_size : (index + 1) * global_batch_size]
    return shard_batch(rows, rank, world)


def epoch_order(seed: int, epoch: int, num_samples: int) -> torch.Tensor:
    """The shuffled row order of `epoch`, drawn on the CPU (the same for any device)."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=generator)


class Batches:
    """The batches of one split, in an order fixed by (seed, epoch).

    Nothing else that draws random numbers (dropout, initialisation) changes the order, so
    a run resumed at (epoch, batch) sees exactly the batches it would have seen.

    `transform(inputs, generator)`, when given, changes each batch's inputs (augmentation);
    it runs on the batch where training uses it, with a generator on that device seeded by
    (seed, epoch, batch index), so a resumed run also sees the same transformed batches.

    `drop_last_single` leaves out a last batch that would hold one row (a model with batch
    norm cannot train on it); which row that is changes with the epoch's order.

    With several processes (torch.distributed), `sharding="batches"` (training) cuts each
    global batch of `batch_size x processes` rows between them (`shard_batch`);
    `"contiguous"` (evaluation) gives each process a contiguous part of the split.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        limit: int | None = None,
        transform: Transform | None = None,
        drop_last_single: bool = False,
        sharding: str = "contiguous",
    ) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.sharding = sharding
        if self.world > 1 and sharding == "contiguous":
            # Evaluation: each process takes its own contiguous part of the split, so the
            # parts together hold every row once (no padded duplicates).
            part = shard_batch(np.arange(len(inputs)), self.rank, self.world)
            rows = slice(int(part[0]), int(part[-1]) + 1) if len(part) else slice(0, 0)
            inputs, targets = inputs[rows], targets[rows]
        self.inputs, self.targets = inputs, targets
        world = self.world if sharding == "batches" else 1
        # Training: each global batch of `batch_size x processes` rows is cut between the
        # processes by `shard_batch`; `batch_size` stays the rows one process gets.
        self.global_batch_size = max(min(batch_size * world, len(inputs)), 1)
        self.batch_size = min(batch_size, len(inputs))
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.transform = transform
        full, rest = divmod(len(inputs), self.global_batch_size)
        self.drops_single = drop_last_single and rest == 1 and full > 0
        # A last global batch with fewer rows than processes would leave one empty.
        too_short = 0 < rest < world and full > 0
        count = full if drop_last or rest == 0 or self.drops_single or too_short else full + 1
        self.num_batches = min(count, limit) if limit is not None else count
        self.shard_world = world

    def batch_rows(self, order: torch.Tensor, index: int) -> torch.Tensor:
        """This process's rows of batch `index`, given the epoch's row `order`: the one
        place an epoch's order is cut into batches (and a global batch between processes)."""
        return batch_rows(order, index, self.global_batch_size, self.rank, self.shard_world)

    def __len__(self) -> int:
        return self.num_batches

    @property
    def num_samples(self) -> int:
        return len(self.inputs)

    @property
    def device(self) -> torch.device:
        """Where the batches are delivered (and the model must be)."""
        return self.inputs.device

    def augment(self, inputs: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        """Batch `index` of `epoch` through the transform, seeded by (seed, epoch, index)."""
        generator = torch.Generator(device=inputs.device)
        generator.manual_seed(batch_seed(self.seed, epoch, index))
        return self.transform(inputs, generator)

    def example(self, count: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `count` rows (inputs, targets) on the device, untransformed: a sample
        input for the model graph, or a fixed batch for the batch-size finder."""
        return self.inputs[:count].to(self.device), self.targets[:count].to(self.device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of `epoch`, beginning with batch number `start`."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)


class TensorBatches(Batches):
    """Batches as index slices of tensors already on the target device: no per-sample
    Python work, no copies between devices."""

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = self.batch_size
        by_index = self.shuffle or self.shard_world > 1
        if self.shuffle:
            order = epoch_order(self.seed, epoch, len(self.inputs))
            order = order.to(self.inputs.device, non_blocking=True)
        elif by_index:
            order = torch.arange(len(self.inputs), device=self.inputs.device)
        for index in range(start, self.num_batches):
            if by_index:
                rows = self.batch_rows(order, index)
                inputs, targets = (
                    self.inputs.index_select(0, rows),
                    self.targets.index_select(0, rows),
                )
            else:
                rows = slice(index * size, (index + 1) * size)
                inputs, targets = self.inputs[rows], self.targets[rows]
            if self.transform is not None:
                inputs = self.augment(inputs, epoch, index)
            yield inputs, targets


class IterableBatches:
    """Any re-iterable of `(inputs, targets)` batches (a torch `DataLoader`, a list of
    tuples) seen as `Batches`: each batch is moved to `device` as it is drawn.

    Its length is the source's `len()`; a source without one (a DataLoader over an
    `IterableDataset`) learns it during its first epoch, looking one batch ahead so the
    loop still knows which batch ends the epoch. Resuming at batch `start` draws and
    drops the batches before it.

    A DataLoader's order is made a function of (seed, epoch): before each epoch its
    `RandomSampler` gets a generator seeded as `TensorBatches` seeds its shuffle (so
    `shuffle=True` draws `TensorBatches`' order), a sampler with `set_epoch` (e.g.
    `DistributedSampler`) gets the epoch, and the loader's own generator (the seeds of its
    worker processes) is seeded too. Nothing is drawn from torch's global generator. A
    sampler with randomness of its own, or a source that shuffles itself, is not reseeded:
    a resumed run then sees the same order only if the source repeats it.
    """

    def __init__(self, source: Iterable, device: torch.device, seed: int = 0) -> None:
        if iter(source) is source:
            raise TrainlabError(
                f"got a one-shot iterator ({type(source).__name__}) as batches, but each epoch "
                "iterates them again: pass a list of (inputs, targets) or a DataLoader"
            )
        if distributed.world_size() > 1 and not _distributed_sampler(source):
            raise TrainlabError(
                f"a {type(source).__name__} of batches on {distributed.world_size()} processes "
                "would give every process every row: use a DataLoader with a "
                "torch.utils.data.DistributedSampler (each process its part), or one process"
            )
        self.source, self.seed = source, seed
        self._device = torch.device(device)
        try:
            self.num_batches: int | None = len(source)
        except TypeError:  # an IterableDataset's loader has no length
            self.num_batches = None
        # From pinned memory a copy can run in the background (same stream, so the batch's
        # first use waits for it).
        self.non_blocking = bool(getattr(source, "pin_memory", False)) and (
            self._device.type == "cuda"
        )

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TrainlabError(
                f"the number of batches of this {type(self.source).__name__} is unknown "
                "until one epoch has run (its dataset has no __len__): give the dataset a "
                "__len__, or give a schedule its length in steps yourself"
            )
        return self.num_batches

    @property
    def device(self) -> torch.device:
        return self._device

    def example(self, count: int = 2) -> tuple[Any, Any]:
        """The first `count` rows of the first batch, on the device."""
        inputs, targets = next(iter(self.epoch(0)))
        return inputs[:count], targets[:count]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Any, Any]]:
        """Yield the batches of `epoch` on the device, beginning with batch number `start`."""
        self._reseed(epoch)
        drawn = iter(self.source)
        for _ in range(start):
            next(drawn, _END)
        if self.num_batches is not None:
            for inputs, targets in drawn:
                yield self._move(inputs), self._move(targets)
            return
        # Unknown length: one batch ahead, so the count is set before the last is yielded.
        count, ahead = start, next(drawn, _END)
        while ahead is not _END:
            current, ahead = ahead, next(drawn, _END)
            count += 1
            if ahead is _END:
                self.num_batches = count
            yield self._move(current[0]), self._move(current[1])

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self.epoch(0)

    def _move(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(self._device, non_blocking=self.non_blocking)
        if type(value) in (list, tuple):
            return type(value)(self._move(v) for v in value)
        if isinstance(value, dict):
            return {key: self._move(v) for key, v in value.items()}
        return value

    def _reseed(self, epoch: int) -> None:
        if not isinstance(self.source, DataLoader):
            return
        batch_sampler = self.source.batch_sampler
        samplers = (self.source.sampler, batch_sampler, getattr(batch_sampler, "sampler", None))
        for sampler in {id(s): s for s in samplers if s is not None}.values():
            if isinstance(sampler, RandomSampler):
                sampler.generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            elif callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(epoch)
        # The base seed of the worker processes, apart from the shuffle's.
        self.source.generator = torch.Generator().manual_seed(worker_seed(self.seed, epoch))


def _distributed_sampler(source: Iterable) -> bool:
    sampler = getattr(source, "sampler", None)
    batch_sampler = getattr(getattr(source, "batch_sampler", None), "sampler", None)
    return any(isinstance(s, DistributedSampler) for s in (sampler, batch_sampler))


def as_batches(
    source: Batches | Iterable, device: torch.device, seed: int = 0
) -> Batches | IterableBatches:
    """`source` as the trainer draws batches: trainlab's own `Batches` as they are (the fast
    path), anything else iterable through `IterableBatches`."""
    if isinstance(source, (Batches, IterableBatches)):
        return source
    return IterableBatches(source, device, seed)
