"""Folders of image files (`data=image_folder data.path=DIR`), decoded with Pillow.

Items are uint8 (C, H, W) tensors, decoded in the DataLoader's workers (`data.num_workers`);
each batch is scaled to [0, 1] and normalised on the device (`Normalize`), where the
training augmentation (`ImageAugment`: shift, flip, noise) follows. The per-channel mean
and deviation are computed on the training split in one pass, which also decodes every
image of every split, so an unreadable file is named before training starts. The run
folder keeps them (`image_folder.json`) for `trainlab predict`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from trainlab.components.data.augment import ImageAugment
from trainlab.components.data.datasets import DataInfo
from trainlab.components.data.image_files import IMAGE_SUFFIXES, list_image_folder
from trainlab.components.data.own_dataset import build_node, cut_rows
from trainlab.components.data.torch_datasets import ItemBundle, worker_message
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

SETTINGS_FILE = "image_folder.json"
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def read_image(
    path: str | Path | BinaryIO, channels: int, size: tuple[int, int] | None
) -> torch.Tensor:
    """One image file as a uint8 (channels, height, width) tensor, resized to `size`
    (height, width) when given; an unreadable file is one line naming it."""
    try:
        with Image.open(path) as image:
            mode = "L" if channels == 1 else "RGB"
            if image.mode != mode:  # else convert would only copy it
                image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as ex:
        raise TrainlabError(
            f"cannot read the image {path} ({_reason(ex)}); fix or remove it"
        ) from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:120]


class ImageFiles(Dataset):
    """`(image, class index)` items of a list of files: uint8 (C, H, W) tensors."""

    draws_random_numbers = False  # reading an item needs no seeded generator

    def __init__(
        self, files: list[tuple[Path, int]], channels: int, size: tuple[int, int] | None
    ) -> None:
        self.paths = [str(path) for path, _ in files]  # strings: cheap to send to workers
        self.labels = [label for _, label in files]
        self.channels, self.size = channels, size

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def targets(self) -> torch.Tensor:
        return torch.as_tensor(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return read_image(self.paths[index], self.channels, self.size), self.labels[index]


class Normalize:
    """uint8 image batches to float32, scaled to [0, 1], then `(x - mean) / std` per channel,
    on the batch's device."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        # One multiply-add per pixel: x / 255 / std - mean / std.
        self.scale, self.shift = 1 / (255 * self.std), -self.mean / self.std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        device = images.device  # `.to` of a tensor already there returns it as it is
        return images.float().mul_(self.scale.to(device)).add_(self.shift.to(device))


