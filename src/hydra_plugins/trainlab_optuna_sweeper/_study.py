"""The search: ask Optuna for trials, run each as a Hydra job, tell Optuna how it went.

    open (or join) the study in storage
    until n_trials trials are taken, by this worker and the others sharing the study
    (see _workers.py: dead workers' trials are failed and queued once more):
        ask for up to n_jobs trials (queued ones first; Optuna suggests every parameter)
        launch them as jobs numbered by trial, each with +optuna_trial={...} so it can
            report its objective each epoch and stop when pruned (OptunaPruning)
        tell each result: COMPLETE with the job's objective, PRUNED, or FAIL with a reason
    wait for other workers' running trials (a dead one's trial is then run here)
    write optuna_results.yaml and print the best trial

Any number of sweeps may share a study: the same command on several machines against
one database (hydra.sweeper.storage), or twice on one machine.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from hydra_plugins.trainlab_optuna_sweeper._options import (
    check_keys,
    check_options,
    jobs_run_here,
    make_sampler,
    pruner_node,
    resolve_direction,
)
from hydra_plugins.trainlab_optuna_sweeper._results import (
    RESULTS_FILE,
    log_results,
    short_number,
    summarize,
    write_yaml_atomic,
)
from hydra_plugins.trainlab_optuna_sweeper._search_space import (
    quote,
    split_overrides,
    to_override,
)
from hydra_plugins.trainlab_optuna_sweeper._settings import check_settings, study_settings
from hydra_plugins.trainlab_optuna_sweeper._workers import (
    WAIT_POLL_S,
    DeadTrials,
    Heartbeats,
    ask_lock,
    check_heartbeat,
    count_taken,
    fail_dead_trials,
    running_elsewhere,
    worker_id,
)
from trainlab.app.sweeps.compose import check_jobs
from trainlab.app.sweeps.jobs import warm_up, write_record
from trainlab.app.sweeps.optuna_study import (
    FAIL_REASON,
    OVERRIDES,
    RUN_DIR,
    TRIAL_KEY,
    WORKER,
    hide_password,
    interrupted,
    open_storage,
    pruned_epoch,
    study_url,
    trial_id,
    with_driver,
)
from trainlab.engine import preemption
from trainlab.errors import ConfigError, one_line

if TYPE_CHECKING:
    from hydra_plugins.trainlab_optuna_sweeper.sweeper import TrainlabOptunaSweeper

log = logging.getLogger(__name__)

# A study attribute: how many sweep processes joined it, so each seeds its sampler apart.
WORKERS_JOINED = "trainlab_workers_joined"
SEED_STRIDE = 7919


def run_study(
    sweeper: TrainlabOptunaSweeper, arguments: list[str], forked: bool = False
) -> dict[str, Any]:
    """The loop above. `forked`: this process is a worker the sweep process forked
    (workers > 1). The sweep process says the study's state, waits for the others' trials
    and writes the results; a forked worker only runs trials until none is left to ask."""
    config = sweeper.config
    assert config is not None and sweeper.hydra_context is not None
    check_options(sweeper)
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    params = [f"{key}={value}" for key, value in sweeper.params.items()]
    space, fixed = split_overrides([*params, *arguments], parser)
    if not space:
        raise ConfigError(
            "nothing to search: set hydra.sweeper.params (see configs/hparams_search/) or "
            "give a sweep on the command line, e.g. optim.lr='tag(log,interval(1e-4,1e-1))'"
        )
    check_keys(space, config)
    pruner = pruner_node(sweeper)
    direction = resolve_direction(sweeper.direction, config.objective)

    sweep_dir = Path(config.hydra.sweep.dir).resolve()
    url = study_url(sweeper.storage, sweep_dir)
    shown_url = hide_password(url)
    check_heartbeat(sweeper.heartbeat_interval, sweeper.grace_period)
    if not sweeper.storage:  # the default database lives in the sweep folder
        sweep_dir.mkdir(parents=True, exist_ok=True)
    dead = DeadTrials(sweep_dir, sweeper.grace_period)
    # Under the ask lock: workers starting together on a new database would each create
    # Optuna's tables, and all but one fail.
    with ask_lock(with_driver(url), sweeper.study_name):
        storage = open_storage(
            url,
            heartbeat_interval=sweeper.heartbeat_interval,
            grace_period=sweeper.grace_period,
            heartbeat_stale_trial_callback=dead,
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)  # once the database is there
    settings = study_settings(sweeper, space, config)
    with ask_lock(with_driver(url), sweeper.study_name):
        study = open_study(sweeper, storage, shown_url, direction, settings)
    # A shared database's URL (maybe with a password) stays out of the printed overrides:
    # jobs read it from hydra.sweeper.storage.
    block = {"storage": None if sweeper.storage else url, "study_name": sweeper.study_name}
    block["pruner"] = pruner
    if forked:
        run_trials(sweeper, study, storage, space, fixed, block, url, dead, forked=True)
        return {}
    write_yaml_atomic(config, sweep_dir / "multirun.yaml")
    log.info(
        f"Optuna study '{sweeper.study_name}' ({direction} objective={config.objective}) "
        f"in {shown_url}: {count_done(study)} of {sweeper.n_trials} trials done; "
        f"sampler {sweeper.sampler}, pruner {sweeper.pruner}"
    )
    if jobs_run_here(sweeper) and trials_wanted(sweeper, study):
        # The jobs run in this process: their imports before the first ask, so that the
        # study's times (the leaderboard's for other workers' trials, the dashboard's) are
        # each trial's own. (Forked workers are warm already; a finished study needs none.)
        warm_up()
    run_trials(sweeper, study, storage, space, fixed, block, url, dead)
    results = summarize(study, config, shown_url, parser)
    write_yaml_atomic(results, sweep_dir / RESULTS_FILE)
    log_results(results, sweep_dir / RESULTS_FILE)
    check_some_trial_finished(study)
    return results


def run_trials(
    sweeper: TrainlabOptunaSweeper,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    space: dict[str, BaseDistribution],
    fixed: dict[str, str],
    block: dict[str, Any],
    url: str,
    dead: DeadTrials,
    forked: bool = False,
) -> None:
    """Ask, run and tell until the study has n_trials; then (unless `forked`) wait while
    other workers' trials run, running a dead one's trial again here."""
    me = worker_id()
    waiting_said = False
    with Heartbeats(storage, sweeper.heartbeat_interval) as beats:
        while True:
            preemption.raise_if_stopped()  # a stop whose exception something swallowed
            with ask_lock(with_driver(url), sweeper.study_name):
                fail_dead_trials(study, dead)
                trials = ask_trials(sweeper, study, storage, space, me, beats)
            if trials:
                run_batch(sweeper, study, storage, trials, space, list(fixed.values()), block)
                for trial in trials:
                    beats.remove(trial_id(storage, study.study_name, trial.number))
                continue
            others = running_elsewhere(study, me)
            if not others or forked:
                break
            if not waiting_said:
                log.info(
                    f"all {sweeper.n_trials} trials are taken; waiting for the "
                    f"{len(others)} running in other workers (a dead worker's trial runs "
                    "again here)"
                )
                waiting_said = True
            time.sleep(min(sweeper.heartbeat_interval, WAIT_POLL_S))


def check_some_trial_finished(study: optuna.Study) -> None:
    """A study whose every trial failed (a setting every job shares is wrong, say) ends
    the sweep as a failure: one line with the first trial's reason, exit status 2."""
    trials = study.get_trials(deepcopy=False)
    if not trials or any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials):
        return
    first = next((t for t in trials if t.user_attrs.get(FAIL_REASON)), trials[0])
    raise ConfigError(
        f"every trial of study '{study.study_name}' failed; trial {first.number}: "
        f"{first.user_attrs.get(FAIL_REASON, 'no reason recorded')} (fix it, then run again "
        "with a new hydra.sweeper.study_name=...)"
    )


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own INFO lines (to stderr) held back for the block."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def ask_trials(
    sweeper: TrainlabOptunaSweeper,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    space: dict[str, BaseDistribution],
    me: str,
    beats: Heartbeats,
) -> list[Trial]:
    """Up to n_jobs trials for this worker: queued ones first, then new ones while fewer
    than n_trials are taken. Called under the ask lock."""
    trials = []
    for _ in range(trials_wanted(sweeper, study)):
        with warnings.catch_warnings():  # ask/tell with heartbeats: beaten by `beats`
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask(space)
        beats.add(trial_id(storage, study.study_name, trial.number))
        trial.set_user_attr(WORKER, me)
        trials.append(trial)
    return trials


