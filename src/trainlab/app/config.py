"""Checks a composed config before any work starts: each node against its component's schema.

Hydra composes the YAML files in `configs/`; `validate(cfg)` then checks each node against
the schema registered for its `_target_` (`trainlab.schema.schema_for`; each schema lives
beside its component): every key known, every value of the right type and inside its
range. A node whose `_target_` is a user's own class has no schema and is checked by that
class when it is built. The first problem found is raised as a `ConfigError` whose message
names the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import types
from dataclasses import fields, is_dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ConfigTypeError, ValidationError

from trainlab.app.help import OPTIONAL_GROUPS
from trainlab.app.schemas import BatchSizeFindSchema, CVSchema, LRFindSchema, RunSchema
from trainlab.app.sweeps.optuna_study import TRIAL_KEY
from trainlab.components.metrics import TASK_METRICS, metric_names
from trainlab.engine.schemas import TrainerSchema
from trainlab.errors import ConfigError, did_you_mean, listing
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
GROUPS = (*COMPONENT_GROUPS, "trainer", "callbacks", "paths")
# The top level of train.yaml besides its groups: RunSchema's settings and the run modes'
# blocks; plus Hydra's own node and the key a job of an Optuna search carries.
RUN_KEYS = tuple(f.name for f in fields(RunSchema))
MODE_BLOCKS = ("cv", "lr_find", "batch_size_find")
TOP_LEVEL = (*GROUPS, *RUN_KEYS, *MODE_BLOCKS)


def check_top_level(cfg: DictConfig) -> None:
    """Every top-level key is one train.yaml has: `+foo=1` is a mistake, not a setting."""
    for key in cfg:
        if key in TOP_LEVEL or key in ("hydra", TRIAL_KEY):
            continue
        if key in OPTIONAL_GROUPS:  # an option file without its package line lands here
            raise ConfigError(
                f"the settings of your {key}=... option landed under '{key}:', where nothing "
                f"reads them; make '# @package _global_' the first line of its {key}/*.yaml"
            )
        raise ConfigError(
            f"unknown config key '{key}'{did_you_mean(str(key), list(TOP_LEVEL))}; "
            f"the top level takes: {', '.join(TOP_LEVEL)}"
        )


# Nodes found good in this process, by schema, place and values: a sweep's jobs differ in
# a few values, and OmegaConf's merge into the schema is most of a job's config check.
_CHECKED: dict[tuple[type, str, Any], Any] = {}
_CHECKED_KEPT = 256


def check_node(node: Any, key: str, schema: type) -> Any:
    """Check one config node against `schema`; return the typed dataclass instance.

    A field whose type is itself a schema (dataclass) is a nested block of keys, e.g.
    `data.augment.shift`, checked the same way. `key` is the node's place in the config
    ("" for the top level). The checks depend on nothing but the node's values, so a node
    checked before with the same values (types included) gets a copy of that result.
    """
    try:
        seen = (schema, key, _frozen(node))
    except Exception:  # an interpolation that does not resolve: the check says what
        seen = None
    if seen is not None and seen in _CHECKED:
        return copy.deepcopy(_CHECKED[seen])
    instance = _check_node(node, key, schema)
    if seen is not None:
        if len(_CHECKED) >= _CHECKED_KEPT:
            _CHECKED.pop(next(iter(_CHECKED)))
        _CHECKED[seen] = copy.deepcopy(instance)
    return instance


def _frozen(value: Any) -> Any:
    """`value` (a node with its interpolations resolved) as a hashable key that tells
    `1`, `1.0`, `true` and `"1"` apart."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return ("dict", tuple((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_frozen(v) for v in value))
    return (type(value).__name__, repr(value))


def _check_node(node: Any, key: str, schema: type) -> Any:
    if not isinstance(node, (dict, DictConfig)):
        known = ", ".join(f.name for f in fields(schema))
        raise ConfigError(
            f"{key}={_shown(node)} must be a block of keys: {known} (set one as {key}.<key>=...)"
        )
    plain = {k: v for k, v in node.items() if k not in INSTANTIATE_KEYS}
    _check_types(plain, key, schema)
    try:
        merged = OmegaConf.merge(_structured(schema), plain)
    except ConfigKeyError as ex:
        *parents, bad = str(ex.full_key or ex.key).split(".")
        where = _join(key, *parents)
        known = [f.name for f in fields(_nested_schema(schema, parents))]
        hint = did_you_mean(bad, known)  # else, what the node takes
        takes = "" if hint else f"; '{where}' takes: {listing(known, 10) or 'no keys'}"
        raise ConfigError(f"unknown config key '{_join(where, bad)}'{hint}{takes}") from None
    except (ValidationError, ConfigTypeError) as ex:
        # An item of a list field is reported by index (`hidden_sizes[0]`): name the field.
        # A block given to a list field comes without a key: the field holding a block.
        name = re.sub(r"\[\d+\]", "", str(ex.full_key or ex.key or ""))
        if name in ("", "None"):  # the block given to a list field, not one a field takes
            blocks = [k for k, v in plain.items() if isinstance(v, (dict, DictConfig))]
            name = next((k for k in blocks if _takes_a_list(schema, k)), blocks[0])
        *parents, last = name.split(".")
        value: Any = plain
        for part in name.split("."):
            value = value.get(part) if hasattr(value, "get") else None
        spot = {f.name: f for f in fields(_nested_schema(schema, parents))}[last]
        hint = get_type_hints(_nested_schema(schema, parents))[last]
        raise _wrong_type(_join(key, name), value, spot, hint) from None
    instance = OmegaConf.to_object(merged)
    _check_fields(instance, key)
    return instance


