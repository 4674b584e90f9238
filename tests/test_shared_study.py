"""Many sweep workers on one Optuna study: heartbeats, dead workers' trials, n_trials in all.

The quick tests run in-process on SQLite. The slow ones start a real PostgreSQL server
(tests/postgres_server.py; skipped with one line where none is installed) and real
`train.py -m` worker processes sharing a study, one of them killed mid-trial.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import cli_env, train_command
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hydra_plugins.trainlab_optuna_sweeper._workers import (
    DeadTrials,
    ask_lock,
    count_taken,
    fail_dead_trials,
    worker_id,
)
from trainlab.app.sweeps.leaderboard import build_leaderboard, to_markdown
from trainlab.app.sweeps.optuna_study import (
    RETRY_OF,
    WORKER,
    hide_password,
    interrupted,
    open_storage,
    with_driver,
)
from trainlab.errors import ConfigError

SPACE = {"x": FloatDistribution(0.0, 1.0)}


# ------------------------------------------------------------------------------ quick
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://me:pw@db:5432/s", "postgresql://me:***@db:5432/s"),
        ("postgresql+psycopg://me:p%40ss@db/s", "postgresql+psycopg://me:***@db/s"),
        ("postgresql://me@db/s", "postgresql://me@db/s"),
        ("sqlite:////tmp/o/optuna.db", "sqlite:////tmp/o/optuna.db"),
        ("mysql://u:a:b@h/d", "mysql://u:***@h/d"),
    ],
)
def test_passwords_are_hidden(url: str, shown: str) -> None:
    assert hide_password(url) == shown


def test_plain_postgresql_urls_use_the_installed_driver() -> None:
    assert with_driver("postgresql://me@db/s") == "postgresql+psycopg://me@db/s"
    assert with_driver("postgresql+psycopg2://me@db/s") == "postgresql+psycopg2://me@db/s"
    assert with_driver("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://me:pw@127.0.0.1:1/s", "hydra.sweeper.storage=postgresql://me:***@127"),
        ("nosuchdb://me:pw@h/s", "hydra.sweeper.storage=nosuchdb://me:***@h/s"),
        ("not a url", "hydra.sweeper.storage=not a url: cannot open the study's database"),
    ],
)
def test_an_unusable_storage_is_one_line_without_its_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        open_storage(url)
    message = str(raised.value)
    assert message.startswith(says) and "\n" not in message and len(message) < 400
    assert "pw" not in message.replace("psycopg", "")


def _study(tmp_path: Path, dead: DeadTrials, grace: int) -> optuna.Study:
    """The study `s` in tmp_path/optuna.db (created the first time), seen through a storage
    whose heartbeat grace is `grace` seconds."""
    storage = open_storage(
        f"sqlite:///{tmp_path / 'optuna.db'}",
        heartbeat_interval=1,
        grace_period=grace,
        heartbeat_stale_trial_callback=dead,
    )
    return optuna.create_study(study_name="s", storage=storage, load_if_exists=True)


def _ask(study: optuna.Study, worker: str) -> optuna.trial.Trial:
    with pytest.warns(UserWarning, match="Heartbeat"):
        trial = study.ask(SPACE)
    study._storage.record_heartbeat(trial._trial_id)
    trial.set_user_attr(WORKER, worker)
    trial.set_user_attr("overrides", [f"x={trial.params['x']}"])
    return trial


def test_dead_workers_trials_are_failed_and_queued_once_with_their_parameters(
    tmp_path: Path,
) -> None:
    dead = DeadTrials(tmp_path, grace_period_s=2)
    study = _study(tmp_path, dead, grace=3600)  # no heartbeat goes stale through this one
    here = worker_id().rsplit(":", 1)[0]
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = _ask(study, worker_id())  # this process: alive, never touched
    killed_here = _ask(study, f"{here}:{gone.pid}")  # this machine, process gone
    elsewhere = _ask(study, "other-host:1:4242")  # another machine: its heartbeat tells
    fail_dead_trials(study, dead)
    states = [t.state for t in study.trials]
    # The local dead process's trial goes at once; the other machine's waits for its grace.
    assert states[:3] == [TrialState.RUNNING, TrialState.FAIL, TrialState.RUNNING]
    impatient = _study(tmp_path, dead, grace=2)
    time.sleep(3.1)  # the heartbeat's clock counts whole seconds
    study._storage.record_heartbeat(alive._trial_id)  # a live worker's beat
    fail_dead_trials(impatient, dead)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL, TrialState.FAIL,
                                         TrialState.WAITING, TrialState.WAITING]  # fmt: skip
    assert interrupted(trials) == {1, 2}
    for original, retry in ((killed_here, trials[3]), (elsewhere, trials[4])):
        assert retry.params == original.params and retry.user_attrs[RETRY_OF] == original.number
        assert retry.user_attrs[WORKER] is None
        record = json.loads((tmp_path / f".job-{original.number}.json").read_text())
        assert record["reason"].endswith(f"queued again as trial {retry.number}")
    assert json.loads((tmp_path / ".job-1.json").read_text())["reason"] == (
        "its sweep process on this machine was killed; queued again as trial 3"
    )
    assert json.loads((tmp_path / ".job-2.json").read_text())["reason"] == (
        "its worker stopped beating (no heartbeat for 2 s); queued again as trial 4"
    )
    # Taken: the live one and both retries; the interrupted ones do not count.
    assert count_taken(study) == 3
    # The job records say so, and the leaderboard shows it.
    record = json.loads((tmp_path / ".job-2.json").read_text())
    assert record["status"] == "interrupted" and record["run"] == "2"
    rows = {row["run"]: row for row in build_leaderboard(tmp_path)}
    assert rows["2"]["status"] == "interrupted" and rows["2"]["rank"] is None
    board = to_markdown(list(rows.values()))
    assert "| interrupted: its worker stopped beating (no heartbeat for 2 s); queued again" in board
    assert "interrupted: interrupted" not in board

    # A retry whose worker dies too is failed, and not queued a third time.
    retry = _ask(study, f"{here}:{gone.pid}")
    assert retry.number == 3 and retry.params == killed_here.params
    fail_dead_trials(study, dead)
    again = json.loads((tmp_path / ".job-3.json").read_text())
    assert study.trials[3].state == TrialState.FAIL and interrupted(study.trials) == {1, 2}
    assert again["status"] == "failed"
    assert again["reason"].startswith("interrupted: ")  # failed, and why
    assert again["reason"].endswith("already a retry, so not queued again")
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 1
    assert count_taken(study) == 3  # the failed retry counts as a failure


def test_the_sqlite_ask_lock_is_one_worker_at_a_time(tmp_path: Path) -> None:
    import fcntl

    def free() -> bool:
        with open(tmp_path / "optuna.db.ask.lock", "a") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

    with ask_lock(f"sqlite:///{tmp_path / 'optuna.db'}", "s"):
        assert not free()
    assert free()


# ------------------------------------------------------------------- real PostgreSQL
QUICK = (
    "hparams_search=optuna_mlp",
    "model.hidden_sizes=[32]",
    "trainer.max_epochs=2",
    "data.batch_size=128",
    "logger=none",
    "callbacks=none",
)


@pytest.fixture(scope="module")
def postgres() -> str:
    from postgres_server import postgres_server

    try:
        server = postgres_server()
        url = server.__enter__()
    except LookupError as ex:
        pytest.skip(str(ex))
    yield url
    server.__exit__(None, None, None)


def start_worker(
    cwd: Path, *args: str, name: str, prefix: tuple[str, ...] = ()
) -> subprocess.Popen:
    log = open(cwd / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [*prefix, *train_command("-m", *QUICK, *args, cwd=cwd)],
        cwd=cwd,
        env=cli_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen, cwd: Path, name: str, timeout: float = 600) -> str:
    proc.wait(timeout=timeout)
    text = (cwd / f"{name}.log").read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


def check_study(study: optuna.Study, n_trials: int) -> None:
    trials = study.trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == len(trials)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == n_trials
    # A parameter set appears twice only as an interrupted trial and its one retry.
    counts = Counter(json.dumps(t.params, sort_keys=True) for t in trials)
    for params, count in counts.items():
        same = [t for t in trials if json.dumps(t.params, sort_keys=True) == params]
        retried = count == 2 and same[1].user_attrs.get(RETRY_OF) == same[0].number
        shown = [(t.number, t.state, t.user_attrs.get(RETRY_OF)) for t in same]
        assert count == 1 or retried, shown
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert study.best_trial.value == max(t.value for t in complete)


@pytest.mark.slow  # a PostgreSQL server and two sweep processes: about a minute
def test_two_workers_started_together_take_exactly_n_trials(tmp_path: Path, postgres: str) -> None:
    args = (f"hydra.sweeper.storage={postgres}", "hydra.sweeper.study_name=two",
            "hydra.sweeper.n_trials=6")  # fmt: skip
    workers = [start_worker(tmp_path, *args, name=f"w{i}") for i in range(2)]
    outputs = [finish(w, tmp_path, f"w{i}") for i, w in enumerate(workers)]
    study = load(postgres, "two")
    assert len(study.trials) == 6
    check_study(study, 6)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    # Both workers ran trials, and each trial ran in exactly one of them.
    ran = [{int(n) for n in _started_jobs(text)} for text in outputs]
    assert ran[0] and ran[1] and not ran[0] & ran[1] and ran[0] | ran[1] == set(range(6))
    # The password is never printed; the storage is shown with *** instead.
    password = postgres.split(":")[2].split("@")[0]
    assert all(password not in text for text in outputs)
    assert "in postgresql://trainlab:***@127.0.0.1" in outputs[0]
    # One leaderboard for the study, from the run folders of both workers.
    sweep = tmp_path / "outputs" / "sweeps" / "two"
    rows = build_leaderboard(sweep)
    assert sorted(row["run"] for row in rows) == [str(n) for n in range(6)]
    assert [row["rank"] for row in rows] == [1, 2, 3, 4, 5, 6]
    results = yaml.safe_load((sweep / "optuna_results.yaml").read_text())
    assert results["trials"]["complete"] == 6 and password not in results["storage"]
    assert results["best"]["number"] == study.best_trial.number


def _started_jobs(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.startswith("job ") and
            line.split()[2] == "started:"]  # fmt: skip


@pytest.mark.slow  # a PostgreSQL server and three sweep processes, one killed: 1-2 minutes
def test_a_killed_worker_s_trial_is_retried_once_by_another(tmp_path: Path, postgres: str) -> None:
    args = (f"hydra.sweeper.storage={postgres}", "hydra.sweeper.study_name=killed",
            "hydra.sweeper.n_trials=6", "hydra.sweeper.heartbeat_interval=1",
            "hydra.sweeper.grace_period=4", "trainer.max_epochs=6")  # fmt: skip
    # The doomed worker runs in a pid namespace of its own, as on another machine: the
    # others learn of its death from its heartbeat alone.
    unshare = shutil.which("unshare")
    prefix = (unshare, "--pid", "--fork", "--kill-child", "--mount-proc") if unshare else ()
    if prefix and subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        prefix = ()
    doomed = start_worker(tmp_path, *args, name="doomed", prefix=prefix)
    here = worker_id().rsplit(":", 1)[0]
    sweep = tmp_path / "outputs" / "sweeps" / "killed"
    victim = None
    deadline = time.monotonic() + 300
    try:
        while victim is None and doomed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            started = (sweep / "multirun.yaml").exists()
            with _quiet():
                trials = load(postgres, "killed").trials if started else []
            for t in trials:
                if t.state == TrialState.RUNNING and (sweep / str(t.number) / ".hydra").is_dir():
                    victim = t
        assert victim is not None, "the first worker never started a trial"
        others = [start_worker(tmp_path, *args, name=f"w{i}") for i in range(2)]
        time.sleep(1.0)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    assert prefix == () or not victim.user_attrs[WORKER].startswith(here)
    for i, worker in enumerate(others):
        finish(worker, tmp_path, f"w{i}")
    study = load(postgres, "killed")
    trials = study.trials
    check_study(study, 6)
    cut = trials[victim.number]
    assert cut.state == TrialState.FAIL and interrupted(trials) == {cut.number}
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == cut.number]
    assert retry.params == cut.params
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.user_attrs[WORKER] != cut.user_attrs[WORKER]
    assert len(trials) == 7 and [t.state for t in trials].count(TrialState.FAIL) == 1
    assert not (sweep / str(cut.number) / "metrics.json").exists()
    rows = {row["run"]: row for row in build_leaderboard(sweep)}
    assert rows[str(cut.number)]["status"] == "interrupted"
    assert f"queued again as trial {retry.number}" in rows[str(cut.number)]["reason"]
    assert rows[str(retry.number)]["status"] in ("complete", "pruned")


class _quiet:
    """Optuna logs a line when a study is loaded; the polling loop loads it often."""

    def __enter__(self) -> None:
        self.level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        optuna.logging.set_verbosity(self.level)


def test_postgres_fixture_finds_a_server_or_says_why() -> None:
    from postgres_server import find_bin

    found = find_bin()
    assert found is None or (found / "pg_ctl").is_file()
    assert os.environ.get("CI") != "true" or found is not None, "CI must install postgresql"


@pytest.mark.slow  # a dashboard server (and for postgres, a database server): 10-30 s
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_dashboard_serves_the_study_on_localhost(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    import httpx
    from postgres_server import free_port

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
    else:  # the form the docs give: with the driver SQLAlchemy would not guess
        url = with_driver(request.getfixturevalue("postgres"))
    study = optuna.create_study(study_name=f"watched-{backend}", storage=open_storage(url),
                                direction="maximize")  # fmt: skip
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    port = free_port()
    dashboard = shutil.which("optuna-dashboard")
    assert dashboard, "optuna-dashboard is installed with trainlab's cluster extra"
    server = subprocess.Popen([dashboard, url, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # its imports take a while on a busy machine
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/studies", timeout=5)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(0.2)
        assert response.status_code == 200
        # (The PostgreSQL database is the session's: other tests' studies may be there too.)
        summaries = response.json()["study_summaries"]
        (listed,) = [s for s in summaries if s["study_name"] == f"watched-{backend}"]
        detail = httpx.get(
            f"http://127.0.0.1:{port}/api/studies/{listed['study_id']}?after=0", timeout=30
        ).json()
        assert len(detail["trials"]) == 3
        assert detail["best_trials"][0]["values"] == [study.best_value]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(
    ("interval", "grace", "says"),
    [
        (0, 60, "hydra.sweeper.heartbeat_interval=0 must be an integer >= 1 (seconds)"),
        (10, 2.5, "hydra.sweeper.grace_period=2.5 must be an integer >= 1 (seconds)"),
        (10, 10, "hydra.sweeper.grace_period=10 must be longer than"),
        (True, 60, "hydra.sweeper.heartbeat_interval=True must be an integer"),
    ],
)
def test_heartbeat_settings_are_checked(interval, grace, says: str) -> None:
    from hydra_plugins.trainlab_optuna_sweeper._workers import check_heartbeat

    with pytest.raises(ConfigError, match=re.escape(says)):
        check_heartbeat(interval, grace)


@pytest.mark.slow  # the real command in a process of its own: 10-30 s
@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("hydra.sweeper.storage=postgresql://me:pw1@127.0.0.1:1/db",
         "error: hydra.sweeper.storage=postgresql://me:***@127.0.0.1:1/db: cannot open"),
        ("hydra.sweeper.grace_period=5",
         "error: hydra.sweeper.grace_period=5 must be longer than hydra.sweeper.heartbeat_"),
    ],
)  # fmt: skip
def test_a_bad_shared_storage_is_one_line_and_writes_nothing(
    tmp_path: Path, override: str, says: str
) -> None:
    from conftest import train_cli

    proc = train_cli("-m", "hparams_search=optuna_mlp", override, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(says) and "Traceback" not in proc.stderr
    assert "pw1" not in proc.stdout + proc.stderr
    assert not (tmp_path / "outputs").exists()
