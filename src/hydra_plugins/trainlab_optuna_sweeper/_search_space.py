"""Hydra's sweep syntax to Optuna distributions, and sampled values back to overrides.

    interval(0.0, 0.5)               FloatDistribution(0.0, 0.5)
    tag(log, interval(1e-4, 1e-1))   FloatDistribution(1e-4, 1e-1, log=True)
    int(interval(16, 256))           IntDistribution(16, 256)   (add tag(log, ...) for log)
    range(1, 10, 3)                  IntDistribution(1, 7, step=3)   (the values 1, 4, 7)
    choice(a, b), a,b, glob(...)     CategoricalDistribution of the values as written
                                     (model=mlp,cnn; model.hidden_sizes=choice([128],[256,128]))

Anything else (key=value, ~key) is a fixed override passed to every trial as it is.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def split_overrides(
    overrides: list[str], parser: OverridesParser
) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(search space, fixed overrides), each keyed by the override's key; later keys win."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parser.parse_overrides(overrides):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line
    return space, fixed


def distribution(override: Override) -> BaseDistribution:
    value = override.value()
    key = override.get_key_element()
    try:
        if isinstance(value, IntervalSweep):
            log = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                return IntDistribution(value.start, value.end, log=log)
            return FloatDistribution(float(value.start), float(value.end), log=log)
        if isinstance(value, RangeSweep) and not value.shuffle:
            return _range(value)
    except ValueError as ex:  # Optuna's check of the bounds, e.g. a log range from 0
        raise ValueError(f"cannot search {override.input_line}: {ex}") from None
    if override.is_discrete_sweep():
        # The values as written, so each goes back into an override unchanged.
        return CategoricalDistribution(list(override.sweep_string_iterator()))
    raise ValueError(f"cannot search {key} with {override.input_line}")


def _range(sweep: RangeSweep) -> BaseDistribution:
    """range(start, stop, step) holds start, start+step, ... before stop (as Python's)."""
    start, stop, step = sweep.start, sweep.stop, sweep.step
    if step is None or step == 0 or (stop - start) * step <= 0:
        raise ValueError(f"range({start}, {stop}, {step}) holds no values")
    count = math.ceil((stop - start) / step)
    last = start + (count - 1) * step
    low, high = min(start, last), max(start, last)
    if all(isinstance(v, int) for v in (start, stop, step)):
        return IntDistribution(low, high, step=abs(step))
    return FloatDistribution(float(low), float(high), step=float(abs(step)))


def to_override(key: str, value: Any, dist: BaseDistribution) -> str:
    """The override that gives `key` the sampled `value`."""
    if isinstance(dist, CategoricalDistribution):
        return f"{key}={value}"  # written as in the search space
    return f"{key}={value!r}"


def to_config_value(value: Any, dist: BaseDistribution, parser: OverridesParser) -> Any:
    """The value a config gets for a sampled `value` (a choice is parsed back: "[256,128]")."""
    if isinstance(dist, CategoricalDistribution):
        return parser.parse_override(f"key={value}").value()
    return value


def quote(value: Any) -> str:
    """`value` (str, number, bool, None, or a list or dict of them) in override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # Inside quotes only a quote, and the backslashes right before one (or before the
        # closing quote), need escaping.
        escaped = re.sub(r"(\\+)(?='|$)", r"\1\1", value).replace("'", "\\'")
        return f"'{escaped}'"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{quote(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(quote(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} in an override")