def trials_wanted(sweeper: TrainlabOptunaSweeper, study: optuna.Study) -> int:
    """How many trials this worker would take now: queued ones, then new ones while fewer
    than n_trials are taken; at most n_jobs."""
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    return min(sweeper.n_jobs, waiting + max(sweeper.n_trials - count_taken(study), 0))


def open_study(
    sweeper: TrainlabOptunaSweeper,
    storage: optuna.storages.BaseStorage,
    url: str,
    direction: str,
    settings: dict[str, str],
) -> optuna.Study:
    """Create the study, or load it (refusing other settings unless asked)."""
    try:  # (create_study(load_if_exists=True) would log a line of its own to stderr)
        study = optuna.load_study(study_name=sweeper.study_name, storage=storage)
    except KeyError:  # no such study yet
        try:
            with quiet_optuna():  # its "A new study created" line: the sweep says its own
                study = optuna.create_study(
                    study_name=sweeper.study_name, storage=storage, direction=direction
                )
        except optuna.exceptions.DuplicatedStudyError:  # another worker made it just now
            study = optuna.load_study(study_name=sweeper.study_name, storage=storage)
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study '{sweeper.study_name}' in {url} was created to "
            f"{study.direction.name.lower()}; set hydra.sweeper.direction to match, or "
            "start another study with hydra.sweeper.study_name=..."
        )
    check_settings(sweeper, study, settings)
    # Seeded past the trials so far (a resumed search does not repeat its first draws) and
    # apart for each worker that joined the study before (workers started together do not
    # draw the same parameters); called under the ask lock, so each gets its own count.
    joined = int(study.user_attrs.get(WORKERS_JOINED, 0))
    study.set_user_attr(WORKERS_JOINED, joined + 1)
    seed = None
    if sweeper.seed is not None:
        seed = sweeper.seed + len(study.trials) + SEED_STRIDE * joined
    return optuna.load_study(
        study_name=sweeper.study_name, storage=storage, sampler=make_sampler(sweeper, seed)
    )


