"""Optuna search through our Hydra sweeper: sampling, pruning, resume, failures, parallel jobs.

Each study runs the real train.py in a temporary folder and is read back from its optuna.db.
"""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from conftest import CONFIG_DIR, ROOT, cli_env, compose_config, read_metrics, train_cli
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.trainlab_optuna_sweeper._options import resolve_direction
from hydra_plugins.trainlab_optuna_sweeper._search_space import quote, split_overrides
from hydra_plugins.trainlab_optuna_sweeper._study import WORKERS_JOINED
from trainlab.app.sweeps.jobs import read_records
from trainlab.app.sweeps.optuna_study import (
    FAIL_REASON,
    PRUNED_AT,
    RETRY_OF,
    RUN_DIR,
    interrupted,
)

# Small, quick trials: a narrow MLP, a few epochs, no TensorBoard or checkpoints.
QUICK = ("data.batch_size=128", "logger=none", "callbacks=none")


def sweep_dir(cwd: Path, study: str) -> Path:
    return cwd / "outputs" / "sweeps" / study


def load_study(cwd: Path, study: str) -> optuna.Study:
    db = sweep_dir(cwd, study) / "optuna.db"
    return optuna.load_study(study_name=study, storage=f"sqlite:///{db}")


def job_config(trial: optuna.trial.FrozenTrial) -> dict:
    return yaml.safe_load((Path(trial.user_attrs[RUN_DIR]) / ".hydra" / "config.yaml").read_text())