@functools.cache
def _structured(schema: type) -> DictConfig:
    """`OmegaConf.structured(schema)`, made once a process (a sweep checks many configs):
    `OmegaConf.merge` copies it before merging into it."""
    return OmegaConf.structured(schema)


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def _check_types(plain: Any, key: str, schema: type) -> None:
    """The types OmegaConf would convert without a word: a boolean is never a number or a
    string (`seed=true` is not seed 1), and only a boolean is a boolean (`shuffle=-5` is not
    true). A value of another type is left to OmegaConf's own check."""
    hints = get_type_hints(schema)
    for spot in fields(schema):
        if spot.name not in plain:
            continue
        value, hint = plain[spot.name], hints[spot.name]
        if is_dataclass(hint):
            if not isinstance(value, (dict, DictConfig)):
                known = ", ".join(f.name for f in fields(hint))
                raise ConfigError(
                    f"{_join(key, spot.name)}={_shown(value)} must be a block of keys: {known} "
                    f"(set one as {_join(key, spot.name)}.<key>=...)"
                )
            _check_types(value, _join(key, spot.name), hint)
        elif not _strictly_fits(value, hint):
            raise _wrong_type(_join(key, spot.name), value, spot, hint)


def _strictly_fits(value: Any, hint: Any) -> bool:
    allowed = [t for t in _alternatives(hint) if t is not type(None)]
    if value is None or Any in allowed:
        return True  # null: OmegaConf knows which fields take it; Any: the field's check
    if isinstance(value, bool):
        return bool in allowed
    if bool in allowed:
        return False
    if isinstance(value, (list, tuple, ListConfig)):
        items = [get_args(t)[0] for t in allowed if get_origin(t) is list and get_args(t)]
        return all(_strictly_fits(item, items[0]) for item in value) if items else True
    return True


def _alternatives(hint: Any) -> tuple[Any, ...]:
    return get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)


def _wrong_type(key: str, value: Any, spot: Any, hint: Any) -> ConfigError:
    check = spot.metadata.get("check")
    if check is not None and (problem := check(_plain(value))):
        return ConfigError(f"{key}={_shown(value)} has the wrong type: it {problem}")
    return ConfigError(f"{key}={_shown(value)} has the wrong type: expected {_type_name(hint)}")


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value)
    return value


def _shown(value: Any) -> str:
    """A value as the message shows it, cut short if long."""
    text = "null" if value is None else repr(_plain(value))
    return text if len(text) <= 60 else f"{text[:57]}..."


def _takes_a_list(schema: type, name: str) -> bool:
    """Whether field `name` of `schema` takes a list (or a tuple), perhaps or null."""
    hint = get_type_hints(schema).get(name)
    return any(
        h in (list, tuple) or get_origin(h) in (list, tuple) for h in (hint, *get_args(hint))
    )


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
    hints = get_type_hints(type(instance))
    for f in fields(instance):
        value = getattr(instance, f.name)
        if is_dataclass(value):
            _check_fields(value, _join(key, f.name))
        else:
            _check_range(_join(key, f.name), value, f, hints[f.name])
    if hasattr(instance, "cross_check"):
        instance.cross_check(key)


# A type in a user's words, alone and in a list.
_TYPE_NAMES = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
    str: ("a string", "strings"),
}


def _type_name(hint: Any) -> str:
    """A field's type in a user's words: `int | None` -> "an integer (or null)"."""
    names = []
    for option in _alternatives(hint):
        if option is type(None):
            continue
        if get_origin(option) is list:
            item = (*get_args(option), None)[0]
            names.append(f"a list of {_TYPE_NAMES[item][1]}" if item in _TYPE_NAMES else "a list")
        else:
            names.append(_TYPE_NAMES.get(option, ("another type",))[0])
    optional = " (or null)" if type(None) in _alternatives(hint) else ""
    return " or ".join(names) + optional


