"""A convolutional network for images: conv blocks from the config, then a small head."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from trainlab.components.models.mlp import ACTIVATIONS

POOLING: dict[str, type[nn.Module] | None] = {
    "max": nn.MaxPool2d,
    "avg": nn.AvgPool2d,
    "none": None,
}
HEADS = ("avg", "flatten")


class CNN(nn.Module):
    """[Conv2d -> BatchNorm? -> activation -> pool? -> Dropout?] per entry of `channels` -> head.

    Convolutions keep the spatial size (padding="same"); each block then halves it with a
    2x2 `pooling` window, skipped once a side is down to 1 pixel, so small images such as
    the 8x8 digits never shrink below 1x1. The head is global average pooling + Linear
    (`head: avg`) or Flatten + Linear over the last feature map (`head: flatten`).
    """

    input_kinds = ("image",)

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        pooling: str = "max",
        batch_norm: bool = True,
        dropout: float = 0.0,
        activation: str = "relu",
        head: str = "avg",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}"
            )
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {', '.join(POOLING)}, got {pooling!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        width, height_width = input_shape[0], list(input_shape[1:])
        layers: list[nn.Module] = []
        for size in channels:
            # A bias before batch norm is cancelled by its mean subtraction.
            layers.append(nn.Conv2d(width, size, kernel_size, padding="same", bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(size))
            layers.append(ACTIVATIONS[activation]())
            pool = POOLING[pooling]
            if pool is not None and min(height_width) >= 2:
                # ceil_mode: an odd side keeps its last row / column (3 -> 2, not 1).
                layers.append(pool(2, ceil_mode=True))
                height_width = [math.ceil(side / 2) for side in height_width]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.features = nn.Sequential(*layers)
        if head == "avg":
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_outputs)
            )
        else:
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(width * math.prod(height_width), num_outputs)
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))
