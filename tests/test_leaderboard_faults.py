"""Sweeps seen from the outside: a line per job as it starts and ends, and a leaderboard that
marks every job complete, pruned or failed (with its reason), short overrides, each job's
own wall time, written even when a job fails."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import optuna
import pytest
from conftest import train_cli
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from trainlab.app.sweeps.jobs import short_overrides, short_value
from trainlab.app.sweeps.leaderboard import build_leaderboard, swept_keys

REASON = "RNN cannot take features data (data: breast_cancer); models that fit: model=mlp"


def read_board(sweep: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((sweep / "leaderboard.csv").read_text())))


@pytest.fixture(scope="module")
def failing_grid(tmp_path_factory):
    """A 2x2 grid whose rnn x breast_cancer job fails when the model is built."""
    cwd = tmp_path_factory.mktemp("grid")
    proc = train_cli(
        "-m",
        "model=mlp,rnn",
        "data=digits,breast_cancer",
        "optim.lr=0.003",
        "debug=fast",
        "callbacks=none",
        cwd=cwd,
    )
    (sweep,) = (cwd / "outputs" / "multirun").iterdir()
    return proc, sweep


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_grid_with_a_failed_job_still_writes_the_leaderboard(failing_grid) -> None:
    proc, sweep = failing_grid
    # The other jobs ran; the sweep ends with the failure's line and a non-zero status.
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {REASON}"
    assert "Error executing job" not in proc.stderr  # Hydra's own notice, not ours
    rows = {row["run"]: row for row in read_board(sweep)}
    assert sorted(rows) == ["0", "1", "2", "3"]
    assert [rows[r]["status"] for r in "0123"] == ["complete", "complete", "complete", "failed"]
    assert rows["3"]["reason"] == REASON and rows["3"]["rank"] == ""
    assert sorted(rows[r]["rank"] for r in "012") == ["1", "2", "3"]
    # Only the swept keys: not optim.lr, debug or the paths every job shares.
    assert rows["3"]["overrides"] == "model=rnn data=breast_cancer"
    markdown = (sweep / "leaderboard.md").read_text()
    assert f"| - | 3 | model=rnn data=breast_cancer | failed: {REASON} |" in markdown
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_wall_time_is_each_jobs_own(failing_grid) -> None:
    _, sweep = failing_grid
    for row in read_board(sweep):
        record = json.loads((sweep / f".job-{row['run']}.json").read_text())
        assert float(row["wall_time_s"]) == record["wall_time_s"] > 0
        if row["status"] == "complete":
            # From the job's start (after the process's imports), so it holds the run's time.
            metrics = json.loads((sweep / row["run"] / "metrics.json").read_text())
            assert record["wall_time_s"] >= metrics["wall_time_s"]


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_grid_prints_a_line_per_job(failing_grid) -> None:
    proc, _ = failing_grid
    lines = proc.stdout.splitlines()
    for job, what in enumerate(
        ["model=mlp data=digits", "model=mlp data=breast_cancer", "model=rnn data=digits"]
    ):
        assert f"job {job} started: {what} optim.lr=0.003 debug=fast callbacks=none" in lines
        assert any(line.startswith(f"job {job} complete in ") for line in lines)
        assert any(": val/acc = 0." in line for line in lines if line.startswith(f"job {job} "))
    assert any(line.startswith("job 3 failed after ") and REASON in line for line in lines)


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_grid_jobs_show_the_swept_hparams_first(failing_grid) -> None:
    _, sweep = failing_grid
    events = EventAccumulator(str(sweep / "2" / "tb"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    infos = experiment.hparam_infos
    # The command's keys, in its order, marked as differing (TensorBoard lists those first).
    assert [(i.name, i.differs) for i in infos[:5]] == [
        ("model", True),
        ("data", True),
        ("optim.lr", True),
        ("debug", True),
        ("callbacks", True),
    ]
    assert not any(i.differs for i in infos[5:])
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["model"].string_value == "rnn" and values["data"].string_value == "digits"
    assert values["model.bidirectional"].WhichOneof("kind") == "bool_value"


# ------------------------------------------------------------------ Optuna with pruning
PRUNING_ARGS = (
    "-m",
    "hparams_search=optuna_mlp",
    "hydra.sweeper.study_name=pruning",
    "hydra.sweeper.sampler=random",
    "hydra.sweeper.n_trials=5",
    "hydra.sweeper.median.n_startup_trials=1",
    "hydra.sweeper.median.n_warmup_steps=0",
    "hydra.sweeper.params=null",
    "optim.lr=choice(0.01,0.00001)",  # the low rate falls behind at once
    "model.hidden_sizes=[32]",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=4",
    "logger=none",
    "callbacks=none",
)


@pytest.fixture(scope="module")
def pruned_study(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("pruning")
    proc = train_cli(*PRUNING_ARGS, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = cwd / "outputs" / "sweeps" / "pruning"
    study = optuna.load_study(study_name="pruning", storage=f"sqlite:///{sweep / 'optuna.db'}")
    return proc, sweep, study


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_pruned_trials_are_marked_in_the_leaderboard(pruned_study) -> None:
    proc, sweep, study = pruned_study
    states = {str(t.number): t.state for t in study.trials}
    assert TrialState.PRUNED in states.values() and TrialState.COMPLETE in states.values()
    rows = {row["run"]: row for row in read_board(sweep)}
    assert sorted(rows) == sorted(states)
    expected = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
    assert {run: row["status"] for run, row in rows.items()} == {
        run: expected[state] for run, state in states.items()
    }
    for row in rows.values():  # ranked: complete ones only, best first
        assert (row["rank"] != "") == (row["status"] == "complete")
        assert row["overrides"] in ("optim.lr=0.01", "optim.lr=1e-05")
    for trial in study.trials:
        if trial.state == TrialState.PRUNED:
            assert f"job {trial.number} pruned in " in proc.stdout


@pytest.mark.slow
def test_a_study_with_other_settings_continues_only_when_asked(pruned_study) -> None:
    _, sweep, study = pruned_study
    cwd = sweep.parents[2]
    before = {p.name: p.read_bytes() for p in sweep.iterdir() if p.is_file()}
    trials = len(study.trials)
    # Another epoch count (and one more trial) under the same study name: refused.
    changed = (*PRUNING_ARGS, "trainer.max_epochs=2", "hydra.sweeper.n_trials=6")
    proc = train_cli(*changed, cwd=cwd)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: study 'pruning' exists with other settings (trainer.max_epochs 3 -> 2); to "
        "continue it anyway add hydra.sweeper.continue_with_changes=true, or start a new one "
        "with hydra.sweeper.study_name=<new name>"
    ]
    assert {p.name: p.read_bytes() for p in sweep.iterdir() if p.is_file()} == before
    reload = optuna.load_study(study_name="pruning", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert len(reload.trials) == trials
    # Asked for: it goes on with the new settings, which the study then keeps.
    proc = train_cli(*changed, "hydra.sweeper.continue_with_changes=true", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "continuing study 'pruning' with changed settings: trainer.max_epochs 3 -> 2" in (
        proc.stdout
    )
    reload = optuna.load_study(study_name="pruning", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert len(reload.trials) == trials + 1
    assert reload.user_attrs["trainlab_settings"]["trainer.max_epochs"] == "2"


# ------------------------------------------------------------------------- in-process
def test_overrides_are_short_and_only_the_swept_keys() -> None:
    runs = [
        ["optim.lr=0.0012345678901", "model=mlp", "trainer.max_epochs=3", "paths.root_dir=x"],
        ["optim.lr=0.03", "model=mlp", "trainer.max_epochs=3", "+optuna_trial={a: 1}"],
    ]
    keys = swept_keys(runs)
    assert keys == {"optim.lr"}
    assert short_overrides(runs[0], keys) == "optim.lr=0.001235"
    assert short_overrides(runs[0]) == "optim.lr=0.001235 model=mlp trainer.max_epochs=3"
    assert [short_value(v) for v in ("1e-5", "3", "[32,16]", "0.5", "inf", "adam")] == [
        "1e-05", "3", "[32,16]", "0.5", "inf", "adam",
    ]  # fmt: skip


def test_a_job_record_without_a_run_folder_is_a_failed_row(tmp_path) -> None:
    record = {"job": 0, "run": "0", "overrides": ["x=1"], "status": "failed", "reason": "bad x"}
    (tmp_path / ".job-0.json").write_text(json.dumps({**record, "wall_time_s": 0.1}))
    running = {"job": 1, "run": "1", "overrides": ["x=2"], "status": "running"}
    (tmp_path / ".job-1.json").write_text(json.dumps(running))
    rows = build_leaderboard(tmp_path)
    assert [(r["run"], r["status"], r.get("reason")) for r in rows] == [
        ("0", "failed", "bad x"),
        ("1", "no result", None),
    ]
    assert [r["overrides"] for r in rows] == ["x=1", "x=2"]


@pytest.mark.slow  # a process per job, each importing torch
def test_submitit_jobs_are_reported_by_the_sweep_process(tmp_path) -> None:
    proc = train_cli(
        "-m",
        "hydra/launcher=submitit_local",
        "optim.lr=0.001,0.01",
        "debug=fast",
        "logger=none",
        "callbacks=none",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for job, lr in enumerate(["0.001", "0.01"]):
        assert f"job {job} started: optim.lr={lr} debug=fast logger=none callbacks=none" in lines
        assert any(line.startswith(f"job {job} complete in ") for line in lines)


def test_private_api_job_return_keeps_the_failure() -> None:
    """Pins Hydra's `JobReturn._return_value`, which the job records and the Optuna sweeper
    read: the job's exception (reading `return_value` would log and raise it) or value."""
    from hydra.core.utils import JobReturn, JobStatus

    failed = JobReturn()
    failed.status, failed.return_value = JobStatus.FAILED, ValueError("bad x")
    assert isinstance(failed._return_value, ValueError) and str(failed._return_value) == "bad x"
    done = JobReturn()
    done.status, done.return_value = JobStatus.COMPLETED, 0.5
    assert done._return_value == 0.5
