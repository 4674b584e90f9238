"""The sweeper's options, checked before any trial: the sampler and the pruner (with their
arguments), the trial counts, `workers`, the searched keys and the direction.

A mistake here would fail every trial the same way, so each ends the sweep at once with
one line that names the option and what it takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution

from trainlab.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from hydra_plugins.trainlab_optuna_sweeper.sweeper import TrainlabOptunaSweeper

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
PRUNERS = {
    "median": "optuna.pruners.MedianPruner",
    "successive_halving": "optuna.pruners.SuccessiveHalvingPruner",
    "none": "optuna.pruners.NopPruner",
}


def check_options(sweeper: TrainlabOptunaSweeper) -> None:
    if sweeper.sampler not in SAMPLERS:
        raise ConfigError(
            f"hydra.sweeper.sampler={sweeper.sampler!r} is not allowed"
            f"{did_you_mean(sweeper.sampler, list(SAMPLERS))}; choose one of: tpe, random"
        )
    if sweeper.pruner not in PRUNERS:
        raise ConfigError(
            f"hydra.sweeper.pruner={sweeper.pruner!r} is not allowed"
            f"{did_you_mean(sweeper.pruner, list(PRUNERS))}; "
            "choose one of: median, successive_halving, none"
        )
    for name in ("n_trials", "n_jobs"):
        value = getattr(sweeper, name)
        if not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"hydra.sweeper.{name}={value!r} must be an integer >= 1")
    make_sampler(sweeper, sweeper.seed)  # checks the sampler's arguments


def check_workers(sweeper: TrainlabOptunaSweeper) -> None:
    """hydra.sweeper.workers: a whole number, above 1 only where this process can fork
    and the launcher runs jobs in it."""
    import os

    workers = sweeper.workers
    if not (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1):
        raise ConfigError(f"hydra.sweeper.workers={workers!r} must be an integer >= 1")
    if workers == 1:
        return
    if not jobs_run_here(sweeper):
        raise ConfigError(
            f"hydra.sweeper.workers={workers} forks workers that run jobs themselves, but "
            f"hydra/launcher runs them ({type(sweeper.launcher).__name__}): use its own "
            "parallelism (hydra.sweeper.n_jobs, a SLURM array) or drop hydra.sweeper.workers"
        )
    if not hasattr(os, "fork"):
        raise ConfigError(
            f"hydra.sweeper.workers={workers} needs fork, which this system lacks: start "
            "the same command once per worker instead (they share the study)"
        )


def jobs_run_here(sweeper: TrainlabOptunaSweeper) -> bool:
    """Whether the launcher runs each job in the sweep's own process (Hydra's basic one)."""
    return type(sweeper.launcher).__name__ == "BasicLauncher"


def check_keys(space: dict[str, BaseDistribution], config: DictConfig) -> None:
    """Every searched key names a config key or group (a misspelling fails every trial)."""
    choices = config.hydra.runtime.choices
    missing = object()
    for key in space:
        if key[0] in "+~" or "@" in key or key in choices:
            continue
        if OmegaConf.select(config, key, default=missing) is missing:
            raise ConfigError(
                f"cannot search '{key}': it is neither a config key nor a config group"
                f"{did_you_mean(key, [*choices, *_leaf_keys(config)])} "
                f"(use +{key}=... to add a key a custom _target_ accepts)"
            )


def _leaf_keys(config: DictConfig, prefix: str = "") -> Iterator[str]:
    for key, value in config.items_ex(resolve=False):
        if key == "hydra" and not prefix:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, DictConfig):
            yield from _leaf_keys(value, f"{name}.")
        else:
            yield name


def make_sampler(sweeper: TrainlabOptunaSweeper, seed: int | None) -> optuna.samplers.BaseSampler:
    try:
        return SAMPLERS[sweeper.sampler](seed=seed, **sweeper.options[sweeper.sampler])
    except TypeError as ex:
        raise ConfigError(f"hydra.sweeper.{sweeper.sampler}: {ex}") from None


def pruner_node(sweeper: TrainlabOptunaSweeper) -> dict[str, Any]:
    """The pruner as an instantiable node for the jobs, built once here to check it."""
    node = {"_target_": PRUNERS[sweeper.pruner], **sweeper.options[sweeper.pruner]}
    try:
        instantiate(node)
    except Exception as ex:
        cause = ex.__cause__ or ex
        raise ConfigError(f"hydra.sweeper.{sweeper.pruner}: {cause}") from None
    return node


def resolve_direction(direction: str, objective: str) -> str:
    if direction in ("minimize", "maximize"):
        return direction
    if direction != "auto":
        raise ConfigError(
            f"hydra.sweeper.direction={direction!r} is not allowed; "
            "choose one of: auto, minimize, maximize"
        )
    from trainlab.components.callbacks.monitor import resolve_mode
    from trainlab.components.metrics import DEFAULT_OBJECTIVE

    # objective=auto is each task's default (val/acc, val/r2): all maximized.
    names = sorted(set(DEFAULT_OBJECTIVE.values())) if objective == "auto" else [objective]
    modes = {resolve_mode(name, "auto") for name in names}
    if len(modes) > 1:
        raise ConfigError(
            f"hydra.sweeper.direction=auto cannot tell whether to minimize or maximize "
            f"objective={objective}; set hydra.sweeper.direction"
        )
    return "maximize" if modes == {"max"} else "minimize"
