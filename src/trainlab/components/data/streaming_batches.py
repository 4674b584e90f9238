"""Batches of a streamed table, read from its preprocessed cache in an order fixed by
(seed, epoch).

Each split of a streamed table is a pair of `.npy` files (float32 inputs, targets) written
once by `streaming_table.py`. An epoch's order is a block shuffle: the file is cut into
blocks of about `BLOCK_BYTES`, the blocks are permuted by (seed, epoch), consecutive
permuted blocks are grouped into buffers of about `BUFFER_BYTES`, and the rows of each
buffer are permuted again by (seed, epoch, buffer). A buffer is read with a few file
reads (never a memory map, whose resident pages would grow with the file), and every
batch is gathered from one or two buffers. `batch_parts` is the one place
that cuts the epoch's order into batches.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainlab.components.data.datasets import DATA_INFO_FILE, DataInfo, training_batches
from trainlab.components.data.files import write_text_atomic
from trainlab.components.data.torch_datasets import count_batches
from trainlab.engine import distributed
from trainlab.engine.batches import Batches, epoch_order

BLOCK_BYTES = 64 * 1024
BUFFER_BYTES = 16 * 2**20
BUFFERS_KEPT = 2  # a batch may span two buffers


class SplitFile:
    """One split of the cache: `<name>_inputs.npy` (rows x width, float32) and
    `<name>_targets.npy`, read at offsets with `os.pread` (a file per process)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.paths = [directory / f"{name}_inputs.npy", directory / f"{name}_targets.npy"]
        self.headers = [_header(path) for path in self.paths]
        (self.rows, *_), _, _ = self.headers[0]
        self.offset = 0  # the first row of this part of the file (see `part`)
        self._files: dict[int, list[int]] = {}

    def part(self, offset: int, rows: int) -> SplitFile:
        """Rows `offset` .. `offset + rows` of this split, read from the same files."""
        view = copy.copy(self)
        view.offset, view.rows, view._files = self.offset + offset, rows, {}
        return view

    def __len__(self) -> int:
        return self.rows

    @property
    def nbytes(self) -> int:
        return sum(path.stat().st_size for path in self.paths)

    @property
    def targets(self) -> torch.Tensor:
        """Every target of the split (one column: small beside the inputs)."""
        return torch.from_numpy(self.read(0, self.rows)[1])

    def read(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows `start` .. `start + count` (inputs, targets)."""
        files = self._files.get(os.getpid())
        if files is None:  # a DataLoader worker opens its own
            files = [os.open(path, os.O_RDONLY) for path in self.paths]
            self._files = {os.getpid(): files}
        arrays = []
        for fd, (shape, dtype, offset) in zip(files, self.headers, strict=True):
            row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            begin = offset + (self.offset + start) * row
            out = np.empty((count, *shape[1:]), dtype=dtype)
            view = memoryview(out.reshape(-1).view(np.uint8))
            done = 0
            while done < len(view):
                got = os.preadv(fd, [view[done:]], begin + done)
                if got <= 0:
                    raise OSError(f"{self.paths[0].parent} ends early: remove it to rebuild")
                done += got
            arrays.append(out)
        return arrays[0], arrays[1]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}}


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        read = np.lib.format.read_array_header_1_0
        if version != (1, 0):
            read = np.lib.format.read_array_header_2_0
        shape, _, dtype = read(file)
        return tuple(shape), dtype, file.tell()


def write_header(file: Any, rows: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """The `.npy` header of an array of `rows` rows, whose rows follow as raw bytes."""
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": (rows, *shape),
    }
    np.lib.format.write_array_header_1_0(file, header)


class EpochLayout:
    """Blocks and buffers of one split (see the module): plain numbers, cheap to copy."""

    def __init__(self, rows: int, row_bytes: int, shuffle: bool, seed: int) -> None:
        self.rows, self.shuffle, self.seed = rows, shuffle, seed
        self.block_rows = max(1, BLOCK_BYTES // max(row_bytes, 1))
        self.blocks = -(-rows // self.block_rows)
        self.blocks_per_buffer = max(1, BUFFER_BYTES // (self.block_rows * max(row_bytes, 1)))
        self.buffers = -(-self.blocks // self.blocks_per_buffer)
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None

    def block_order(self, epoch: int) -> np.ndarray:
        """The blocks in the order `epoch` reads them."""
        return self._epoch(epoch)[0]

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is None or self._cached[0] != epoch:
            if self.shuffle:
                order = epoch_order(self.seed, epoch, self.blocks).numpy()
            else:
                order = np.arange(self.blocks)
            sizes = np.full(self.blocks, self.block_rows)
            sizes[-1] = self.rows - (self.blocks - 1) * self.block_rows
            ends = np.cumsum(sizes[order])[self.blocks_per_buffer - 1 :: self.blocks_per_buffer]
            if len(ends) < self.buffers:
                ends = np.append(ends, self.rows)
            self._cached = (epoch, order, np.concatenate([[0], ends]))
        return self._cached[1], self._cached[2]

    def buffer_blocks(self, epoch: int, buffer: int) -> np.ndarray:
        order = self.block_order(epoch)
        return order[buffer * self.blocks_per_buffer : (buffer + 1) * self.blocks_per_buffer]

    def block_size(self, block: int) -> int:
        return min(self.block_rows, self.rows - block * self.block_rows)

    def buffer_starts(self, epoch: int) -> np.ndarray:
        """The epoch position at which each buffer begins (and the end)."""
        return self._epoch(epoch)[1]

    def buffer_order(self, epoch: int, buffer: int, size: int) -> np.ndarray:
        """Positions within buffer `buffer` of `epoch` in the order batches take them."""
        if not self.shuffle:
            return np.arange(size)
        seed = np.random.SeedSequence([self.seed, epoch, 2, buffer]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(seed))
        return torch.randperm(size, generator=generator).numpy()


class StreamRows(Dataset):
    """Items are (epoch, batch index); each is the whole batch, read from its buffers."""

    def __init__(self, split: SplitFile, batches: StreamBatches) -> None:
        self.split, self.layout = split, batches.layout
        self.num_batches = batches.num_batches
        self.cut = batches.global_batch_size, batches.rank, batches.shard_world
        self._buffers: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.num_batches

    def buffer(self, epoch: int, buffer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows of a buffer as read (inputs, targets) and their batch order."""
        key = (epoch, buffer)
        if key not in self._buffers:
            layout = self.layout
            pieces = [
                self.split.read(block * layout.block_rows, layout.block_size(block))
                for block in layout.buffer_blocks(epoch, buffer)
            ]
            inputs = torch.from_numpy(np.concatenate([p[0] for p in pieces]))
            targets = torch.from_numpy(np.concatenate([p[1] for p in pieces]))
            order = torch.from_numpy(layout.buffer_order(epoch, buffer, len(inputs)))
            while len(self._buffers) >= BUFFERS_KEPT:
                self._buffers.pop(next(iter(self._buffers)))
            self._buffers[key] = (inputs, targets, order)
        return self._buffers[key]

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = item
        inputs, targets = [], []
        # One gather per buffer the batch touches (one, mostly): no per-row Python work.
        for buffer, positions in batch_parts(self.layout, *self.cut, epoch, index):
            data, labels, order = self.buffer(epoch, buffer)
            chosen = order[positions]
            inputs.append(torch.index_select(data, 0, chosen))
            targets.append(torch.index_select(labels, 0, chosen))
        if len(inputs) == 1:
            return inputs[0], targets[0]
        return torch.cat(inputs), torch.cat(targets)


def batch_parts(
    layout: EpochLayout,
    global_batch_size: int,
    rank: int,
    world: int,
    epoch: int,
    index: int,
) -> list[tuple[int, slice]]:
    """Where process `rank`'s part of batch `index` of `epoch` lies: (buffer, slice of
    that buffer's order) pieces.

    The one place the epoch's order is cut into batches: global batch `index` is the
    positions `index * global_batch_size` up to the next multiple of the epoch, cut
    between `world` processes by `distributed.shard_batch` (a contiguous run each)."""
    starts = layout.buffer_starts(epoch)
    batch = range(index * global_batch_size, min((index + 1) * global_batch_size, layout.rows))
    mine = distributed.shard_batch(batch, rank, world)
    first, last = mine.start, mine.stop
    parts = []
    buffer = int(np.searchsorted(starts, first, side="right")) - 1
    while first < last:
        end = min(last, int(starts[buffer + 1]))
        parts.append((buffer, slice(first - int(starts[buffer]), end - int(starts[buffer]))))
        first, buffer = end, buffer + 1
    return parts


class EpochSampler(Sampler[tuple[int, int]]):
    def __init__(self, num_batches: int) -> None:
        self.num_batches, self.epoch, self.start = num_batches, 0, 0

    def __len__(self) -> int:
        return max(self.num_batches - self.start, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in range(self.start, self.num_batches))


class StreamBatches(Batches):
    """The batches of a cached split (see the module), through a DataLoader whose
    `num_workers` processes read and gather whole batches; the same batches whatever
    their number. A `Batches` (the trainer takes it as it is, like `ItemBatches`), with
    its own storage: `Batches.__init__`, which holds tensors, is not called."""

    transform = None

    def __init__(
        self,
        split: SplitFile,
        batch_size: int,
        *,
        device: torch.device,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        limit: int | None = None,
        drop_last_single: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
        sharding: str = "contiguous",
        rank: int | None = None,
        world: int | None = None,
    ) -> None:
        # Several processes, as `Batches` shares them: training ("batches") cuts each
        # global batch of batch_size x processes rows between them; evaluation
        # ("contiguous") gives each a contiguous part of the split.
        self.rank = distributed.rank() if rank is None else rank
        self.world = distributed.world_size() if world is None else world
        if self.world > 1 and sharding == "contiguous":
            part = distributed.shard_batch(range(len(split)), self.rank, self.world)
            split = split.part(part.start, len(part))
        self.shard_world = self.world if sharding == "batches" else 1
        self.split, self.seed, self.shuffle = split, seed, shuffle
        self.global_batch_size, self.num_batches, self.drops_single = count_batches(
            len(split), batch_size, drop_last, drop_last_single, limit, self.shard_world
        )
        self.batch_size = max(1, min(batch_size, len(split)))
        inputs_shape, dtype, _ = split.headers[0]
        row_bytes = int(np.prod(inputs_shape[1:])) * dtype.itemsize
        self.layout = EpochLayout(len(split), row_bytes, shuffle, seed)
        self._device = torch.device(device)
        self.sampler = EpochSampler(self.num_batches)
        self.loader = DataLoader(
            StreamRows(split, self),
            batch_size=None,
            sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),  # not the global generator
        )

    def __len__(self) -> int:
        return self.num_batches

    @property
    def num_samples(self) -> int:
        return len(self.split)

    @property
    def device(self) -> torch.device:
        return self._device

    def row_numbers(self, epoch: int, index: int) -> np.ndarray:
        """This process's row numbers (of its part of the split) in batch `index` of
        `epoch`, in batch order."""
        rows = []
        cut = self.global_batch_size, self.rank, self.shard_world
        for buffer, positions in batch_parts(self.layout, *cut, epoch, index):
            blocks = self.layout.buffer_blocks(epoch, buffer)
            read = np.concatenate(
                [
                    np.arange(
                        b * self.layout.block_rows,
                        b * self.layout.block_rows + self.layout.block_size(b),
                    )
                    for b in blocks
                ]
            )
            order = self.layout.buffer_order(epoch, buffer, len(read))
            rows.append(read[order[positions]])
        return np.concatenate(rows)

    def example(self, count: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.split.read(0, min(count, len(self.split)))
        return torch.from_numpy(inputs).to(self._device), torch.from_numpy(targets).to(self._device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.epoch, self.sampler.start = epoch, start
        batches: Any = self.loader
        if self.loader.num_workers == 0 and not self.loader.pin_memory:
            # In this process, with nothing to pin: the DataLoader would only add its
            # per-batch bookkeeping to the same calls.
            rows = self.loader.dataset
            batches = (rows[key] for key in self.sampler)
        for inputs, targets in batches:
            yield (
                inputs.to(self._device, non_blocking=True),
                targets.to(self._device, non_blocking=True),
            )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)


class StreamingTable:
    """A streamed table as the experiment sees a `DataBundle`: its splits stay in the
    cache folder and batches are read from there (see `StreamBatches`)."""

    streams = True  # `place_data`: batches come from the cache, whatever trainer.loader

    def __init__(
        self,
        directory: Path,
        info: DataInfo,
        preprocessor: Any,
        batch_size: int | str = 64,
        eval_batch_size: int = 1024,
        shuffle: bool = True,
        drop_last: bool = False,
        num_workers: int = 0,
    ) -> None:
        self.directory, self.info, self.preprocessor = directory, info, preprocessor
        self.train, self.val, self.test = (
            SplitFile(directory, n) for n in ("train", "val", "test")
        )
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.shuffle, self.drop_last, self.num_workers = shuffle, drop_last, num_workers
        self.device, self.pin_memory = torch.device("cpu"), False
        self.train_transform = None

    @property
    def nbytes(self) -> int:
        return sum(split.nbytes for split in (self.train, self.val, self.test))

    def to(self, device: torch.device) -> StreamingTable:
        """Batches are read from the cache and moved to `device` one at a time."""
        self.device = torch.device(device)
        return self

    def stream_to(
        self, device: torch.device, num_workers: int = 0, pin_memory: bool = False
    ) -> StreamingTable:
        self.device, self.pin_memory = torch.device(device), pin_memory
        self.num_workers = self.num_workers or num_workers
        return self

    def save(self, run_dir: str | Path) -> None:
        write_text_atomic(Path(run_dir) / DATA_INFO_FILE, json.dumps(asdict(self.info), indent=2))
        self.preprocessor.save(run_dir)

    def train_batches(
        self, seed: int, limit: int | None = None, drop_last_single: bool = False
    ) -> StreamBatches:
        return training_batches(self, self.train, seed, limit, drop_last_single)

    def eval_batches(self, split: str, limit: int | None = None) -> StreamBatches:
        return self._batches(getattr(self, split), self.eval_batch_size, limit=limit)

    def _batches(self, split: SplitFile, batch_size: int, **options: Any) -> StreamBatches:
        return StreamBatches(
            split,
            batch_size,
            device=self.device,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            **options,
        )
