"""Compose each sweep job's config once, and cheaply.

Hydra's sweepers check a batch of jobs by composing each one's config
(`validate_batch_is_legal`), and the launcher then composes it again to run it: the same
work twice per job. `ComposeOnce` wraps the config loader the sweeper and its launcher
share: `check` composes a job's config (raising as the check would) and keeps it; the
launcher's `load_sweep_config` for the same overrides takes that config instead of
composing again. Anything else goes to the wrapped loader.

Composing is itself most of a small job's overhead (Hydra reads and merges every config
file again: ~0.3 s on a 2-core machine). The jobs of a search differ from each other in
values (`optim.lr=0.01 model.dropout=0.25`), not in which config files they are made of.
So a job's config is composed by Hydra once per set of *structural* overrides (config
groups such as `model=cnn`, `hydra.*`) and kept; each job with those takes a
copy and has its value overrides applied by Hydra's own override code, in their order, as
a full composition would apply them after merging the files. Its `hydra.overrides.task`
and `hydra.job.override_dirname` are set as Hydra sets them. A job with a deletion
(`~key`) is composed whole. tests/test_sweep_overhead.py compares such configs with full
compositions.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf


class ComposeOnce:
    """A config loader that hands out, once, the configs `check` composed, and composes
    jobs that differ only in values from one composition."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._composed: dict[tuple[int, tuple[str, ...]], DictConfig] = {}
        # Hydra's composition for a master config and a set of structural overrides.
        self._bases: dict[tuple[int, tuple[str, ...]], DictConfig] = {}
        self._parser: OverridesParser | None = None
        self._groups: set[str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Sent to a launcher's worker process (joblib, submitit): the loader only; the
        # kept compositions and the parser are remade there.
        return {"_loader": self._loader}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_loader"])

    def check(self, master_config: DictConfig, batch: Sequence[Sequence[str]]) -> None:
        """Compose every job of `batch` (a job that does not compose raises here, before
        any launch) and keep its config for the launcher."""
        for overrides in batch:
            key = (id(master_config), tuple(overrides))
            self._composed[key] = self.compose(master_config, list(overrides))

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        # Taken out, not copied: the launcher sets the job's number in it, and a job
        # launched again (a retry) is composed afresh.
        kept = self._composed.pop((id(master_config), tuple(sweep_overrides)), None)
        if kept is not None:
            return kept
        return self.compose(master_config, sweep_overrides)

    def compose(self, master_config: DictConfig, overrides: list[str]) -> DictConfig:
        """The job config Hydra's `load_sweep_config(master_config, overrides)` makes."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

        if self._parser is None:
            self._parser = OverridesParser.create()
        if self._groups is None:
            self._groups = set(self._loader.list_groups(""))
        parsed = self._parser.parse_overrides(overrides)
        values, structural = split_overrides(parsed, self._groups)
        if not values:
            return self._loader.load_sweep_config(master_config, overrides)
        key = (id(master_config), tuple(structural))
        base = self._bases.get(key)
        if base is None:
            base = self._loader.load_sweep_config(master_config, structural)
            self._bases[key] = base
        config = copy.deepcopy(base)
        ConfigLoaderImpl._apply_overrides_to_config(values, config)
        app = [o for o in parsed if not o.is_hydra_override()]
        naming = config.hydra.job.config.override_dirname
        config.hydra.overrides.task = [o.input_line for o in app]
        config.hydra.job.override_dirname = get_overrides_dirname(
            overrides=app,
            kv_sep=naming.kv_sep,
            item_sep=naming.item_sep,
            exclude_keys=naming.exclude_keys,
        )
        OmegaConf.copy_cache(from_config=master_config, to_config=config)
        return config

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # unpickling looks up dunders before _loader is set
            raise AttributeError(name)
        return getattr(self._loader, name)


def split_overrides(
    parsed: Sequence[Override], groups: Collection[str]
) -> tuple[list[Override], list[str]]:
    """The overrides that only set a value, and the input lines of the others (those a
    composition is made of), given the top-level config `groups`.

    A value override is none of: a config group, a package, `hydra.*`, a sweep, a key-less
    override. With a deletion among them there is no value override: a deletion is applied
    in its place among the value overrides (one before it may set what it deletes), so the
    whole job is composed by Hydra.
    """
    if any(o.is_delete() for o in parsed):
        return [], [o.input_line for o in parsed]
    values: list[Override] = []
    structural: list[str] = []
    for override in parsed:
        key = override.key_or_group
        structure = (
            override.package is not None
            or override.is_hydra_override()
            or override.is_sweep_override()
            or not key
            or "/" in key
            or ("." not in key and key in groups)  # a config group's name never holds a dot
        )
        if structure:
            structural.append(override.input_line)
        else:
            values.append(override)
    return values, structural


def compose_once(hydra_context: HydraContext) -> HydraContext:
    """`hydra_context` with its config loader wrapped in `ComposeOnce`."""
    loader = hydra_context.config_loader
    if not isinstance(loader, ComposeOnce):
        loader = ComposeOnce(loader)
    return HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)


def check_jobs(hydra_context: HydraContext, master_config: DictConfig,
               batch: Sequence[Sequence[str]]) -> None:  # fmt: skip
    """Compose `batch`'s configs, raising for one that does not compose; the launcher then
    uses them."""
    hydra_context.config_loader.check(master_config, batch)
