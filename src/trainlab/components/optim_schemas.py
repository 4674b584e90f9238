"""The settings of each shipped optimizer and schedule (beside `optim.py`, which imports torch).

The fields are the torch class's own arguments with torch's defaults, plus trainlab's
`decay_bias_and_norm` (optimizers) and `interval` / `monitor` (schedules, `optim.DRIVER_KEYS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainlab.errors import ConfigError
from trainlab.schema import spec


def unit_pair(value: Any) -> str | None:
    numbers = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if numbers and len(value) == 2 and all(0.0 <= v < 1.0 for v in value):
        return None
    return "must be two numbers in [0, 1), e.g. [0.9,0.999]"


@dataclass
class OptimizerSchema:
    # false: no weight decay on biases and normalisation scales (1-d parameters)
    decay_bias_and_norm: bool = spec(True)


@dataclass
class SGDSchema(OptimizerSchema):
    lr: float = spec(1e-3, gt=0.0)
    momentum: float = spec(0.0, ge=0.0, lt=1.0)
    dampening: float = spec(0.0, ge=0.0, le=1.0)
    nesterov: bool = spec(False)
    weight_decay: float = spec(0.0, ge=0.0)
    fused: bool | None = spec(None)  # null: torch's choice, not its fused kernel

    def cross_check(self, key: str) -> None:
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ConfigError(
                f"{key}.nesterov=true needs {key}.momentum > 0 and {key}.dampening=0, "
                f"e.g. {key}.momentum=0.9"
            )


@dataclass
class AdamSchema(OptimizerSchema):
    lr: float = spec(1e-3, gt=0.0)
    betas: list[float] = spec([0.9, 0.999], check=unit_pair)
    eps: float = spec(1e-8, gt=0.0)
    weight_decay: float = spec(0.0, ge=0.0)
    fused: bool | None = spec(None)  # null: torch's choice, not its fused kernel


@dataclass
class AdamWSchema(AdamSchema):
    weight_decay: float = spec(1e-2, ge=0.0)  # decoupled


@dataclass
class RMSpropSchema(OptimizerSchema):
    lr: float = spec(1e-2, gt=0.0)
    alpha: float = spec(0.99, ge=0.0, le=1.0)
    eps: float = spec(1e-8, gt=0.0)
    momentum: float = spec(0.0, ge=0.0, lt=1.0)
    centered: bool = spec(False)
    weight_decay: float = spec(0.0, ge=0.0)


# --- learning-rate schedules --------------------------------------------------------------
@dataclass
class SchedSchema:
    interval: str = spec("epoch", choices=("step", "epoch"))


@dataclass
class StepLRSchema(SchedSchema):
    step_size: int = spec(10, ge=1)
    gamma: float = spec(0.1, gt=0.0)


@dataclass
class ExponentialLRSchema(SchedSchema):
    gamma: float = spec(0.95, gt=0.0)


@dataclass
class CosineSchema(SchedSchema):
    warmup_epochs: float = spec(0.0, ge=0.0)
    eta_min: float = spec(0.0, ge=0.0)


@dataclass
class OneCycleSchema(SchedSchema):
    max_lr: float = spec(0.01, gt=0.0)
    pct_start: float = spec(0.3, gt=0.0, lt=1.0)
    anneal_strategy: str = spec("cos", choices=("cos", "linear"))
    div_factor: float = spec(25.0, gt=0.0)
    final_div_factor: float = spec(1e4, gt=0.0)


@dataclass
class PlateauSchema(SchedSchema):
    monitor: str = spec("val/loss")
    mode: str = spec("min", choices=("min", "max"))
    factor: float = spec(0.1, gt=0.0, lt=1.0)
    patience: int = spec(10, ge=0)
    threshold: float = spec(1e-4, ge=0.0)
    min_lr: float = spec(0.0, ge=0.0)


SCHEMAS: dict[str, type] = {
    "torch.optim.SGD": SGDSchema,
    "torch.optim.Adam": AdamSchema,
    "torch.optim.AdamW": AdamWSchema,
    "torch.optim.RMSprop": RMSpropSchema,
    "torch.optim.lr_scheduler.StepLR": StepLRSchema,
    "torch.optim.lr_scheduler.ExponentialLR": ExponentialLRSchema,
    "trainlab.components.optim.cosine_with_warmup": CosineSchema,
    "torch.optim.lr_scheduler.OneCycleLR": OneCycleSchema,
    "torch.optim.lr_scheduler.ReduceLROnPlateau": PlateauSchema,
}
