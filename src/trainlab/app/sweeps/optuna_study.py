"""How a training job and the Optuna sweeper share one study.

The sweeper (`hydra_plugins/trainlab_optuna_sweeper`) asks the study for a trial, then
launches the job with the override `+optuna_trial={storage, study_name, number, pruner}`.
The job reopens that trial from storage (it may run in another process: joblib launcher)
to report its objective after each epoch and ask the pruner whether to stop. Whatever the
job has to tell the sweeper goes through the trial in storage (`PRUNED_AT`).

Kept free of torch imports: the sweeper imports it before any job runs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# The config key of the trial block the sweeper passes to each job.
TRIAL_KEY = "optuna_trial"
# User attributes on a trial. Set by the job when the pruner stopped it:
PRUNED_AT = "pruned_at_epoch"
# What the pruning callback of each job this process ran knows (the epoch the pruner
# stopped it after, or None), by the job's folder: the job's end and the sweeper's tell
# read it here when the job ran in this process, saving a query each.
PRUNED_HERE: dict[str, int | None] = {}
# Set by the sweeper: the job's folder, its overrides, why it failed, whether it was cut
# short by a dead worker (marked by their retry's RETRY_OF, or by INTERRUPTED in studies
# of earlier versions: such trials are retried and not counted as done).
RUN_DIR = "run_dir"
OVERRIDES = "overrides"
FAIL_REASON = "fail_reason"
INTERRUPTED = "interrupted"
RETRY_OF = "retry_of"
# Set by the sweeper: which sweep process runs the trial (`host:pid namespace:pid`), so a
# worker on the same machine sees at once that it died.
WORKER = "worker"

# SQLite allows one writer at a time; parallel jobs wait up to this long for the lock.
SQLITE_TIMEOUT_S = 60


def open_storage(url: str, **heartbeat: Any) -> optuna.storages.BaseStorage:
    """The RDB storage at `url` (any SQLAlchemy URL, e.g. sqlite:///path/optuna.db).

    `heartbeat`: RDBStorage's heartbeat_interval, grace_period and
    heartbeat_stale_trial_callback (the sweeper's; jobs only report, without them).
    A URL that cannot be used ends as one line naming it, its password hidden.
    """
    import warnings

    import optuna
    import sqlalchemy.exc

    from trainlab.errors import ConfigError

    if not heartbeat and url in _reporting_storages:
        return _reporting_storages[url]
    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if sqlite else {}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                with_driver(url), engine_kwargs=engine_kwargs, **heartbeat
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as ex:
        why = str(ex.orig if isinstance(ex, sqlalchemy.exc.DBAPIError) else ex)
        why = " ".join(why.split())[:150]
        raise ConfigError(
            f"hydra.sweeper.storage={hide_password(url)}: cannot open the study's database "
            f"({why}); check the URL, that the server runs and that its driver is installed "
            "(PostgreSQL: pip install 'psycopg[binary]')"
        ) from None
    if not heartbeat:
        _reporting_storages[url] = storage
    return storage


# The storages jobs report through, by URL: the jobs of a sweep run one after the other in
# one process (the basic launcher), and opening one (an engine, a schema check) takes a
# good part of a second, twice a job.
_reporting_storages: dict[str, Any] = {}


def with_driver(url: str) -> str:
    """`postgresql://` with the installed driver: SQLAlchemy's default (psycopg2) is often
    missing where psycopg 3, which trainlab's `cluster` extra installs, is there."""
    import importlib.util

    plain = url.startswith(("postgresql://", "postgres://"))
    if plain and not importlib.util.find_spec("psycopg2") and importlib.util.find_spec("psycopg"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def hide_password(url: str) -> str:
    """`url` with its password, if any, as ***: for every line and file a sweep writes."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: hide what sits between : and @
        import re

        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def study_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The study's storage: `hydra.sweeper.storage`, else SQLite in the sweep folder."""
    return storage or f"sqlite:///{Path(sweep_dir).resolve() / 'optuna.db'}"


def study_trials(config: Any) -> list[optuna.trial.FrozenTrial] | None:
    """Every trial of the Optuna study a sweep's `config` (with its `hydra` node) ran, from
    every worker that shares it; None for other sweepers, or a study that cannot be read
    (said in one line)."""
    sweeper = config.hydra.sweeper
    if not str(sweeper.get("_target_", "")).endswith("TrainlabOptunaSweeper"):
        return None
    url = study_url(sweeper.get("storage"), config.hydra.sweep.dir)
    try:
        storage = open_storage(url)
        study_id = storage.get_study_id_from_name(sweeper.study_name)
        return storage.get_all_trials(study_id, deepcopy=False)
    except Exception as ex:  # the leaderboard goes on with the run folders alone
        from trainlab.errors import one_line

        log.warning(f"leaderboard: the study's trials could not be read: {one_line(ex)}")
        return None


def trial_storage(block: Any) -> str:
    """The storage URL a job reports to: the trial block's, or (a shared database, whose
    URL may hold a password and is kept out of the overrides Hydra prints) the sweeper's."""
    if block.get("storage"):
        return str(block.storage)
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().sweeper.storage)


def interrupted(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """The numbers of the trials a dead worker left, which were queued to run again (their
    retries say so: a finished trial cannot be marked afterwards)."""
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    return {t.number for t in trials if t.number in retried or t.user_attrs.get(INTERRUPTED)}


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial `number` of the study `study_name`."""
    study_id = storage.get_study_id_from_name(study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def pruned_epoch(
    storage: optuna.storages.BaseStorage, study_name: str, number: int, run_dir: str | None,
    forget: bool = False,
) -> int | None:  # fmt: skip
    """The epoch after which the pruner stopped trial `number` (None: it did not): as its
    job's pruning callback kept it, where the job (in `run_dir`) ran in this process, else
    as the job marked the trial in storage. `forget`: drop what this process kept."""
    here = os.path.abspath(run_dir) if run_dir is not None else None
    if here in PRUNED_HERE:
        return PRUNED_HERE.pop(here) if forget else PRUNED_HERE[here]
    return storage.get_trial(trial_id(storage, study_name, number)).user_attrs.get(PRUNED_AT)


def open_trial(
    storage: str, study_name: str, number: int, pruner: Any = None
) -> optuna.trial.Trial:
    """Reopen a running trial in this process, with the study's pruner built from `pruner`.

    `pruner` is an instantiable node (`_target_` plus arguments) or None (never prune).
    """
    import optuna
    from hydra.utils import instantiate

    store = open_storage(storage)
    study = optuna.load_study(
        study_name=study_name,
        storage=store,
        # The job never samples; the sweeper suggested every parameter already.
        sampler=optuna.samplers.RandomSampler(),
        pruner=instantiate(pruner) if pruner else optuna.pruners.NopPruner(),
    )
    return optuna.trial.Trial(study, trial_id(store, study_name, number))