def _check_range(key: str, value: Any, spot: Any, hint: Any) -> None:
    meta = spot.metadata
    if value is None:
        if type(None) in _alternatives(hint) or Any not in _alternatives(hint):
            return  # a field typed Optional takes null; OmegaConf refused it for the others
        if meta.get("check") and (problem := meta["check"](value)):
            raise ConfigError(f"{key}=null {problem}")
        return
    if _has_non_finite(value):
        example = f", e.g. {key}={spot.default:g}" if _is_number(spot.default) else ""
        alternative = " (or null)" if type(None) in _alternatives(hint) else ""
        what = (
            "holds a number that is not finite"
            if isinstance(value, list)
            else ("is not a finite number")
        )
        raise ConfigError(
            f"{key}={_shown(value)} {what}: give a finite value{alternative}{example}"
        )
    if meta.get("choices") and value not in meta["choices"]:
        options = ", ".join(str(c) for c in meta["choices"])
        raise ConfigError(
            f"{key}={value!r} is not allowed{did_you_mean(str(value), list(meta['choices']))}; "
            f"choose one of: {options}"
        )
    if meta.get("check") and (problem := meta["check"](value)):
        raise ConfigError(f"{key}={_shown(value)} {problem}")
    bounds = (
        ("gt", ">", lambda v, b: v > b),
        ("ge", ">=", lambda v, b: v >= b),
        ("lt", "<", lambda v, b: v < b),
        ("le", "<=", lambda v, b: v <= b),
    )
    for name, symbol, ok in bounds:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            example = f", e.g. {key}={spot.default:g}" if _is_number(spot.default) else ""
            raise ConfigError(
                f"{key}={value!r} is out of range: it must be {symbol} {bound:g}{example}"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _has_non_finite(value: Any) -> bool:
    """inf or nan, also inside a list: no shipped setting means either."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Check the whole composed config; return the checked settings, defaults filled in.

    The result maps each checked node's key (`trainer`, `cv`, `lr_find`, `batch_size_find`,
    a component group such as `optim`, `callbacks.<name>`) to its schema's instance.

    Metric names (`objective`, every `monitor`) are checked against those of any task
    here, and against the data's own task by `validate_metrics` once the data is loaded.
    """
    checked: dict[str, Any] = {}
    check_top_level(cfg)
    for group in REQUIRED_GROUPS:
        if cfg.get(group) is None or cfg[group].get("_target_") is None:
            raise ConfigError(f"'{group}' needs a _target_: pick an option, e.g. {group}=...")
    scalars = {k: cfg[k] for k in RUN_KEYS if k in cfg}
    checked["run"] = check_node(OmegaConf.create(scalars), "", RunSchema)
    for group in COMPONENT_GROUPS:
        node = cfg.get(group)
        if node is not None and (schema := schema_for(node.get("_target_"))):
            checked[group] = check_node(node, group, schema)
    if "num_workers" in cfg.trainer:  # a config written before it moved
        raise ConfigError(
            f"trainer.num_workers moved to data.num_workers: use "
            f"data.num_workers={cfg.trainer.num_workers} instead"
        )
    checked["trainer"] = check_node(cfg.trainer, "trainer", TrainerSchema)
    checked["cv"] = check_node(cfg.cv, "cv", CVSchema)
    checked["lr_find"] = check_node(cfg.lr_find, "lr_find", LRFindSchema)
    checked["batch_size_find"] = check_node(
        cfg.batch_size_find, "batch_size_find", BatchSizeFindSchema
    )
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and not (isinstance(node, DictConfig) and node.get("_target_")):
            raise ConfigError(
                f"callbacks.{name}={_shown(node)} is not a callback: give it a _target_ (its "
                f"class, e.g. +callbacks.{name}._target_=mypkg.MyCallback), or null for none"
            )
        if node is not None and (schema := schema_for(node.get("_target_"))):
            checked[f"callbacks.{name}"] = check_node(node, f"callbacks.{name}", schema)

    check_resume(cfg)
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
                f"choose one of: {_metric_listing(allowed)}"
            )


def _metric_listing(allowed: list[str]) -> str:
    """`val/acc, val/loss, test/acc, test/loss` as `val/ or test/ + acc, loss`: short."""
    val = sorted(n.removeprefix("val/") for n in allowed if n.startswith("val/"))
    test = sorted(n.removeprefix("test/") for n in allowed if n.startswith("test/"))
    if not val or val != test:
        return ", ".join(allowed)
    others = [n for n in allowed if not n.startswith(("val/", "test/"))]
    return f"{', '.join(others)}, or val/ or test/ followed by one of: {', '.join(val)}"
