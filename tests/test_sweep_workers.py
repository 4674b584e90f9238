"""`hydra.sweeper.workers=N`: one sweep command, N workers on this machine sharing its study.

The workers are forked from the sweep process once its imports are done, and run the same
loop as workers started by hand (tests/test_shared_study.py). These tests run the real
command on SQLite: the study ends with exactly n_trials, each trial run once, by both
workers; a killed worker's trial runs again at once in the parent; Ctrl-C stops them all,
and the same command resumes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import cli_env, train_cli, train_command
from optuna.trial import TrialState

from trainlab.app.sweeps.leaderboard import build_leaderboard
from trainlab.app.sweeps.optuna_study import RETRY_OF, WORKER, interrupted

QUICK = (
    "hparams_search=random_mlp",
    "model.hidden_sizes=[32]",
    "trainer.max_epochs=2",
    "data.batch_size=128",
    "logger=none",
    "callbacks=none",
)


def study_of(cwd: Path, name: str) -> optuna.Study:
    db = cwd / "outputs" / "sweeps" / name / "optuna.db"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def pid_of(worker: str) -> int:
    return int(worker.rsplit(":", 1)[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow  # a sweep process and its forked worker: 15 s (the default suite forks
# in test_sweeps' every-trial-failed study)
def test_two_workers_forked_here_take_exactly_n_trials_each_once(tmp_path: Path) -> None:
    proc = train_cli(
        "-m", *QUICK, "hydra.sweeper.workers=2", "hydra.sweeper.study_name=pair",
        "hydra.sweeper.n_trials=4", "trainer.max_epochs=1", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = study_of(tmp_path, "pair")
    trials = study.trials
    assert [t.number for t in trials] == list(range(4))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4
    # Both workers ran trials: the sweep process and the one it forked; both are gone.
    workers = Counter(t.user_attrs[WORKER] for t in trials)
    assert len(workers) == 2 and min(workers.values()) >= 1, workers
    assert not any(alive(pid_of(w)) for w in workers)
    # Each job started once; the study's state, the results and the leaderboard once.
    started = [line.split()[1] for line in proc.stdout.splitlines()
               if line.startswith("job ") and line.split()[2] == "started:"]  # fmt: skip
    assert sorted(started, key=int) == [str(n) for n in range(4)]
    log = proc.stdout + proc.stderr
    assert log.count("Optuna study 'pair'") == 1 and log.count("\nleaderboard (") == 1
    sweep = tmp_path / "outputs" / "sweeps" / "pair"
    assert sorted(row["run"] for row in build_leaderboard(sweep)) == ["0", "1", "2", "3"]
    results = yaml.safe_load((sweep / "optuna_results.yaml").read_text())
    assert results["trials"]["complete"] == 4
    assert results["best"]["number"] == study.best_trial.number
    # Each worker trained on its share of the 2 cores (one thread each, here).
    if len(os.sched_getaffinity(0)) == 2:
        assert proc.stdout.count("1 CPU thread (one core)") == 4


@pytest.mark.parametrize(
    ("workers", "launcher", "says"),
    [
        (0, None, "hydra.sweeper.workers=0 must be an integer >= 1"),
        (True, None, "hydra.sweeper.workers=True must be an integer >= 1"),
        (2, "joblib", "hydra.sweeper.workers=2 forks workers that run jobs themselves, but "
         "hydra/launcher runs them (JoblibLauncher): use its own parallelism"),
    ],
)  # fmt: skip
def test_bad_workers_settings_are_refused_before_anything_runs(workers, launcher, says) -> None:
    """(A ConfigError: the command prints it as its one line and exits with 2.)"""
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

    from hydra_plugins.trainlab_optuna_sweeper._options import check_workers
    from hydra_plugins.trainlab_optuna_sweeper.config import TrainlabOptunaSweeperConf
    from hydra_plugins.trainlab_optuna_sweeper.sweeper import TrainlabOptunaSweeper
    from trainlab.errors import ConfigError

    options = {k: v for k, v in vars(TrainlabOptunaSweeperConf()).items() if k != "_target_"}
    sweeper = TrainlabOptunaSweeper(**{**options, "workers": workers})
    if launcher == "joblib":
        sweeper.launcher = JoblibLauncher(n_jobs=2)
    with pytest.raises(ConfigError, match=re.escape(says)):
        check_workers(sweeper)


def start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        train_command("-m", *QUICK, *args, cwd=cwd),
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_running(cwd: Path, name: str, proc: subprocess.Popen, count: int) -> list:
    """The study's RUNNING trials once `count` of them run at once (each past its start).

    Reads the study through one storage, five times a second: a new connection every few
    milliseconds would hold SQLite's lock against the sweep itself."""
    deadline = time.monotonic() + 240
    db = cwd / "outputs" / "sweeps" / name / "optuna.db"
    storage = None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            # Once a job has started: the sweep has made the tables then. Opening the
            # storage as soon as the file appears raced the sweep to create them ("table
            # ... already exists", the sweep's exit 2).
            if storage is None and any(db.parent.glob(".job-*.json")):
                storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
            if storage is None:
                continue
            study = optuna.load_study(study_name=name, storage=storage)
            running = study.get_trials(states=(TrialState.RUNNING,))
        except Exception:  # the study is being created
            continue
        if len(running) >= count and all(WORKER in t.user_attrs for t in running):
            return running
    out = proc.communicate(timeout=60)[0] if proc.poll() is not None else "(still running)"
    raise AssertionError(f"never {count} trials running at once; exit {proc.returncode}: {out}")


