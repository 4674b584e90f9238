"""The settings of the run modes beside training: cross-validation and the two finders."""

from __future__ import annotations

from dataclasses import dataclass

from trainlab.errors import ConfigError
from trainlab.schema import positive_ints, spec

MODES = ("train", "lr_find", "batch_size_find")


@dataclass
class LRFindSchema:
    min_lr: float = spec(1e-7, gt=0.0)
    max_lr: float = spec(10.0, gt=0.0)
    num_steps: int = spec(200, ge=10)

    def cross_check(self, key: str) -> None:
        if self.min_lr >= self.max_lr:
            raise ConfigError(f"{key}.min_lr={self.min_lr:g} must be below {key}.max_lr")


@dataclass
class BatchSizeFindSchema:
    candidates: list[int] = spec([16, 32, 64, 128, 256, 512, 1024, 2048], check=positive_ints)
    steps: int = spec(5, ge=1)
    scale_lr: str = spec("none", choices=("none", "linear", "sqrt"))


@dataclass
class CVSchema:
    folds: int | None = spec(None, ge=2)
