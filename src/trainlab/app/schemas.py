"""The top-level settings of `train.yaml` (what to run, the seed, ...) and those of the run
modes beside training: cross-validation and the two finders."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trainlab.errors import ConfigError
from trainlab.schema import positive_ints, spec

MODES = ("train", "lr_find", "batch_size_find")


def seed_value(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32:
        return None
    return "must be an integer in [0, 2**32) or null (draw one)"


def run_name(value: Any) -> str | None:
    """A label that ends a run folder's name: one folder, not a path."""
    if isinstance(value, str) and value.strip(". ") and not re.search(r"[/\\\0]", value):
        return None
    return "must be a short label for the run folder's name, without '/', e.g. name=baseline"


def batch_sizes(value: Any) -> str | None:
    if value and positive_ints(value) is None:
        return None
    return "must be a list of positive integers to try, e.g. [32,64,128]"


@dataclass
class RunSchema:
    """The top-level settings of `train.yaml` besides the groups and the blocks below."""

    mode: str = spec("train", choices=MODES)
    seed: int | None = spec(42, check=seed_value)
    objective: str = spec("auto")  # a metric name: checked against the data's task
    name: str | None = spec(None, check=run_name)
    resume: str | None = spec(None)  # auto or a path: see `config.check_resume`


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
    candidates: list[int] = spec([16, 32, 64, 128, 256, 512, 1024, 2048], check=batch_sizes)
    steps: int = spec(5, ge=1)
    scale_lr: str = spec("none", choices=("none", "linear", "sqrt"))


@dataclass
class CVSchema:
    folds: int | None = spec(None, ge=2)