def check_ran(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


# ----------------------------------------------------------------------- search space
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("x=interval(0.0, 0.5)", FloatDistribution(0.0, 0.5)),
        ("x=tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
        ("x=int(interval(16, 256))", IntDistribution(16, 256)),
        ("x=tag(log, int(interval(16, 256)))", IntDistribution(16, 256, log=True)),
        ("x=range(1, 10, 3)", IntDistribution(1, 7, step=3)),
        ("x=range(8, 0, -2)", IntDistribution(2, 8, step=2)),
        ("x=range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
        ("x=choice([128], [256,128])", CategoricalDistribution(["[128]", "[256,128]"])),
        ("model=mlp,cnn", CategoricalDistribution(["mlp", "cnn"])),
    ],
)
def test_sweep_syntax_becomes_a_distribution(override: str, expected) -> None:
    space, fixed = split_overrides([override], OverridesParser.create())
    assert space == {override.split("=")[0]: expected}
    assert fixed == {}


def test_later_overrides_replace_earlier_ones() -> None:
    space, fixed = split_overrides(
        ["optim.lr=interval(0.1, 0.2)", "model.dropout=interval(0.0, 0.5)", "optim.lr=0.01"],
        OverridesParser.create(),
    )
    assert space == {"model.dropout": FloatDistribution(0.0, 0.5)}
    assert fixed == {"optim.lr": "optim.lr=0.01"}


@pytest.mark.parametrize(
    "value",
    ["sqlite:////tmp/a b/optuna.db", "it's", "back\\slash", "ends\\", {"a": [1, 2.5e-7, None]}],
)
def test_values_passed_to_jobs_survive_the_override_parser(value) -> None:
    parsed = OverridesParser.create().parse_override(f"key={quote(value)}").value()
    assert parsed == value


@pytest.mark.parametrize(
    ("objective", "direction"),
    [
        ("auto", "maximize"),
        ("val/acc", "maximize"),
        ("val/loss", "minimize"),
        ("val/r2", "maximize"),
    ],
)
def test_direction_auto_follows_the_objective(objective: str, direction: str) -> None:
    assert resolve_direction("auto", objective) == direction


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "hparams_search").glob("*.yaml")))
def test_every_search_config_composes(path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from trainlab.app.config import validate

    validate(compose_config(f"hparams_search={path.stem}"))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [f"hparams_search={path.stem}"], return_hydra_config=True)
    sweeper = instantiate(cfg.hydra.sweeper)
    assert type(sweeper).__name__ == "TrainlabOptunaSweeper"
    assert cfg.hydra.sweep.dir == f"outputs/sweeps/{sweeper.study_name}"
    params = [f"{k}={v}" for k, v in sweeper.params.items()]
    space, _ = split_overrides(params, OverridesParser.create())
    assert space["optim.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["model.hidden_sizes"].choices == ("[128]", "[256,128]", "[512,256]")


# ------------------------------------------------------------------ TPE with pruning
TPE_TRIALS, TPE_EPOCHS = 10, 4
LR_LOW, LR_HIGH = 1e-5, 1.0  # wide on purpose: the low end learns too slowly, gets pruned
WIDTHS = ("[32]", "[64,32]")


@pytest.fixture(scope="module")
def tpe_study(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, optuna.Study]:
    cwd = tmp_path_factory.mktemp("tpe")
    proc = train_cli(
        "-m",
        "hparams_search=optuna_mlp",
        "hydra.sweeper.study_name=tpe",
        f"hydra.sweeper.n_trials={TPE_TRIALS}",
        "hydra.sweeper.tpe.n_startup_trials=4",
        "hydra.sweeper.median.n_startup_trials=2",
        "hydra.sweeper.median.n_warmup_steps=1",
        f"optim.lr=tag(log,interval({LR_LOW},{LR_HIGH}))",
        f"model.hidden_sizes=choice({','.join(WIDTHS)})",
        f"trainer.max_epochs={TPE_EPOCHS}",
        *QUICK,
        cwd=cwd,
    )
    check_ran(proc)
    return cwd, proc, load_study(cwd, "tpe")


def test_tpe_study_completes_and_prunes(tpe_study) -> None:
    cwd, _, study = tpe_study
    states = [t.state for t in study.trials]
    assert len(states) == TPE_TRIALS
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert states.count(TrialState.COMPLETE) >= 2
    assert states.count(TrialState.PRUNED) >= 1
    for trial in study.trials:
        metrics = read_metrics(Path(trial.user_attrs[RUN_DIR]))
        epochs = sorted(trial.intermediate_values)
        if trial.state == TrialState.COMPLETE:
            # The study holds the job's objective; each epoch's value was reported.
            assert trial.value == metrics["objective"]["value"]
            assert epochs == list(range(TPE_EPOCHS))
            assert trial.value == trial.intermediate_values[TPE_EPOCHS - 1]
        else:
            # Stopped at the epoch the pruner named; the study keeps that epoch's value.
            stopped = trial.user_attrs[PRUNED_AT]
            assert 1 <= stopped < TPE_EPOCHS  # not before the warm-up epoch
            assert epochs == list(range(stopped + 1))
            assert metrics["epochs"] == stopped + 1
            assert trial.value == trial.intermediate_values[stopped]
    # Each job's record (what the leaderboard marks) says how its trial ended, as the
    # study does: the job knew its pruner's verdict without asking storage.
    records = {r["job"]: r["status"] for r in read_records(sweep_dir(cwd, "tpe"))}
    named = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
    assert records == {t.number: named[t.state] for t in study.trials}


def test_pruned_trials_were_behind_the_median(tpe_study) -> None:
    _, _, study = tpe_study
    for trial in study.trials:
        if trial.state != TrialState.PRUNED:
            continue
        # MedianPruner: the trial's best so far is below the median of the trials completed
        # before it (trials run one after another here), at the epoch it was stopped.
        step = trial.user_attrs[PRUNED_AT]
        completed = [
            t.intermediate_values[step]
            for t in study.trials
            if t.number < trial.number and t.state == TrialState.COMPLETE
        ]
        assert len(completed) >= 2
        assert max(trial.intermediate_values.values()) < np.median(completed)


def test_log_scale_samples_stay_in_range_and_reach_the_job(tpe_study) -> None:
    _, _, study = tpe_study
    for trial in study.trials:
        assert trial.distributions["optim.lr"] == FloatDistribution(LR_LOW, LR_HIGH, log=True)
        lr = trial.params["optim.lr"]
        assert LR_LOW <= lr <= LR_HIGH
        assert 0.0 <= trial.params["model.dropout"] <= 0.5
        assert job_config(trial)["optim"]["lr"] == lr
    # Log-uniform over five decades: values spread over several of them.
    decades = {math.floor(math.log10(t.params["optim.lr"])) for t in study.trials}
    assert len(decades) >= 3


def test_choice_takes_only_listed_values(tpe_study) -> None:
    _, _, study = tpe_study
    allowed = {"[32]": [32], "[64,32]": [64, 32]}
    for trial in study.trials:
        width = trial.params["model.hidden_sizes"]
        assert width in allowed
        assert job_config(trial)["model"]["hidden_sizes"] == allowed[width]


def test_results_file_names_the_best_trial(tpe_study) -> None:
    cwd, proc, study = tpe_study
    results = yaml.safe_load((sweep_dir(cwd, "tpe") / "optuna_results.yaml").read_text())
    states = [t.state for t in study.trials]
    assert results["trials"] == {
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": 0,
        "interrupted": 0,
    }
    best = results["best"]
    assert best["number"] == study.best_trial.number
    assert best["value"] == study.best_value
    assert best["params"]["optim.lr"] == study.best_params["optim.lr"]
    assert best["params"]["model.hidden_sizes"] in ([32], [64, 32])
    assert results["objective"] == "val/acc"
    assert f"best trial {best['number']}: val/acc = {best['value']:.4f}" in proc.stdout


# ------------------------------------------------------------------------------ resume
RESUME = (
    "-m",
    "hparams_search=optuna_mlp",
    "hydra.sweeper.study_name=resume",
    "hydra.sweeper.sampler=random",
    "hydra.sweeper.pruner=none",
    # A command-line sweep replaces the config's; a plain value takes a key out of the space.
    "optim.lr=tag(log,interval(1e-3,1e-2))",
    "model.hidden_sizes=[32]",
    "trainer.max_epochs=2",
    *QUICK,
)


@pytest.mark.slow  # a real process killed and resumed: long; run with -m slow
def test_resume_runs_only_the_missing_trials(tmp_path: Path) -> None:
    check_ran(train_cli(*RESUME, "hydra.sweeper.n_trials=3", cwd=tmp_path))
    first = load_study(tmp_path, "resume").trials
    metrics_before = [read_metrics(Path(t.user_attrs[RUN_DIR])) for t in first]

    proc = train_cli(*RESUME, "hydra.sweeper.n_trials=6", cwd=tmp_path)
    check_ran(proc)
    assert "3 of 6 trials done" in proc.stdout
    trials = load_study(tmp_path, "resume").trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4, 5]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for old, new, metrics in zip(first, trials[:3], metrics_before, strict=True):
        assert (new.params, new.value, new.datetime_complete) == (
            old.params,
            old.value,
            old.datetime_complete,
        )
        assert read_metrics(Path(new.user_attrs[RUN_DIR])) == metrics
    # Each trial has its own folder, named by its number.
    folders = [Path(t.user_attrs[RUN_DIR]) for t in trials]
    assert [f.name for f in folders] == ["0", "1", "2", "3", "4", "5"]
    assert all((f / "metrics.json").is_file() for f in folders)
    # The resumed sampler does not repeat the first run's draws; the space is as given.
    assert len({t.params["optim.lr"] for t in trials}) == 6
    assert all(1e-3 <= t.params["optim.lr"] <= 1e-2 for t in trials)
    assert set(trials[0].params) == {"optim.lr", "optim.weight_decay", "model.dropout"}


