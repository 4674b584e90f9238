"""The sweeper's options, registered as `hydra/sweeper=trainlab_optuna`."""

# No `from __future__ import annotations` here: Hydra's plugin scan runs this module before
# it is in sys.modules, where dataclasses would look the string annotations up.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class TrainlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.trainlab_optuna_sweeper.sweeper.TrainlabOptunaSweeper"

    # How the next trial's parameters are chosen: tpe (Bayesian) | random.
    sampler: str = "tpe"
    # Seeds the sampler (null: a fresh search each time). A resumed study seeds it with
    # seed + the number of trials so far, so it does not repeat the first run's draws.
    seed: int | None = 0
    # Trials in the study in all, counting those of earlier runs: completed, pruned and
    # failed ones (not those cut short by an interrupted sweep, which run again).
    n_trials: int = 20
    # Trials handed to the launcher at once (2 or more: parallel with hydra/launcher=joblib).
    n_jobs: int = 1
    # Sweep processes on this machine sharing the study, each running one trial at a time
    # on its share of the cores: forked from this one after its imports (so they start at
    # once), with the basic launcher on Linux or macOS. Like several workers on one study,
    # trials then run in no fixed order, so a seeded search's results vary run to run.
    workers: int = 1
    # minimize | maximize | auto (from the objective's name, as callbacks' mode=auto does).
    direction: str = "auto"
    # The study's name in storage; running the same name again resumes it.
    study_name: str = "trainlab"
    # An SQLAlchemy URL. null: sqlite:///<hydra.sweep.dir>/optuna.db. Workers given the same
    # URL and study_name share the study (e.g. postgresql://user@host/db on a cluster).
    storage: str | None = None
    # Each worker beats every running trial's heartbeat this often (seconds); a trial whose
    # heartbeat is older than grace_period is its dead worker's: failed, and queued once
    # more with its parameters for a live worker.
    heartbeat_interval: int = 10
    grace_period: int = 60
    # Stops unpromising trials early, from the objective reported each epoch:
    # median | successive_halving | none.
    pruner: str = "median"
    # Arguments of each sampler and pruner, named as Optuna names them; the one that
    # `sampler` / `pruner` names is used.
    tpe: dict[str, Any] = field(default_factory=lambda: {"n_startup_trials": 10})
    random: dict[str, Any] = field(default_factory=dict)
    median: dict[str, Any] = field(
        default_factory=lambda: {"n_startup_trials": 5, "n_warmup_steps": 0, "interval_steps": 1}
    )
    successive_halving: dict[str, Any] = field(
        default_factory=lambda: {
            "min_resource": "auto",
            "reduction_factor": 4,
            "min_early_stopping_rate": 0,
        }
    )
    # Running a study again with another search space or other settings (epochs, sampler,
    # any config value) stops with a line saying so; true: continue it with the new ones.
    continue_with_changes: bool = False
    # The search space, in Hydra's sweep syntax, e.g.
    # {optim.lr: tag(log, interval(1e-4, 1e-1)), model.hidden_sizes: choice([128],[256,128])}
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="trainlab_optuna",
    node=TrainlabOptunaSweeperConf,
    provider="trainlab",
)