# -------------------------------------------------------------------------------- trials
def count_done(study: optuna.Study) -> int:
    """Trials done: all finished ones except interrupted ones (their retry counts)."""
    trials = study.get_trials(deepcopy=False)
    cut = interrupted(trials)
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and t.number not in cut)
        for t in trials
    )


def run_batch(
    sweeper: TrainlabOptunaSweeper,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    trials: list[Trial],
    space: dict[str, BaseDistribution],
    fixed: list[str],
    block: dict[str, Any],
) -> None:
    """Launch `trials` as jobs numbered by trial; tell the study how each one went."""
    jobs: dict[int, list[str]] = {}
    for trial in trials:
        overrides = [*fixed, *(to_override(k, trial.params[k], d) for k, d in space.items())]
        trial.set_user_attr(OVERRIDES, overrides)
        job = [*overrides, f"+{TRIAL_KEY}={quote({**block, 'number': trial.number})}"]
        try:  # a combination that does not compose fails alone, before any launch
            check_jobs(sweeper.hydra_context, sweeper.config, [job])
        except Exception as ex:
            fail(study, trial, ex)
            # The leaderboard's record of a job that never started (its folder: the number).
            write_record(
                Path(sweeper.config.hydra.sweep.dir),
                {"job": trial.number, "run": str(trial.number), "overrides": overrides,
                 "status": "failed", "reason": trial.user_attrs.get(FAIL_REASON)},
            )  # fmt: skip
            continue
        jobs[trial.number] = job
    launched = [t for t in trials if t.number in jobs]
    for group in consecutive(launched):
        # Job numbers (and so folders: hydra.sweep.subdir) are the trial numbers.
        returns = sweeper.launcher.launch(
            [jobs[t.number] for t in group], initial_job_idx=group[0].number
        )
        for trial, job_return in zip(group, returns, strict=True):
            try:
                tell(study, storage, trial, job_return)
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as ex:
                # Taken for dead by another worker (no heartbeat in time): its retry is
                # that worker's; this job's folder keeps what it did.
                log.warning(f"trial {trial.number} was failed by another worker: {one_line(ex)}")


def consecutive(trials: list[Trial]) -> Iterator[list[Trial]]:
    """Runs of trials with consecutive numbers (a launcher numbers its jobs in a row)."""
    group: list[Trial] = []
    for trial in trials:
        if group and trial.number != group[-1].number + 1:
            yield group
            group = []
        group.append(trial)
    if group:
        yield group


def tell(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    trial: Trial,
    job: JobReturn,
) -> None:
    if job.hydra_cfg is not None:
        trial.set_user_attr(RUN_DIR, str(job.hydra_cfg.hydra.runtime.output_dir))
    if job.status != JobStatus.COMPLETED:
        # The job's exception (reading job.return_value would raise it, after a stderr line).
        fail(study, trial, job._return_value)
        return
    value = float(job.return_value)
    run_dir = job.hydra_cfg.hydra.runtime.output_dir if job.hydra_cfg is not None else None
    pruned_at = pruned_epoch(storage, study.study_name, trial.number, run_dir, forget=True)
    if pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
        log.info(f"trial {trial.number} pruned after epoch {pruned_at + 1}")
    elif not math.isfinite(value):
        fail(study, trial, ValueError(f"the objective is {value}"))
    else:
        study.tell(trial, value)
        log.info(f"trial {trial.number} complete: {value:.4f}  {_params_text(trial)}")


def fail(study: optuna.Study, trial: Trial, error: BaseException) -> None:
    reason = one_line(error)
    trial.set_user_attr(FAIL_REASON, reason)
    study.tell(trial, state=TrialState.FAIL)
    log.warning(f"trial {trial.number} failed: {reason}  ({_params_text(trial)})")


def _params_text(trial: Trial | FrozenTrial) -> str:
    return " ".join(f"{k}={short_number(v)}" for k, v in trial.params.items())
