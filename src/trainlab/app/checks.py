"""What a command is checked for before Hydra makes a folder or starts a job: every option
named for a config group exists, every setting is valid (`config.validate`), and what can
be found out about the data and the machine without torch is fine (`early_checks`).

`CheckConfig` is the Hydra callback that does it (configs/hydra/default.yaml lists it
before `run_folder`, so a refused command leaves no folder behind; in a sweep it checks
the options of every job, each job its own settings); `trainlab.compose`
checks the options as well.
"""

from __future__ import annotations

import copy
import os
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from trainlab.app.config import validate
from trainlab.app.early_checks import check_early
from trainlab.app.help import OPTIONAL_GROUPS
from trainlab.errors import ConfigError, exit_with, unknown_option


def check_options(
    loader: ConfigLoader,
    config_name: str | None,
    overrides: Sequence[str],
    choices: Mapping[str, Any],
) -> None:
    """Every option that `overrides` name for a config group (each item of a list, each
    value of a sweep) and every option in `choices` (what composing chose) exists.

    Hydra skips a missing option of an `optional` group without a word, so `experiment=nope`
    would run the default experiment. The options are those on the loader's search path:
    trainlab's configs, a --config-dir, a `hydra.searchpath`.
    """
    named: dict[str, list[str]] = {}
    for override in parse(overrides):
        if not override.is_delete() and "." not in override.key_or_group:
            named.setdefault(override.key_or_group, []).extend(_names(override.value()))
    for group, option in choices.items():
        if option is not None and not group.startswith("hydra/"):
            named.setdefault(group, []).extend(_names(option))
    options_of = group_options(loader, config_name, overrides)
    for group, wanted in named.items():
        options = options_of(group)
        for option in wanted:
            if options and option not in options:
                raise ConfigError(unknown_option(group, option, options))


def group_options(
    loader: ConfigLoader, config_name: str | None, overrides: Sequence[str]
) -> Callable[[str], list[str]]:
    """A function giving a config group's options on the search path that `overrides` make.

    `loader.get_group_options(group, config_name, overrides)` does the same, but makes the
    search path anew (reading the primary config) for each group: ~30 ms a group, a third
    of a second a command. Here it is made once, as that call makes it
    (`tests/test_private_apis.py` pins the two as equal).
    """
    _, repository = loader._parse_overrides_and_create_caching_repo(config_name, list(overrides))
    return lambda group: repository.get_group_options(group, ObjectType.CONFIG)


def listed_groups_chosen(overrides: Sequence[str], config_name: str | None) -> list[str]:
    """`+experiment=X` taken as `experiment=X` with trainlab's train.yaml, which lists the
    optional groups already: Hydra refuses to add a listed group, and other project
    templates teach the `+`."""
    if config_name not in (None, "train"):
        return list(overrides)
    added = tuple(f"+{group}=" for group in OPTIONAL_GROUPS)
    return [o[1:] if o.startswith(added) else o for o in overrides]


def parse(overrides: Sequence[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(overrides))


def _names(value: Any) -> list[str]:
    """The options a value names: itself, each item of a list, each value of a choice."""
    if isinstance(value, ChoiceSweep):
        return [name for item in value.list for name in _names(item)]
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in _names(item)]
    if value is None or not isinstance(value, (str, int, float)):
        return []  # null (no option), or a range, an interval, a glob: no names to check
    return [str(value)]


def check_run(config: DictConfig) -> None:
    """The checks of one run's composed config (with its `hydra` node)."""
    loader = GlobalHydra.instance().config_loader()
    overrides = [*config.hydra.overrides.hydra, *config.hydra.overrides.task]
    check_options(loader, config.hydra.job.config_name, overrides, config.hydra.runtime.choices)
    check_job(config)


def check_job(config: DictConfig) -> None:
    """`validate` and the early checks, before Hydra has a run folder for `paths.output_dir`."""
    config = copy.deepcopy(config)
    if isinstance(config.get("paths"), DictConfig):
        with read_write(config), open_dict(config):
            config.paths.output_dir = "<run folder>"  # interpolated into the checkpoints' folder
    check_early(validate(config))


def check_sweep(config: DictConfig) -> None:
    """The options each job of a sweep names (its search space's too), before the first job.
    A job's settings are checked as the job starts: a bad value fails that job, and the
    sweep goes on with the others, as for any failing job."""
    loader = GlobalHydra.instance().config_loader()
    params = config.hydra.sweeper.get("params") or {}
    swept = [f"{key}={value}" for key, value in params.items()]
    overrides = [*config.hydra.overrides.hydra, *swept, *config.hydra.overrides.task]
    check_options(loader, config.hydra.job.config_name, overrides, config.hydra.runtime.choices)


class CheckConfig(Callback):
    """Hydra callback: refuse a bad command before Hydra writes anything."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse(check_run, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse(check_sweep, config)


def _refuse(check: Callable[[DictConfig], None], config: DictConfig) -> None:
    # Hydra turns an exception raised in a callback into a warning and runs on, so a
    # refusal ends the process here.
    try:
        check(config)
    except Exception as ex:
        if os.environ.get("TRAINLAB_VERBOSE") == "1":
            traceback.print_exc()
        exit_with(ex)
