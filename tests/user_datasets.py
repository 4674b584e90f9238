"""Datasets of a user's own, for the docs' example and the tests (`data=dataset`)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset, IterableDataset


class DigitsDataset(Dataset):
    """scikit-learn's digits as (1x8x8 float image, class) pairs; `part` selects every
    item (all), or the first or last `size` items."""

    def __init__(self, flat: bool = False, noise: float = 0.0) -> None:
        digits = load_digits()
        self.images = torch.tensor(digits.images, dtype=torch.float32) / 16
        self.labels = digits.target.tolist()
        self.flat, self.noise = flat, noise

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index][None]
        if self.noise:  # random per item: trainlab seeds it by (seed, epoch, index)
            image = image + self.noise * torch.randn(image.shape)
        return (image.flatten() if self.flat else image), self.labels[index]


class NotPairs(Dataset):
    """Items that are not (input, target) pairs."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.zeros(4)


class Stream(IterableDataset):
    """An IterableDataset of `count` (features, class) pairs."""

    def __init__(self, count: int = 200) -> None:
        self.count = count

    def __iter__(self):
        generator = torch.Generator().manual_seed(0)
        for _ in range(self.count):
            features = torch.randn(4, generator=generator)
            yield features, int(features.sum() > 0)
