"""Random shifts (pad and crop), horizontal flips and Gaussian noise for image batches, drawn
on the batch's own device."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ImageAugment:
    """Shift each image by up to `shift` pixels along each axis (zero fill: a random crop of
    the image padded by `shift`), mirror it left to right with probability 0.5 when `flip`,
    then add noise.

    Called on a whole batch of images (N, C, H, W) with the generator of that batch (see
    `TensorBatches`), so the same (seed, epoch, batch) always gets the same augmentation and
    no Python loop runs over the samples. `noise` is the standard deviation of the Gaussian
    noise added to the (already scaled) pixel values.
    """

    def __init__(self, shift: int = 0, noise: float = 0.0, flip: bool = False) -> None:
        if shift < 0 or noise < 0:
            raise ValueError(f"shift and noise must be >= 0, got shift={shift}, noise={noise}")
        self.shift, self.noise, self.flip = int(shift), float(noise), bool(flip)

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.noise > 0 or self.flip

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"ImageAugment takes (N, C, H, W) images, got shape {images.shape}")
        if self.shift:
            images = self._shift(images, generator)
        if self.flip:
            mirrored = torch.rand(len(images), generator=generator, device=images.device) < 0.5
            images = torch.where(mirrored[:, None, None, None], images.flip(-1), images)
        if self.noise:
            noise = torch.randn(
                images.shape, generator=generator, device=images.device, dtype=images.dtype
            )
            images = images + self.noise * noise
        return images

    def _shift(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = images.shape
        s, device = self.shift, images.device
        # One (down, right) offset per image in [-s, s]; pixel (i, j) of the result is
        # pixel (i - down, j - right) of the image, or zero where that falls outside it.
        down, right = torch.randint(-s, s + 1, (2, n, 1), generator=generator, device=device)
        padded = F.pad(images, (s, s, s, s))
        rows = torch.arange(h, device=device) + s - down  # (N, H) rows of `padded`
        cols = torch.arange(w, device=device) + s - right  # (N, W) columns of `padded`
        return padded[
            torch.arange(n, device=device)[:, None, None, None],
            torch.arange(c, device=device)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
