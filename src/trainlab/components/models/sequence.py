"""What the sequence models (Transformer, RNN) share: turning images into sequences."""

from __future__ import annotations

import torch


def image_rows(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images as sequences of H rows, each row's C*W pixels one vector."""
    n, c, h, w = images.shape
    return images.permute(0, 2, 1, 3).reshape(n, h, c * w)


def last_positions(padding: torch.Tensor) -> torch.Tensor:
    """Length of each right-padded sequence: one past its last non-padding token (at least 1).

    `padding` is True at padding positions. A padding id inside a sequence counts as a token,
    so only the padding at the end is ignored.
    """
    positions = torch.arange(1, padding.shape[1] + 1, device=padding.device)
    return (positions * ~padding).amax(dim=1).clamp(min=1)
