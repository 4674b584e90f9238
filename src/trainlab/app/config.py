"""Checks a composed config before any work starts: each node against its component's schema.

Hydra composes the YAML files in `configs/`; `validate(cfg)` then checks each node against
the schema registered for its `_target_` (`trainlab.schema.schema_for`; each schema lives
beside its component): every key known, every value of the right type and inside its
range. A node whose `_target_` is a user's own class has no schema and is checked by that
class when it is built. The first problem found is raised as a `ConfigError` whose message
names the key, the value and what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from trainlab.app.schemas import MODES, BatchSizeFindSchema, CVSchema, LRFindSchema
from trainlab.components.metrics import TASK_METRICS, metric_names
from trainlab.engine.schemas import TrainerSchema
from trainlab.errors import ConfigError, did_you_mean
from trainlab.schema import schema_for

INSTANTIATE_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def register_resolvers() -> None:
    """Resolvers the YAML files use; registered before Hydra composes."""
    if not OmegaConf.has_resolver("trainlab.suffix"):
        OmegaConf.register_new_resolver(
            "trainlab.suffix", lambda name: f"_{name}" if name not in (None, "") else ""
        )


# Groups whose node is one component built from `_target_` (null target: switched off).
COMPONENT_GROUPS = ("data", "model", "loss", "optim", "sched", "logger")
REQUIRED_GROUPS = ("data", "model", "loss", "optim")


def check_node(node: Any, key: str, schema: type) -> Any:
    """Check one config node against `schema`; return the typed dataclass instance.

    A field whose type is itself a schema (dataclass) is a nested block of keys, e.g.
    `data.augment.shift`, checked the same way.
    """
    plain = {k: v for k, v in node.items() if k not in INSTANTIATE_KEYS}
    for name, block in _blocks(schema).items():
        if name in plain and not isinstance(plain[name], (dict, DictConfig)):
            known = ", ".join(f.name for f in fields(block))
            raise ConfigError(
                f"{key}.{name}={plain[name]!r} must be a block of keys: {known} "
                f"(set one as {key}.{name}.<key>=...)"
            )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), plain)
    except ConfigKeyError as ex:
        *parents, bad = str(ex.full_key or ex.key).split(".")
        where = ".".join([key, *parents])
        known = [f.name for f in fields(_nested_schema(schema, parents))]
        raise ConfigError(
            f"unknown config key '{where}.{bad}'{did_you_mean(bad, known)}; "
            f"'{where}' takes: {', '.join(known) or 'no keys'}"
        ) from None
    except ValidationError as ex:
        # An item of a list field is reported by index (`hidden_sizes[0]`): name the field.
        name = re.sub(r"\[\d+\]", "", str(ex.full_key or ex.key))
        *parents, last = name.split(".")
        value: Any = plain
        for part in name.split("."):
            value = value.get(part) if hasattr(value, "get") else None
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value)
        spot = {f.name: f for f in fields(_nested_schema(schema, parents))}.get(last)
        check = spot.metadata.get("check") if spot is not None else None
        if check is not None and (problem := check(value)):
            raise ConfigError(f"{key}.{name}={value!r} has the wrong type: it {problem}") from None
        expected = _type_name(spot.type) if spot is not None else "another type"
        raise ConfigError(
            f"{key}.{name}={value!r} has the wrong type: expected {expected}"
        ) from None
    instance = OmegaConf.to_object(merged)
    _check_fields(instance, key)
    return instance


def _blocks(schema: type) -> dict[str, type]:
    """The fields of `schema` that are nested schemas, by name."""
    hints = get_type_hints(schema)
    return {f.name: hints[f.name] for f in fields(schema) if is_dataclass(hints[f.name])}


def _nested_schema(schema: type, path: list[str]) -> type:
    for part in path:
        schema = _blocks(schema)[part]
    return schema


def _check_fields(instance: Any, key: str) -> None:
    """Ranges of every field (nested blocks included), then the schema's own cross-check."""
    for f in fields(instance):
        value = getattr(instance, f.name)
        if is_dataclass(value):
            _check_fields(value, f"{key}.{f.name}")
        else:
            _check_range(f"{key}.{f.name}", value, f.metadata, f.default)
    if hasattr(instance, "cross_check"):
        instance.cross_check(key)


_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "None": "null",
    "list[int]": "a list of integers",
    "list[float]": "a list of numbers",
    "list[str]": "a list of strings",
}


