"""A study remembers the settings it was run with; running it again with others is a choice.

Running the same command again resumes a study, so a command with another search space,
epoch count or sampler under the same study name would silently mix two searches in one.
The settings (the search space, every config value a trial uses apart from the searched
keys, the sampler and the pruner with their options) are kept as a user attribute of the
study; a sweep whose settings differ stops with one line, unless
`hydra.sweeper.continue_with_changes=true` says to go on (the study then keeps the new
settings). `n_trials`, `n_jobs`, `workers`, the launcher and the folders may change freely.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, distribution_to_json

from trainlab.errors import ConfigError

if TYPE_CHECKING:
    from hydra_plugins.trainlab_optuna_sweeper.sweeper import TrainlabOptunaSweeper

log = logging.getLogger(__name__)

SETTINGS = "trainlab_settings"
# Config sections that say where things go or how the sweep runs, not what a trial does.
NOT_SETTINGS = ("hydra", "paths", "name")
SHOWN_CHANGES = 3


def study_settings(
    sweeper: TrainlabOptunaSweeper, space: dict[str, BaseDistribution], config: DictConfig
) -> dict[str, str]:
    """Flat `key -> text` of everything that makes this search what it is."""
    settings = {f"search {key}": distribution_to_json(d) for key, d in space.items()}
    for name in (sweeper.sampler, sweeper.pruner):
        for key, value in sweeper.options.get(name, {}).items():
            settings[f"hydra.sweeper.{name}.{key}"] = str(value)
    settings["hydra.sweeper.sampler"] = sweeper.sampler
    settings["hydra.sweeper.pruner"] = sweeper.pruner
    settings["hydra.sweeper.seed"] = str(sweeper.seed)
    plain = OmegaConf.to_container(config, resolve=False)
    for key, value in _flat(plain):
        searched = any(key == s or key.startswith(f"{s}.") for s in space)
        if not searched and key.split(".")[0] not in NOT_SETTINGS:
            settings[key] = str(value)
    return settings


def _flat(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        return [item for k, v in node.items() for item in _flat(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), node)]


def check_settings(
    sweeper: TrainlabOptunaSweeper, study: optuna.Study, settings: dict[str, str]
) -> None:
    """Refuse to continue `study` with other settings unless asked to; keep the new ones."""
    before = study.user_attrs.get(SETTINGS)
    if before is not None and before != settings:
        changes = describe_changes(before, settings)
        if not sweeper.continue_with_changes:
            raise ConfigError(
                f"study '{study.study_name}' exists with other settings ({changes}); to "
                "continue it anyway add hydra.sweeper.continue_with_changes=true, or start a "
                "new one with hydra.sweeper.study_name=<new name>"
            )
        log.info(f"continuing study '{study.study_name}' with changed settings: {changes}")
    if before != settings:
        study.set_user_attr(SETTINGS, settings)


def describe_changes(before: dict[str, str], after: dict[str, str]) -> str:
    """A few of the changed settings, e.g. `trainer.max_epochs 30 -> 3; search optim.lr`."""
    changed = []
    for key in sorted({*before, *after}, key=lambda k: (not k.startswith("search "), k)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key.startswith("search "):
            what = "added" if old is None else "removed" if new is None else "changed"
            changed.append(f"{key.removeprefix('search ')} search space {what}")
        else:
            changed.append(f"{key} {_short(old)} -> {_short(new)}")
    shown = "; ".join(changed[:SHOWN_CHANGES])
    more = len(changed) - SHOWN_CHANGES
    return shown + (f"; {more} more" if more > 0 else "")


def _short(value: str | None) -> str:
    if value is None:
        return "(unset)"
    return value if len(value) <= 24 else value[:21] + "..."
