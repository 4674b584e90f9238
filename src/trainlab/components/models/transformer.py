"""A small Transformer encoder classifier for token sequences and for images.

Tokens are embedded (the padding id has its own zero embedding and is masked out of
attention and pooling); an image becomes a sequence of its rows (`image_tokens: rows`) or
of `patch_size` x `patch_size` patches (`image_tokens: patches`), each projected to
`d_model`. Positions are learned or sinusoidal; the sequence is summarised by the mean of
its non-padding positions or by a prepended [CLS] vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from trainlab.components.models.sequence import image_rows
from trainlab.errors import ConfigError

POSITIONAL = ("learned", "sinusoidal")
POOLING = ("mean", "cls")
IMAGE_TOKENS = ("rows", "patches")


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """The fixed sine / cosine position table of "Attention Is All You Need": (length, d_model)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * -math.log(1e4) / d_model
    )
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class Transformer(nn.Module):
    """Embed -> + positions -> [CLS]? -> TransformerEncoder (pre-norm) -> pool -> Linear."""

    input_kinds = ("tokens", "image")

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        input_kind: str,
        vocab_size: int | None = None,
        padding_idx: int = 0,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
        activation: str = "gelu",
        positional: str = "learned",
        pooling: str = "mean",
        image_tokens: str = "rows",
        patch_size: int = 2,
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("positional", positional, POSITIONAL),
            ("pooling", pooling, POOLING),
            ("image_tokens", image_tokens, IMAGE_TOKENS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        self.input_kind, self.padding_idx, self.pooling = input_kind, padding_idx, pooling
        self.image_tokens = image_tokens
        if input_kind == "tokens":
            if vocab_size is None:
                raise ConfigError("model=transformer on tokens needs the data's vocab_size")
            self.embed: nn.Module = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
            length = input_shape[0]
        elif image_tokens == "rows":
            channels, height, width = input_shape
            self.embed = nn.Linear(channels * width, d_model)
            length = height
        else:
            channels, height, width = input_shape
            if height % patch_size or width % patch_size:
                side = math.gcd(height, width)
                fits = [size for size in range(1, side + 1) if side % size == 0]
                raise ConfigError(
                    f"model.patch_size={patch_size} does not divide the {height}x{width} "
                    f"images; pick one of {fits}"
                )
            # A strided convolution embeds each patch on its own (as in ViT).
            self.embed = nn.Conv2d(channels, d_model, patch_size, stride=patch_size)
            length = (height // patch_size) * (width // patch_size)

        if positional == "learned":
            self.positions = nn.Parameter(torch.zeros(1, length, d_model))
            nn.init.normal_(self.positions, std=0.02)
        else:
            self.register_buffer(
                "positions", sinusoidal_positions(length, d_model).unsqueeze(0), persistent=False
            )
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model,
            nhead,
            dim_feedforward,
            dropout,
            activation=activation,
            batch_first=True,
            norm_first=True,
        )
        # Pre-norm layers leave the last output unnormalised: one LayerNorm at the end.
        # Nested tensors do not apply to pre-norm layers (and would only warn).
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.head = nn.Linear(d_model, num_outputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        padding = None
        if self.input_kind == "tokens":
            padding = inputs == self.padding_idx  # True where a position is padding
            # A sequence of padding only would leave attention nothing to attend to.
            padding[:, 0] &= ~padding.all(dim=1)
            x = self.embed(inputs)
        elif self.image_tokens == "rows":
            x = self.embed(image_rows(inputs))
        else:
            x = self.embed(inputs).flatten(2).transpose(1, 2)  # (N, patches, d_model)
        length = x.shape[1]
        if length > self.positions.shape[1]:
            raise ValueError(
                f"sequences of {length} tokens, but the model was built for at most "
                f"{self.positions.shape[1]}"
            )
        x = x + self.positions[:, :length]
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
            if padding is not None:
                padding = torch.cat([padding.new_zeros(x.shape[0], 1), padding], dim=1)
        x = self.encoder(self.dropout(x), src_key_padding_mask=padding)
        if self.cls is not None:
            pooled = x[:, 0]
        elif padding is None:
            pooled = x.mean(dim=1)
        else:
            keep = (~padding).unsqueeze(-1).to(x.dtype)
            pooled = (x * keep).sum(dim=1) / keep.sum(dim=1)
        return self.head(pooled)