def _type_name(annotation: Any) -> str:
    """A field's type in a user's words: `int | None` -> "an integer or null"."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    names = [_TYPE_NAMES.get(part.strip()) for part in text.split("|")]
    if not all(names):
        return f"a value of type {text}"
    optional = " (or null)" if "null" in names else ""
    return " or ".join(name for name in names if name != "null") + optional


def _check_range(key: str, value: Any, meta: Any, default: Any = MISSING) -> None:
    if value is None or not meta:
        return
    if meta.get("choices") and value not in meta["choices"]:
        options = ", ".join(str(c) for c in meta["choices"])
        raise ConfigError(
            f"{key}={value!r} is not allowed{did_you_mean(str(value), list(meta['choices']))}; "
            f"choose one of: {options}"
        )
    if meta.get("check") and (problem := meta["check"](value)):
        raise ConfigError(f"{key}={value!r} {problem}")
    bounds = (
        ("gt", ">", lambda v, b: v > b),
        ("ge", ">=", lambda v, b: v >= b),
        ("lt", "<", lambda v, b: v < b),
        ("le", "<=", lambda v, b: v <= b),
    )
    for name, symbol, ok in bounds:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            example = f", e.g. {key}={default:g}" if isinstance(default, (int, float)) else ""
            raise ConfigError(
                f"{key}={value!r} is out of range: it must be {symbol} {bound:g}{example}"
            )


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Check the whole composed config; return the checked settings, defaults filled in.

    The result maps each checked node's key (`trainer`, `cv`, `lr_find`, `batch_size_find`,
    a component group such as `optim`, `callbacks.<name>`) to its schema's instance.

    Metric names (`objective`, every `monitor`) are checked against those of any task
    here, and against the data's own task by `validate_metrics` once the data is loaded.
    """
    checked: dict[str, Any] = {}
    for group in REQUIRED_GROUPS:
        if cfg.get(group) is None or cfg[group].get("_target_") is None:
            raise ConfigError(f"'{group}' needs a _target_: pick an option, e.g. {group}=...")
    for group in COMPONENT_GROUPS:
        node = cfg.get(group)
        if node is not None and (schema := schema_for(node.get("_target_"))):
            checked[group] = check_node(node, group, schema)
    checked["trainer"] = check_node(cfg.trainer, "trainer", TrainerSchema)
    checked["cv"] = check_node(cfg.cv, "cv", CVSchema)
    checked["lr_find"] = check_node(cfg.lr_find, "lr_find", LRFindSchema)
    checked["batch_size_find"] = check_node(
        cfg.batch_size_find, "batch_size_find", BatchSizeFindSchema
    )
    if cfg.mode not in MODES:
        raise ConfigError(
            f"mode={cfg.mode!r} is not allowed{did_you_mean(str(cfg.mode), list(MODES))}; "
            f"choose one of: {', '.join(MODES)}"
        )
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and (schema := schema_for(node.get("_target_"))):
            checked[f"callbacks.{name}"] = check_node(node, f"callbacks.{name}", schema)

    check_resume(cfg)
    seed = cfg.get("seed")
    if seed is not None and not (isinstance(seed, int) and 0 <= seed < 2**32):
        raise ConfigError(f"seed={seed!r} must be an integer in [0, 2**32) or null (draw one)")
    # `auto` (the objective resolved for the data's task) stands until the data is loaded.
    any_task = sorted({n for task in TASK_METRICS for n in metric_names(task)}, key=_metric_order)
    _check_metric_names(cfg, ["auto", *any_task], "a logged metric")
    return checked


def check_resume(cfg: DictConfig) -> None:
    """`resume` is null, `auto` or a path, and only for a training run."""
    resume = cfg.get("resume")
    if resume is None:
        return
    if not isinstance(resume, str) or not resume:
        raise ConfigError(
            f"resume={resume!r} must be auto, a run folder, or a checkpoint file inside one"
        )
    if cfg.get("mode", "train") != "train":
        raise ConfigError(
            f"resume=... continues a training run; it does not apply to mode={cfg.mode}"
        )
    if cfg.get("cv") is not None and cfg.cv.get("folds"):
        raise ConfigError(
            "resume=... does not apply to cross-validation (cv.folds) yet; rerun the command"
        )


def validate_metrics(cfg: DictConfig, task: str) -> None:
    """Every `monitor` and the (resolved) objective must name a metric this task logs."""
    _check_metric_names(cfg, list(metric_names(task)), f"logged for a {task} task")


def _metric_order(name: str) -> tuple[int, str]:
    return ({"train": 0, "val": 1, "test": 2}[name.split("/")[0]], name)


def _check_metric_names(cfg: DictConfig, allowed: list[str], what: str) -> None:
    monitored = {"objective": cfg.objective}
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and "monitor" in node:
            monitored[f"callbacks.{name}.monitor"] = node.monitor
    if cfg.get("sched") is not None and "monitor" in cfg.sched:
        monitored["sched.monitor"] = cfg.sched.monitor
    for key, tag in monitored.items():
        if tag not in allowed:
            raise ConfigError(
                f"{key}={tag!r} is not {what}{did_you_mean(str(tag), allowed)}; "
                f"choose one of: {', '.join(allowed)}"
            )