@pytest.mark.slow  # a sweep whose forked worker is killed mid-trial: 20-40 s
def test_a_killed_forked_worker_s_trial_runs_again_in_the_parent(tmp_path: Path) -> None:
    proc = start(tmp_path, "hydra.sweeper.workers=2", "hydra.sweeper.study_name=cut",
                 "hydra.sweeper.n_trials=6", "trainer.max_epochs=60")  # fmt: skip
    # 60 epochs a trial (seconds): the trial seen running is still the one running when the
    # signal lands, however loaded the machine.
    running = wait_for_running(tmp_path, "cut", proc, 2)
    (victim,) = [t for t in running if pid_of(t.user_attrs[WORKER]) != proc.pid]
    os.kill(pid_of(victim.user_attrs[WORKER]), signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert f"sweep worker {pid_of(victim.user_attrs[WORKER])} was killed by SIGKILL" in out
    trials = study_of(tmp_path, "cut").trials
    cut = trials[victim.number]
    assert cut.state == TrialState.FAIL and interrupted(trials) == {cut.number}
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == cut.number]
    assert retry.params == cut.params and pid_of(retry.user_attrs[WORKER]) == proc.pid
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 6 and len(trials) == 7


@pytest.mark.slow  # a sweep stopped with Ctrl-C and resumed: 30-60 s
def test_ctrl_c_stops_every_worker_and_the_command_resumes(tmp_path: Path) -> None:
    args = ("hydra.sweeper.workers=2", "hydra.sweeper.study_name=stop",
            "hydra.sweeper.n_trials=6", "trainer.max_epochs=60")  # fmt: skip
    proc = start(tmp_path, *args)
    running = wait_for_running(tmp_path, "stop", proc, 2)
    proc.send_signal(signal.SIGINT)  # to the sweep process alone, as a terminal's Ctrl-C is
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted: SIGINT" in out
    assert not any(alive(pid_of(t.user_attrs[WORKER])) for t in running)

    again = train_cli("-m", *QUICK, *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = study_of(tmp_path, "stop").trials
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 6
    # The trials Ctrl-C cut (one in each worker) ran again, with their parameters.
    assert interrupted(trials) == {t.number for t in running}
    for cut in running:
        (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == cut.number]
        assert retry.params == cut.params


@pytest.mark.slow  # a sweep stopped with SIGTERM and resumed, with 1 and 2 workers: ~1 min
@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_signal_stops_the_study_and_the_command_resumes(tmp_path: Path, workers) -> None:
    """SIGTERM (a scheduler's preemption) stops every worker in its trial: no trial is
    recorded as failed and no new one starts; the same command runs the cut trials again."""
    args = (f"hydra.sweeper.workers={workers}", "hydra.sweeper.study_name=term",
            "hydra.sweeper.n_trials=3", "trainer.max_epochs=400")  # fmt: skip
    proc = start(tmp_path, *args)
    running = wait_for_running(tmp_path, "term", proc, workers)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    # (The sweep process may be between its jobs: "while training" is not certain.)
    last = out.strip().splitlines()[-1]
    assert (
        last.startswith("stopped: SIGTERM while ")
        and "; run the same command again: the study resumes" in last
    ), last
    assert not any(alive(pid_of(t.user_attrs[WORKER])) for t in running)
    trials = study_of(tmp_path, "term").trials
    assert [t.state for t in trials] == [TrialState.RUNNING] * workers

    again = train_cli("-m", *QUICK, *args[:-1], "trainer.max_epochs=2",
                      "hydra.sweeper.continue_with_changes=true", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    trials = study_of(tmp_path, "term").trials
    assert interrupted(trials) == {t.number for t in running}
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 3
