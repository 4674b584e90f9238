"""The leaderboard of a folder of runs: sorted by the objective, unfinished runs last."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def make_run(folder, name, overrides, objective=None, value=None):
    run = folder / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("{}\n")
    (run / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in [*overrides, f"paths.root_dir={folder}"])
    )
    if objective is not None:
        metrics = {
            "objective": {"name": objective, "value": value},
            "epochs": 3,
            "wall_time_s": 1.5,
            "val": {objective: value, "val/loss": 1 - value},
            "test": {objective.replace("val/", "test/"): value - 0.01},
        }
        (run / "metrics.json").write_text(json.dumps(metrics))


def test_script_ranks_runs_and_lists_unfinished_ones_last(tmp_path) -> None:
    make_run(tmp_path, "0", ["optim.lr=0.1"], "val/acc", 0.80)
    make_run(tmp_path, "1", ["optim.lr=0.01"], "val/acc", 0.95)
    make_run(tmp_path, "2", ["optim.lr=1.0"])  # stopped before it wrote a result
    make_run(tmp_path, "3", ["optim.lr=0.001"], "val/acc", 0.90)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "leaderboard.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[2].startswith("| 1 | 1 | optim.lr=0.01 | complete | 0.9500 | 0.9400 | 3 | 1.5 |")
    assert lines[3].startswith("| 2 | 3 | optim.lr=0.001 | complete | 0.9000")
    assert lines[4].startswith("| 3 | 0 | optim.lr=0.1 | complete | 0.8000")
    assert lines[5] == "| - | 2 | optim.lr=1.0 | no result | - | - | - | - |"
    assert (tmp_path / "leaderboard.md").read_text() == result.stdout
    rows = (tmp_path / "leaderboard.csv").read_text().splitlines()
    assert len(rows) == 5 and "val/loss" in rows[0] and "test/acc" in rows[0]


def test_loss_objectives_sort_ascending(tmp_path) -> None:
    from trainlab.app.sweeps.leaderboard import build_leaderboard

    make_run(tmp_path, "a", ["x=1"], "val/loss", 0.5)
    make_run(tmp_path, "b", ["x=2"], "val/loss", 0.2)
    assert [r["run"] for r in build_leaderboard(tmp_path)] == ["b", "a"]


def test_missing_folder_is_one_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "leaderboard.py"), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_rewrite_reads_again_what_changed_and_rows_are_not_shared(tmp_path) -> None:
    """A sweep rewrites the leaderboard after each job from what it read before: a run that
    got its result meanwhile (or a new one) shows, and one build's rows change no other."""
    import shutil

    from trainlab.app.sweeps.leaderboard import build_leaderboard

    make_run(tmp_path, "0", ["optim.lr=0.1"], "val/acc", 0.80)
    make_run(tmp_path, "1", ["optim.lr=0.01"])
    first = build_leaderboard(tmp_path)
    assert [(r["run"], r["status"]) for r in first] == [("0", "complete"), ("1", "no result")]
    first[0]["value"] = -1.0  # a caller's edit stays in its rows
    shutil.rmtree(tmp_path / "1")
    make_run(tmp_path, "1", ["optim.lr=0.01"], "val/acc", 0.95)
    again = build_leaderboard(tmp_path)
    assert [(r["run"], r["value"]) for r in again] == [("1", 0.95), ("0", 0.80)]


def test_a_shared_studys_trials_run_elsewhere_join_the_leaderboard(tmp_path) -> None:
    """Workers on other file systems leave no folder here: their trials come from the
    study, ranked with the runs here (the study's own record of each)."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from trainlab.app.sweeps.leaderboard import build_leaderboard, study_rows, to_markdown
    from trainlab.app.sweeps.optuna_study import FAIL_REASON, OVERRIDES, RETRY_OF

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    space = {"optim.lr": FloatDistribution(1e-4, 1.0, log=True)}

    def trial(lr: float, reports: list[float]) -> optuna.Trial:
        made = study.ask(space)
        made.set_user_attr(OVERRIDES, [f"optim.lr={lr}"])
        for epoch, value in enumerate(reports):
            made.report(value, epoch)
        return made

    study.tell(trial(0.1, [0.5, 0.8]), 0.8)  # 0: run here too
    study.tell(trial(0.01, [0.7, 0.9, 0.97]), 0.97)  # 1: elsewhere
    study.tell(trial(1.0, [0.2]), state=TrialState.PRUNED)  # 2: pruned elsewhere
    failed = trial(3.0, [])
    failed.set_user_attr(FAIL_REASON, "optim.lr=3.0 diverged")
    study.tell(failed, state=TrialState.FAIL)  # 3
    study.tell(trial(0.02, [0.6]), state=TrialState.FAIL)  # 4: its worker died...
    trial(0.05, [0.4])  # 5: running elsewhere
    study.enqueue_trial({"optim.lr": 0.02}, user_attrs={RETRY_OF: 4})  # 6: 4 queued again
    make_run(tmp_path, "0", ["optim.lr=0.1"], "val/acc", 0.80)

    rows = build_leaderboard(tmp_path, study_rows(study.trials), objective="auto")
    by_run = {row["run"]: row for row in rows}
    assert [row["run"] for row in rows[:3]] == ["1", "0", "2"]  # complete by value, pruned
    assert by_run["1"]["val/acc"] == 0.97 and by_run["1"]["rank"] == 1
    assert by_run["1"]["epochs"] == 3 and by_run["1"]["wall_time_s"] >= 0
    assert by_run["0"]["test/acc"] == 0.79  # the run folder here, not the study's row
    assert by_run["2"]["status"] == "pruned" and by_run["2"]["val/acc"] == 0.2
    assert by_run["3"]["reason"] == "optim.lr=3.0 diverged"
    assert [by_run[n]["status"] for n in "3456"] == ["failed", "interrupted", "running", "queued"]
    board = to_markdown(rows)
    assert "| 1 | 1 | optim.lr=0.01 | complete | 0.9700 | - | 3 |" in board
    assert "| - | 3 | optim.lr=3.0 | failed: optim.lr=3.0 diverged |" in board