@pytest.mark.slow  # a real process killed and resumed: long; run with -m slow
def test_interrupted_study_resumes_and_retries_the_cut_trial(tmp_path: Path) -> None:
    args = (*RESUME, "hydra.sweeper.study_name=killed", "hydra.sweeper.n_trials=3")
    first_job = sweep_dir(tmp_path, "killed") / "0"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, f"paths.root_dir={tmp_path / 'outputs'}"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not first_job.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first_job.exists(), "the first trial never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert load_study(tmp_path, "killed").trials[0].state == TrialState.RUNNING

    check_ran(train_cli(*args, cwd=tmp_path))
    trials = load_study(tmp_path, "killed").trials
    cut = trials[0]
    assert cut.state == TrialState.FAIL
    assert interrupted(trials) == {0}
    assert not (first_job / "metrics.json").exists()
    # The cut trial runs again as trial 1, with its parameters; 3 trials count in all.
    assert trials[1].user_attrs[RETRY_OF] == 0
    assert trials[1].params == cut.params
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * 3
    assert [Path(t.user_attrs[RUN_DIR]).name for t in trials[1:]] == ["1", "2", "3"]
    results = yaml.safe_load((sweep_dir(tmp_path, "killed") / "optuna_results.yaml").read_text())
    assert results["trials"] == {"complete": 3, "pruned": 0, "failed": 0, "interrupted": 1}