def image_header(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and mode of an image, from its header (nothing decoded)."""
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as ex:
        raise TrainlabError(
            f"cannot read the image {path} ({_reason(ex)}); fix or remove it"
        ) from None


def check_headers(
    files: list[Path], image_size: tuple[int, int] | None, channels: int | None
) -> tuple[tuple[int, int], int]:
    """The (height, width) and channels the images become; mixed sizes without
    `data.image_size` are one line naming two files of different sizes."""
    first_path, (first_size, mode) = files[0], image_header(files[0])
    colour = mode not in GRAY_MODES
    for path in files[1:]:
        size, mode = image_header(path)
        colour = colour or mode not in GRAY_MODES
        if image_size is None and size != first_size:
            raise TrainlabError(
                f"images of different sizes: {first_path} is {first_size[0]}x{first_size[1]}, "
                f"{path} is {size[0]}x{size[1]} (width x height); set data.image_size=[H,W] "
                f"to resize them all, e.g. data.image_size=[{first_size[1]},{first_size[0]}]"
            )
    height_width = image_size or (first_size[1], first_size[0])
    return tuple(height_width), channels or (3 if colour else 1)


def channel_statistics(
    splits: dict[str, ImageFiles], num_workers: int
) -> tuple[list[float], list[float]]:
    """The per-channel mean and standard deviation of the training images (pixels scaled
    to [0, 1]), from one pass that decodes every image of every split."""
    total = count = squares = 0.0
    for name, dataset in splits.items():
        loader = DataLoader(dataset, batch_size=256, num_workers=num_workers)
        try:
            for images, _ in loader:
                if name != "train":
                    continue
                pixels = images.double().div_(255).transpose(0, 1).flatten(1)
                total = total + pixels.sum(1)
                squares = squares + (pixels * pixels).sum(1)
                count += pixels.shape[1]
        except TrainlabError as ex:
            raise TrainlabError(worker_message(ex)) from None
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    return mean.tolist(), [max(s, 1e-6) for s in std.tolist()]


def load_image_folder(
    seed: int,
    path: str,
    image_size: list[int] | None = None,
    channels: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    augment: dict[str, Any] | None = None,
    transform: Any = None,
    eval_transform: Any = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    num_workers: int = 0,
    fold: tuple[int, int] | None = None,
    **batching: Any,
) -> ItemBundle:
    """The images under `path` (see `image_files`), classes named by their folders."""
    transform = build_node(transform, "data.transform")
    eval_transform = build_node(eval_transform, "data.eval_transform")
    classes, found = list_image_folder(path)
    size = (image_size[0], image_size[1]) if image_size else None
    every_file = [file for files in found.values() for file, _ in files]
    size, channels = check_headers(every_file, size, channels)
    train_files = found["train"]
    labels = np.array([label for _, label in train_files])
    if fold is not None and "val" in found:
        raise TrainlabError(
            f"cv.folds cuts each fold's validation split from the training images, but "
            f"data.path={path} has val/: remove it (or cv.folds)"
        )
    rows, val_rows, test_rows = cut_rows(
        len(train_files),
        need_val="val" not in found,
        need_test="test" not in found,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        targets=labels,
        fold=fold,
    )

    def files(split: str, cut: np.ndarray | None) -> ImageFiles:
        chosen = found[split] if cut is None else [train_files[i] for i in cut]
        return ImageFiles(chosen, channels, size)

    splits = {"train": files("train", rows)}
    splits["val"] = files("val", None) if val_rows is None else files("train", val_rows)
    splits["test"] = files("test", None) if test_rows is None else files("train", test_rows)
    if mean is None or std is None:
        measured = channel_statistics(splits, num_workers)
        mean, std = mean or measured[0], std or measured[1]
    for key, values in (("data.mean", mean), ("data.std", std)):
        if len(values) != channels:
            raise TrainlabError(
                f"{key} has {len(values)} value(s) but the images have {channels} channel(s); "
                "give one per channel"
            )
    info = DataInfo(
        name=Path(path).name or "images",
        task="binary" if len(classes) == 2 else "multiclass",
        input_kind="image",
        input_shape=(channels, *size),
        num_classes=len(classes),
        class_names=classes,
    )
    settings = {"channels": channels, "image_size": list(size), "mean": mean, "std": std}
    augmentation = ImageAugment(**(augment or {}))
    log.info(
        f"image folder {path}: {len(classes)} classes, {len(splits['train'])} / "
        f"{len(splits['val'])} / {len(splits['test'])} train / val / test images of "
        f"{channels}x{size[0]}x{size[1]}"
    )
    return ItemBundle(
        **splits,
        info=info,
        seed=seed,
        num_workers=num_workers,
        transform=transform,
        eval_transform=eval_transform,
        train_transform=augmentation if augmentation.active else None,
        prepare=Normalize(mean, std),
        files={SETTINGS_FILE: json.dumps(settings, indent=2)},
        item_bytes=channels * size[0] * size[1],
        **batching,
    )


def read_settings(run_dir: Path) -> dict[str, Any]:
    """The image settings an image-folder run saved, checked (plain JSON)."""
    file = run_dir / SETTINGS_FILE
    try:
        settings = json.loads(file.read_text())
        channels, size = int(settings["channels"]), [int(v) for v in settings["image_size"]]
        mean, std = [float(v) for v in settings["mean"]], [float(v) for v in settings["std"]]
        if channels not in (1, 3) or len(size) != 2 or channels not in (len(mean), len(std)):
            raise ValueError("values out of range")
    except (OSError, ValueError, KeyError, TypeError) as ex:
        raise TrainlabError(
            f"{file} cannot be read as an image run's settings ({_reason(ex)}); point at a "
            "run folder trained with data=image_folder, or retrain it"
        ) from None
    return {"channels": channels, "image_size": size, "mean": mean, "std": std}


class ImageInput:
    """Image files for `trainlab predict` on an image-folder run: decoded, resized and
    normalised with the settings training saved (`image_folder.json`)."""

    def __init__(self, run_dir: Path) -> None:
        settings = read_settings(run_dir)
        self.channels, self.size = settings["channels"], tuple(settings["image_size"])
        self.normalize = Normalize(settings["mean"], settings["std"])

    @property
    def takes(self) -> str:
        return "an image file (.png, .jpg, .jpeg) or a folder of them"

    def read(self, path: Path, what: str) -> Any:
        """The image files at `path` (a file, or a folder searched through, sorted) as a
        table with one column, `file`."""
        import pandas as pd

        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise TrainlabError(
                    f"{what}={path}: the folder holds no images; it needs {self.takes}"
                )
        elif path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            files = [path]
        else:
            raise TrainlabError(f"{what}={path}: not found or not an image; it needs {self.takes}")
        return pd.DataFrame({"file": [str(f) for f in files]})

    def encode(self, inputs: Any, where: str) -> torch.Tensor:
        """Files (a table with a `file` column, or a list of paths), or uint8 images
        (N, C, H, W) of the run's size, as the normalised batch the model takes."""
        if hasattr(inputs, "columns"):
            inputs = list(inputs["file"])
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        if isinstance(inputs, (list, tuple)):
            if not inputs:
                raise TrainlabError(f"{where} holds no images")
            images = torch.stack([read_image(Path(f), self.channels, self.size) for f in inputs])
        else:
            images = torch.as_tensor(np.asarray(inputs))
            expected = (self.channels, *self.size)
            if images.ndim != 4 or tuple(images.shape[1:]) != expected:
                raise TrainlabError(
                    f"{where} has shape {tuple(images.shape)}; this run takes image files or "
                    f"uint8 images (N, {', '.join(map(str, expected))})"
                )
        return self.normalize(images)
