"""Compose each sweep job's config once.

Hydra's sweepers check a batch of jobs by composing each one's config
(`validate_batch_is_legal`), and the launcher then composes it again to run it: the same
work twice per job, about a second each on a loaded 2-core machine. `ComposeOnce` wraps
the config loader the sweeper and its launcher share: `check` composes a job's config
(raising as the check would) and keeps it; the launcher's `load_sweep_config` for the same
overrides takes that config instead of composing again. Anything else goes to the wrapped
loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.types import HydraContext
from omegaconf import DictConfig


class ComposeOnce:
    """A config loader that hands out, once, the configs `check` composed."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._composed: dict[tuple[int, tuple[str, ...]], DictConfig] = {}

    def check(self, master_config: DictConfig, batch: Sequence[Sequence[str]]) -> None:
        """Compose every job of `batch` (a job that does not compose raises here, before
        any launch) and keep its config for the launcher."""
        for overrides in batch:
            key = (id(master_config), tuple(overrides))
            self._composed[key] = self._loader.load_sweep_config(master_config, list(overrides))

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        # Taken out, not copied: the launcher sets the job's number in it, and a job
        # launched again (a retry) is composed afresh.
        kept = self._composed.pop((id(master_config), tuple(sweep_overrides)), None)
        if kept is not None:
            return kept
        return self._loader.load_sweep_config(master_config, sweep_overrides)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # unpickling looks up dunders before _loader is set
            raise AttributeError(name)
        return getattr(self._loader, name)


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