# ---------------------------------------------------------------------------- failures
def test_a_study_whose_every_trial_failed_ends_with_one_line_and_status_2(tmp_path) -> None:
    """A setting every job shares is wrong: each trial fails, and the sweep says so at the
    end (exit status 2), not as a finished search. With a forked worker too (workers=2):
    the worker ends quietly and the sweep process says it once."""
    proc = train_cli(
        "-m", "hparams_search=random_mlp", "hydra.sweeper.study_name=broken",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.workers=2", "trainer.max_epochs=-1",
        *QUICK, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    reason = "trainer.max_epochs=-1 is out of range: it must be >= 1, e.g. trainer.max_epochs=30"
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: every trial of study 'broken' failed; trial 0: {reason} (fix it, then run "
        "again with a new hydra.sweeper.study_name=...)"
    )
    assert "A new study created" not in proc.stderr  # Optuna's own line: the sweep says it
    trials = load_study(tmp_path, "broken").trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    # Both workers joined the study (the forked one too), and the line is said once.
    assert load_study(tmp_path, "broken").user_attrs[WORKERS_JOINED] == 2
    assert proc.stderr.count("every trial of study") == 1 and "sweep worker" not in proc.stderr
    assert (sweep_dir(tmp_path, "broken") / "optuna_results.yaml").is_file()


@pytest.mark.slow
def test_failing_trial_is_recorded_and_the_study_goes_on(tmp_path: Path) -> None:
    proc = train_cli(
        "-m",
        "hydra/sweeper=trainlab_optuna",  # without a search config: the study is in multirun/
        "hydra.sweeper.study_name=failing",
        "hydra.sweeper.sampler=random",
        "hydra.sweeper.n_trials=6",
        "optim.lr=choice(-1,0.01)",  # -1 is refused by the config check
        "model.hidden_sizes=[32]",
        "trainer.max_epochs=1",
        *QUICK,
        cwd=tmp_path,
    )
    check_ran(proc)
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    trials = optuna.load_study(study_name="failing", storage=storage).trials
    assert len(trials) == 6
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert failed and complete and len(failed) + len(complete) == 6
    for trial in failed:
        assert trial.params["optim.lr"] == "-1"
        reason = "optim.lr=-1.0 is out of range: it must be > 0, e.g. optim.lr=0.001"
        assert trial.user_attrs[FAIL_REASON] == reason
        assert f"trial {trial.number} failed: {reason}" in proc.stdout
        assert not Path(trial.user_attrs[RUN_DIR]).exists()  # nothing but bookkeeping
    assert all(t.params["optim.lr"] == "0.01" for t in complete)
    assert proc.stderr.count("error: optim.lr=-1.0 is out of range") == len(failed)


@pytest.mark.slow  # tests/test_leaderboard_faults.py checks a failed job by default
def test_grid_sweep_runs_every_job_then_reports_the_failure(tmp_path: Path) -> None:
    proc = train_cli("-m", "optim.lr=-1,0.01", "trainer.max_epochs=1", *QUICK, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: optim.lr=-1.0 is out of range: it must be > 0, e.g. optim.lr=0.001"
    )
    assert "Error executing job" not in proc.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    assert not (sweep / "0").exists()
    assert read_metrics(sweep / "1")["epochs"] == 1


def test_misspelled_search_key_stops_before_any_trial(tmp_path: Path) -> None:
    proc = train_cli(
        "-m",
        "hparams_search=optuna_mlp",
        "hydra.sweeper.params=null",
        "optim.lrr=interval(0.1,0.2)",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "error: cannot search 'optim.lrr': it is neither a config key nor a config group" in (
        proc.stderr
    )
    assert "did you mean 'optim.lr'?" in proc.stderr
    assert not (sweep_dir(tmp_path, "optuna_mlp") / "optuna.db").exists()


# ---------------------------------------------------------------------------- parallel
@pytest.mark.slow  # three processes (the sweep and two joblib workers), each importing torch
def test_parallel_trials_with_the_joblib_launcher(tmp_path: Path) -> None:
    proc = train_cli(
        "-m",
        "hparams_search=optuna_mlp",
        "hydra/launcher=joblib",
        "hydra.sweeper.study_name=parallel",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "model.hidden_sizes=[32]",
        "trainer.max_epochs=2",
        *QUICK,
        cwd=tmp_path,
    )
    check_ran(proc)
    assert "Joblib.Parallel(n_jobs=-1" in proc.stdout and "is launching 2 jobs" in proc.stdout
    trials = load_study(tmp_path, "parallel").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:
        metrics = json.loads((Path(trial.user_attrs[RUN_DIR]) / "metrics.json").read_text())
        assert trial.value == metrics["objective"]["value"]
        # Reported from the worker processes through the shared SQLite storage.
        assert sorted(trial.intermediate_values) == [0, 1]


@pytest.mark.slow  # two sweeps, one after the other: ~30 s
def test_a_workers_leaderboard_lists_the_trials_run_on_another_file_system(tmp_path) -> None:
    """Two workers of one study with run folders apart (another paths.root_dir): the one
    that ends last lists every trial, the other's from the study."""
    storage = f"hydra.sweeper.storage=sqlite:///{tmp_path / 'shared.db'}"
    for root, n_trials in (("a", 2), ("b", 4)):
        check_ran(train_cli(
            "-m", "hparams_search=random_mlp", storage, f"hydra.sweeper.n_trials={n_trials}",
            "trainer.max_epochs=2", *QUICK, f"paths.root_dir={tmp_path / root}", cwd=tmp_path,
        ))  # fmt: skip
    study = optuna.load_study(study_name="random_mlp", storage=storage.split("=", 1)[1])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    folder = tmp_path / "b" / "sweeps" / "random_mlp"  # paths.root_dir=b
    board = (folder / "leaderboard.csv").read_text()
    rows = {row["run"]: row for row in csv.DictReader(io.StringIO(board))}
    assert sorted(rows) == ["0", "1", "2", "3"]
    assert not (folder / "0").exists()  # in a/ only
    for trial in study.trials:
        assert float(rows[str(trial.number)]["val/acc"]) == pytest.approx(trial.value)
        assert rows[str(trial.number)]["status"] == "complete"
    assert sorted(int(row["rank"]) for row in rows.values()) == [1, 2, 3, 4]
