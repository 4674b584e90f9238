"""The settings of each shipped loss (beside `losses.py`, which imports torch).

`l1` and `class_weight` are trainlab's (see `losses.DRIVER_KEYS`); the rest are the torch
loss's own arguments, with torch's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainlab.schema import spec


def class_weight(value: Any) -> str | None:
    if value is None or value == "balanced":
        return None
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return None
    return "must be null, 'balanced', or a list of positive numbers (one per class)"


@dataclass
class LossSchema:
    l1: float = spec(0.0, ge=0.0)  # L1 penalty on weights, added to the training loss


@dataclass
class CrossEntropySchema(LossSchema):
    label_smoothing: float = spec(0.0, ge=0.0, le=1.0)
    class_weight: Any = spec(None, check=class_weight)


@dataclass
class BCESchema(LossSchema):
    class_weight: Any = spec(None, check=class_weight)


@dataclass
class HuberSchema(LossSchema):
    delta: float = spec(1.0, gt=0.0)


SCHEMAS: dict[str, type] = {
    "torch.nn.CrossEntropyLoss": CrossEntropySchema,
    "trainlab.components.losses.BCEWithLogitsLoss": BCESchema,
    "torch.nn.MSELoss": LossSchema,
    "torch.nn.L1Loss": LossSchema,
    "torch.nn.HuberLoss": HuberSchema,
}
