"""What `POST /predict` takes for an image-folder run (`data=image_folder`): base64 PNG or
JPEG images of any size, decoded, converted and resized exactly as `trainlab predict`
reads image files (`read_image`), then normalised by the run's `ImageInput`."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from trainlab.app.serve_requests import RequestError, _field, image_bytes
from trainlab.components.data.image_folder import ImageInput, read_image
from trainlab.errors import TrainlabError


class ImageFolderRequests:
    """Images of an image-folder run, one base64 PNG / JPEG file per item."""

    kind = "image"

    def __init__(self, inputs: ImageInput) -> None:
        self.inputs = inputs

    def describe(self) -> dict[str, Any]:
        height, width = self.inputs.size
        return {
            "kind": self.kind,
            "item": f"a base64 PNG or JPEG image (any size: resized to {width}x{height} pixels, "
            f"{self.inputs.channels} channel{'s' * (self.inputs.channels > 1)})",
            "shape": [self.inputs.channels, height, width],
        }

    def check(self, items: list[Any], batch: bool) -> list[torch.Tensor]:
        return [self.image(item, _field(batch, at)) for at, item in enumerate(items)]

    def image(self, item: Any, where: str) -> torch.Tensor:
        data = image_bytes(item, where)
        try:
            return read_image(io.BytesIO(data), self.inputs.channels, self.inputs.size)
        except TrainlabError:
            raise RequestError(f"{where}: not a readable PNG or JPEG image") from None

    def encode(self, items: list[torch.Tensor], where: str) -> torch.Tensor:
        return self.inputs.encode(np.stack([item.numpy() for item in items]), where)
