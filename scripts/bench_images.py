"""`python scripts/bench.py --image-folder`: data=image_folder's loader against a hand-written
DataLoader loop doing the same work.

The bench writes a folder of PNG files (`--image-count` images of `--image-size` pixels,
colour noise, 10 classes), then times one pass over the training split per round, the two
contenders taking turns:

    trainlab      `load_image_folder(...).train_batches(seed)`: per-item Pillow decoding in
                  `--image-workers` processes, the batch normalised and augmented (shift 4,
                  flip) on the device
    handwritten   a `Dataset` decoding with Pillow, `DataLoader(shuffle=True, workers,
                  persistent)`, the same normalisation and the same `ImageAugment` per batch

Reported: samples/s (median and min-max over the rounds after a warm-up round), the ratio
trainlab / handwritten, the time to the first batch of a fresh loader, and the one-off
cost of building the bundle (listing, header check, the statistics pass that decodes every
image once).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def write_folder(root: Path, count: int, size: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / f"class_{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"{index:06d}.png")
    return root


def handwritten_loader(files: list[tuple[str, int]], batch_size: int, workers: int, seed: int):
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    class Files(Dataset):
        def __len__(self) -> int:
            return len(files)

        def __getitem__(self, index: int):
            path, label = files[index]
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
            return torch.from_numpy(pixels.transpose(2, 0, 1).copy()), label

    return DataLoader(
        Files(),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def run(args: Any) -> dict[str, Any]:
    import torch

    from trainlab.components.data.augment import ImageAugment
    from trainlab.components.data.image_folder import load_image_folder

    count, size, workers, batch = args.image_count, args.image_size, args.image_workers, 64
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = write_folder(Path(tmp) / "images", count, size)
        started = time.perf_counter()
        data = load_image_folder(
            seed=0,
            path=str(root),
            augment={"shift": 4, "flip": True},
            num_workers=workers,
            batch_size=batch,
        ).stream_to(cpu, workers)
        build_s = time.perf_counter() - started
        train = data.train_batches(seed=0)
        files = list(zip(data.train.paths, data.train.labels, strict=True))
        mean, std = data.prepare.mean, data.prepare.std
        augment = ImageAugment(shift=4, flip=True)

        started = time.perf_counter()
        next(iter(data.train_batches(seed=0).epoch(0)))
        first = {"trainlab": time.perf_counter() - started}
        started = time.perf_counter()
        next(iter(handwritten_loader(files, batch, workers, 0)))
        first["handwritten"] = time.perf_counter() - started

        loader = handwritten_loader(files, batch, workers, 0)

        def trainlab_epoch(epoch: int) -> None:
            for inputs, targets in train.epoch(epoch):
                inputs.sum(), targets.sum()

        def handwritten_epoch(epoch: int) -> None:
            for index, (inputs, targets) in enumerate(loader):
                images = (inputs.float() / 255 - mean) / std
                generator = torch.Generator().manual_seed(epoch * 100003 + index)
                images = augment(images, generator)
                images.sum(), targets.sum()

        times: dict[str, list[float]] = {"trainlab": [], "handwritten": []}
        for round_index in range(args.warmup + args.rounds):
            for name, epoch in (("trainlab", trainlab_epoch), ("handwritten", handwritten_epoch)):
                started = time.perf_counter()
                epoch(round_index)
                if round_index >= args.warmup:
                    times[name].append(time.perf_counter() - started)
    rates = {name: [len(files) / t for t in values] for name, values in times.items()}
    result = {
        "images": count,
        "image_size": size,
        "workers": workers,
        "train_images": len(files),
        "samples_per_s": {n: statistics.median(r) for n, r in rates.items()},
        "range": {n: [min(r), max(r)] for n, r in rates.items()},
        "first_batch_s": first,
        "build_s": build_s,
    }
    result["ratio"] = result["samples_per_s"]["trainlab"] / result["samples_per_s"]["handwritten"]
    print(
        f"image folder: {count} PNG {size}x{size} colour, {workers} workers, batch {batch}, "
        f"{args.rounds} rounds"
    )
    for name in ("trainlab", "handwritten"):
        low, high = result["range"][name]
        print(
            f"  {name:12s} {result['samples_per_s'][name]:8.0f} samples/s ({low:.0f}-{high:.0f}), "
            f"first batch {first[name]:.2f} s"
        )
    print(f"  ratio trainlab / handwritten: {result['ratio']:.3f}")
    print(f"  building the bundle (list, headers, statistics pass): {build_s:.2f} s")
    return {"image_folder": result}
