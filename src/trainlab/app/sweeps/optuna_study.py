"""How a training job and the Optuna sweeper share one study.

The sweeper (`hydra_plugins/trainlab_optuna_sweeper`) asks the study for a trial, then
launches the job with the override `+optuna_trial={storage, study_name, number, pruner}`.
The job reopens that trial from storage (it may run in another process: joblib launcher)
to report its objective after each epoch and ask the pruner whether to stop. Whatever the
job has to tell the sweeper goes through the trial in storage (`PRUNED_AT`).

Kept free of torch imports: the sweeper imports it before any job runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

# The config key of the trial block the sweeper passes to each job.
TRIAL_KEY = "optuna_trial"
# User attributes on a trial. Set by the job when the pruner stopped it:
PRUNED_AT = "pruned_at_epoch"
# Set by the sweeper: the job's folder, its overrides, why it failed, whether it was cut
# short by an interrupted sweep (such trials are retried and not counted as done).
RUN_DIR = "run_dir"
OVERRIDES = "overrides"
FAIL_REASON = "fail_reason"
INTERRUPTED = "interrupted"
RETRY_OF = "retry_of"

# SQLite allows one writer at a time; parallel jobs wait up to this long for the lock.
SQLITE_TIMEOUT_S = 60


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The RDB storage at `url` (any SQLAlchemy URL, e.g. sqlite:///path/optuna.db)."""
    import optuna

    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if sqlite else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial `number` of the study `study_name`."""
    study_id = storage.get_study_id_from_name(study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


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
