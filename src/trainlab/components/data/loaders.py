"""Batches through a `torch.utils.data.DataLoader`, for data kept in host memory.

The second way to batch a split (see `trainlab.engine.batches`): the split stays in host
memory, worker processes (`num_workers`) gather each batch, and the main process copies it
to the device, from pinned memory without waiting when `pin_memory` is on. The order is
`TensorBatches`' own: the main process draws the epoch's permutation and hands each
worker a whole batch's row indices, so a worker does one `index_select` per batch, no
per-sample Python work, and nothing random.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainlab.engine.batches import Batches, batch_rows, epoch_order

log = logging.getLogger("trainlab")

# loader=auto keeps the data on a CUDA device when it takes less than this share of the
# free memory: the model, its activations and the optimizer state need the rest.
DEVICE_SHARE = 0.25


class SplitRows(Dataset):
    """A split whose items are whole batches: `split[rows]` gathers the rows `rows`."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(rows)
        return self.inputs.index_select(0, index), self.targets.index_select(0, index)


class EpochBatchSampler(Sampler[np.ndarray]):
    """The row indices of each batch of one epoch, as `TensorBatches` cuts them.

    `set_epoch(epoch, start)` picks the epoch (and the batch to begin with) before each
    pass over the DataLoader; the sampler runs in the main process. It holds plain numbers,
    not the `LoaderBatches` it serves: a reference cycle would leave a finished DataLoader
    to the garbage collector, which may run in a later worker process and fail there.
    """

    def __init__(self, batches: Batches) -> None:
        self.num_samples, self.batch_size = batches.num_samples, batches.batch_size
        self.num_batches, self.shuffle, self.seed = len(batches), batches.shuffle, batches.seed
        # Plain numbers again: this process's share of each global batch (`batch_rows`).
        self.global_batch_size = batches.global_batch_size
        self.rank, self.world = batches.rank, batches.shard_world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(self.num_batches - self.start, 0)

    def order(self) -> np.ndarray:
        """Every row of the split, in the order of the current epoch."""
        if self.shuffle:
            return epoch_order(self.seed, self.epoch, self.num_samples).numpy()
        return np.arange(self.num_samples)

    def batch_rows(self, order: np.ndarray, index: int) -> np.ndarray:
        """The rows of batch `index` of the epoch whose row order is `order`: the one place
        an epoch is cut into batches (and a global batch between processes)."""
        return batch_rows(order, index, self.global_batch_size, self.rank, self.world)

    def __iter__(self) -> Iterator[np.ndarray]:
        order = self.order()
        for index in range(self.start, self.num_batches):
            yield self.batch_rows(order, index)


class LoaderBatches(Batches):
    """The batches of `TensorBatches`, gathered from host memory by a DataLoader and copied
    to `device`; the transform (augmentation) runs on the device batch.

    With `num_workers > 0` the worker processes live as long as this object (persistent
    workers) and serve one epoch at a time. `pin_memory` (CUDA only) gathers batches into
    page-locked memory, from which the copy to the device does not block the host.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        *,
        device: torch.device,
        num_workers: int = 0,
        pin_memory: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(inputs, targets, batch_size, **options)
        self._device = torch.device(device)
        self.sampler = EpochBatchSampler(self)
        self.loader = DataLoader(
            SplitRows(inputs, targets),
            batch_size=None,  # each item is already a batch
            sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            # Starting a pass draws a base seed for the workers: from this generator, not
            # the global one, which must draw what it would without a DataLoader.
            generator=torch.Generator().manual_seed(self.seed),
        )

    @property
    def device(self) -> torch.device:
        return self._device

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(epoch, start)
        for index, (inputs, targets) in enumerate(self.loader, start):
            # From pinned memory the copies run in the background; the batch's first use
            # on the device waits for them (same stream).
            inputs = inputs.to(self._device, non_blocking=True)
            targets = targets.to(self._device, non_blocking=True)
            if self.transform is not None:
                inputs = self.augment(inputs, epoch, index)
            yield inputs, targets


def choose_loader(setting: str, nbytes: int, device: torch.device, num_workers: int) -> str:
    """`tensors` or `dataloader` for `trainer.loader=setting`, with `nbytes` of data.

    `auto`: tensors, except on a CUDA device whose free memory is less than four times the
    data; it logs which and why.
    """
    if setting != "auto":
        return setting
    size = f"{nbytes / 2**20:,.1f} MiB of data"
    if device.type != "cuda":
        chosen, why = "tensors", f"the device is {device.type}: the {size} are sliced in place"
    else:
        free, _ = torch.cuda.mem_get_info(device)
        chosen = "tensors" if nbytes < DEVICE_SHARE * free else "dataloader"
        share = "under" if chosen == "tensors" else "over"
        why = f"the {size} are {share} a quarter of the {free / 2**20:,.0f} MiB free on {device}"
    if chosen == "tensors" and num_workers:
        why += f"; data.num_workers={num_workers} applies to trainer.loader=dataloader only"
    log.info(f"trainer.loader=auto: {chosen} ({why})")
    return chosen


def use_pin_memory(setting: bool | str, device: torch.device) -> bool:
    """Pin host batches only for a CUDA device (elsewhere there is nothing to gain)."""
    if setting == "auto":
        return device.type == "cuda"
    if setting and device.type != "cuda":
        log.warning(f"trainer.pin_memory=true does nothing on {device.type}: batches stay unpinned")
        return False
    return bool(setting)
