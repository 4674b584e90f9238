"""Mini-batches of in-memory tensors, drawn by slicing on the tensors' device."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch `epoch` of a run seeded with `seed`, independent of all other RNGs."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class TensorBatches:
    """The batches of one split, in an order fixed by (seed, epoch).

    Nothing else that draws random numbers (dropout, initialisation) changes the order, so
    a run resumed at (epoch, batch) sees exactly the batches it would have seen. Batches are
    index slices of tensors already on the target device: no per-sample Python work.
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
    ) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs, self.targets = inputs, targets
        self.batch_size = min(batch_size, len(inputs))
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        full, rest = divmod(len(inputs), self.batch_size)
        count = full if drop_last or rest == 0 else full + 1
        self.num_batches = min(count, limit) if limit is not None else count

    def __len__(self) -> int:
        return self.num_batches

    @property
    def num_samples(self) -> int:
        return len(self.inputs)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of `epoch`, beginning with batch number `start`."""
        size = self.batch_size
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            order = torch.randperm(len(self.inputs), generator=generator)
            order = order.to(self.inputs.device, non_blocking=True)
        for index in range(start, self.num_batches):
            if self.shuffle:
                rows = order[index * size : (index + 1) * size]
                yield self.inputs.index_select(0, rows), self.targets.index_select(0, rows)
            else:
                rows = slice(index * size, (index + 1) * size)
                yield self.inputs[rows], self.targets[rows]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
