"""How a component states its settings: one dataclass per component, its fields' defaults
and ranges declared with `spec`, registered by the `_target_` the config names it with.

Every layer may import this module (it imports neither torch, Hydra nor the application),
so each schema lives beside its component, in a torch-free module of the component's
package. `app/config.py` walks a composed config and checks each node against
`schema_for(node._target_)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import MISSING, field
from functools import cache
from typing import Any

# The modules holding the shipped components' schemas, each with a `SCHEMAS` dict of
# `_target_` -> schema. None of them imports torch: config errors are reported without it.
SCHEMA_MODULES = (
    "trainlab.components.data.schemas",
    "trainlab.components.models.schemas",
    "trainlab.components.losses_schemas",
    "trainlab.components.optim_schemas",
    "trainlab.components.callbacks.schemas",
    "trainlab.components.loggers_schemas",
)


def spec(
    default: Any = MISSING,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[Any, ...] | None = None,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A schema field: its default plus the range or names it must stay within.

    `check(value)` returns None for a good value, else what the value must be
    ("must be a list of positive integers, e.g. [256,128]").
    """
    meta = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@cache
def all_schemas() -> dict[str, type]:
    """Every shipped component's schema, by the `_target_` that names the component."""
    merged: dict[str, type] = {}
    for name in SCHEMA_MODULES:
        merged.update(importlib.import_module(name).SCHEMAS)
    return merged


def schema_for(target: Any) -> type | None:
    """The schema of the component `target` names; None for a user's own class."""
    return all_schemas().get(target) if isinstance(target, str) else None


def is_count(value: Any) -> bool:
    """A positive integer (`True` is an int to Python, not a count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def positive_ints(value: Any) -> str | None:
    if isinstance(value, (list, tuple)) and all(is_count(v) for v in value):
        return None
    return "must be a list of positive integers, e.g. [256,128]"


def auto_or_bool(value: Any) -> str | None:
    if value == "auto" or isinstance(value, bool):
        return None
    return "must be one of: auto, true, false"


def auto_or_count(value: Any) -> str | None:
    if value == "auto" or is_count(value):
        return None
    return "must be auto or a positive integer, e.g. 4"


def batch_size(value: Any) -> str | None:
    if value == "full" or is_count(value):
        return None
    return "must be a positive integer or 'full' (full-batch gradient descent)"
