"""Mini-batches of a split, in an order fixed by (seed, epoch).

`Batches` is what the trainer, the finders and the callbacks see of a split. Two kinds
share it: `TensorBatches` (here) slices tensors already on the target device, the fast
path for data that fits there; `LoaderBatches` (`trainlab.components.data.loaders`) keeps
the split in host memory and copies each batch to the device. Both yield the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


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
    ) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs, self.targets = inputs, targets
        self.batch_size = min(batch_size, len(inputs))
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.transform = transform
        full, rest = divmod(len(inputs), self.batch_size)
        count = full if drop_last or rest == 0 else full + 1
        self.num_batches = min(count, limit) if limit is not None else count

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
        if self.shuffle:
            order = epoch_order(self.seed, epoch, len(self.inputs))
            order = order.to(self.inputs.device, non_blocking=True)
        for index in range(start, self.num_batches):
            if self.shuffle:
                rows = order[index * size : (index + 1) * size]
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
