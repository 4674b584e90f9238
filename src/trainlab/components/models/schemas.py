"""The settings of each shipped model: defaults and ranges, checked before torch is imported.

Each model class's signature takes the same defaults (a test compares them).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainlab.errors import ConfigError
from trainlab.schema import positive_ints, spec

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu")


@dataclass
class MLPSchema:
    hidden_sizes: list[int] = spec([256, 128], check=positive_ints)
    activation: str = spec("relu", choices=ACTIVATIONS)
    dropout: float = spec(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = spec(False)


@dataclass
class CNNSchema:
    channels: list[int] = spec([32, 64], check=positive_ints)
    kernel_size: int = spec(3, ge=1)
    pooling: str = spec("max", choices=("max", "avg", "none"))
    batch_norm: bool = spec(True)
    dropout: float = spec(0.0, ge=0.0, lt=1.0)
    activation: str = spec("relu", choices=ACTIVATIONS)
    head: str = spec("avg", choices=("avg", "flatten"))


@dataclass
class TransformerSchema:
    d_model: int = spec(64, ge=1)
    nhead: int = spec(4, ge=1)
    num_layers: int = spec(2, ge=1)
    dim_feedforward: int = spec(128, ge=1)
    dropout: float = spec(0.1, ge=0.0, lt=1.0)
    activation: str = spec("gelu", choices=("relu", "gelu"))
    positional: str = spec("learned", choices=("learned", "sinusoidal"))
    pooling: str = spec("mean", choices=("mean", "cls"))
    image_tokens: str = spec("rows", choices=("rows", "patches"))
    patch_size: int = spec(2, ge=1)

    def cross_check(self, key: str) -> None:
        if self.d_model % self.nhead:
            divisors = [n for n in range(1, min(self.d_model, 16) + 1) if self.d_model % n == 0]
            raise ConfigError(
                f"{key}.d_model={self.d_model} is not divisible by {key}.nhead={self.nhead}; "
                f"pick nhead from {divisors} or change d_model"
            )


@dataclass
class RNNSchema:
    cell: str = spec("lstm", choices=("lstm", "gru"))
    embedding_dim: int = spec(64, ge=1)  # token data only
    hidden_size: int = spec(128, ge=1)
    num_layers: int = spec(1, ge=1)
    bidirectional: bool = spec(False)
    dropout: float = spec(0.0, ge=0.0, lt=1.0)


SCHEMAS: dict[str, type] = {
    "trainlab.components.models.MLP": MLPSchema,
    "trainlab.components.models.CNN": CNNSchema,
    "trainlab.components.models.Transformer": TransformerSchema,
    "trainlab.components.models.RNN": RNNSchema,
}
