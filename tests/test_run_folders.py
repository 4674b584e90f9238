"""Run folders: one per run, never shared, never half-written; what `resume=` accepts."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import SMOKE, compose_config, read_metrics, train_cli, train_env

from trainlab.app.config import validate
from trainlab.app.experiment import run
from trainlab.app.runs import claim, find_unfinished
from trainlab.engine.checkpoint import load_checkpoint, save_checkpoint
from trainlab.errors import ConfigError, TrainlabError


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def fake_run(folder: Path, overrides: list[str], finished: bool = False) -> Path:
    """A folder laid out as a run: Hydra's files, a last checkpoint, metrics if finished."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
    if finished:
        (folder / "metrics.json").write_text("{}")
    return folder


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_new_run_never_writes_into_a_folder_holding_a_run(tmp_path) -> None:
    folder = fake_run(tmp_path / "outputs" / "runs" / "old", ["optim.lr=0.1"], finished=True)
    before = snapshot(folder)
    line = one_error_line(train_cli(f"hydra.run.dir={folder}", cwd=tmp_path))
    assert "already holds a run" in line and f"resume={folder}" in line
    assert snapshot(folder) == before  # not even Hydra's .hydra/ files were rewritten


def test_each_new_run_claims_a_folder_of_its_own(tmp_path) -> None:
    planned = tmp_path / "runs" / "2026-01-01_12-00-00"
    assert [claim(planned).name for _ in range(3)] == [
        "2026-01-01_12-00-00",
        "2026-01-01_12-00-00_2",
        "2026-01-01_12-00-00_3",
    ]


def test_resume_auto_picks_the_latest_unfinished_run_of_the_same_command(tmp_path) -> None:
    command = ["optim.lr=0.01", "model.dropout=0.2"]
    older = fake_run(tmp_path / "a", command)
    newer = fake_run(tmp_path / "b", [*reversed(command), "resume=auto"])  # order, resume: same
    fake_run(tmp_path / "c", command, finished=True)  # finished: not resumable
    fake_run(tmp_path / "d", ["optim.lr=0.02", "model.dropout=0.2"])  # another command
    os.utime(older / "checkpoints" / "last.pt", (1, 1))
    candidates = sorted(tmp_path.iterdir())
    assert find_unfinished(candidates, [*command, "resume=auto"]) == newer
    assert find_unfinished(candidates, ["optim.lr=0.03"]) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resume=nowhere/runs/x"], "resume=nowhere/runs/x: no such run folder or checkpoint"),
        (["-m", "optim.lr=0.1,0.2", "resume=runs/x"], "does not apply to a sweep (-m)"),
        (["-m", "hparams_search=optuna_mlp", "resume=auto"], "does not apply to this sweep (-m)"),
        (["resume=auto", "mode=lr_find"], "does not apply to mode=lr_find"),
    ],
)
def test_bad_resume_is_one_line_and_creates_nothing(tmp_path, args, message) -> None:
    line = one_error_line(train_cli(*args, cwd=tmp_path))
    assert message in line, line
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("resume=5", "resume=5 must be auto, a run folder, or a checkpoint file"),
        ("trainer.nan_policy=ignore", "choose one of: stop, skip"),
        ("trainer.max_skipped_steps=-1", "max_skipped_steps=-1 is out of range: it must be >= 0"),
        ("callbacks.model_checkpoint.every_n_steps=0", "every_n_steps=0 is out of range"),
        ("callbacks.model_checkpoint.keep_last=-2", "keep_last=-2 is out of range"),
    ],
)
def test_new_keys_are_checked(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(compose_config(override))
    assert message in str(caught.value)


def test_resume_refuses_other_model_or_data_settings(run_experiment) -> None:
    _, run_dir = run_experiment(*SMOKE, "callbacks.model_checkpoint.every_n_epochs=null")
    (run_dir / "metrics.json").unlink()  # as if killed before the end
    for override, named in [
        ("data.batch_size=32", "data.batch_size (64 in the checkpoint, 32 now)"),
        ("model.hidden_sizes=[64]", "model.hidden_sizes ([256, 128] in the checkpoint, [64]"),
        ("seed=7", "seed (42 in the checkpoint, 7 now)"),
    ]:
        cfg = compose_config(*SMOKE, override, f"resume={run_dir}", output_dir=run_dir)
        with pytest.raises(TrainlabError, match="model and data settings must match") as caught:
            run(cfg)
        assert named in str(caught.value)


def test_resume_reports_settings_changed_since_the_checkpoint(run_experiment, caplog) -> None:
    _, run_dir = run_experiment(*SMOKE)
    (run_dir / "metrics.json").unlink()
    longer = ("trainer.max_epochs=2", "trainer.limit_train_batches=3")
    with caplog.at_level(logging.INFO, logger="trainlab"):
        run(compose_config(*longer, f"resume={run_dir}", output_dir=run_dir))
    assert "resuming with settings changed since the checkpoint: " in caplog.text
    assert "trainer.max_epochs (1 in the checkpoint, 2 now)" in caplog.text
    assert read_metrics(run_dir)["steps"] == 6  # went on from step 3


def test_resume_auto_without_an_unfinished_run_starts_one_and_says_so(
    run_experiment, caplog
) -> None:
    with caplog.at_level(logging.INFO, logger="trainlab"):
        _, run_dir = run_experiment(*SMOKE, "resume=auto")
    assert "resume=auto: no unfinished run of this command to continue" in caplog.text
    assert read_metrics(run_dir)["steps"] == 3


def test_a_run_stopped_early_stays_stopped_when_resumed(run_experiment) -> None:
    options = (
        "trainer.max_epochs=40",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=0.05",
        "callbacks.early_stopping.monitor=val/acc",
    )
    _, run_dir = run_experiment(*options)
    finished = read_metrics(run_dir)
    assert finished["epochs"] < 40
    (run_dir / "metrics.json").unlink()  # killed after its last checkpoint, before the end
    run(compose_config(*options, f"resume={run_dir}", output_dir=run_dir))
    resumed = read_metrics(run_dir)
    for key in ("epochs", "steps", "val", "test", "objective"):
        assert resumed[key] == finished[key], key


def test_a_stray_temporary_file_is_ignored_then_removed(tmp_path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(3)}}, path)
    stray = path.parent / ".last.pt.k1ll3d.tmp"  # what a killed writer leaves
    stray.write_bytes(b"half a checkpoi")
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.zeros(3))
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


SAVER = textwrap.dedent(
    """
    import sys
    import torch
    from trainlab.engine.checkpoint import save_checkpoint

    # Large enough that most of the loop's time is spent writing and syncing the file.
    for i in range(10**9):
        weights = torch.full((4_000_000,), float(i))
        save_checkpoint({"model": {"w": weights}, "position": {"global_step": i}}, sys.argv[1])
        print(i, flush=True)
    """
)


@pytest.mark.slow
def test_killed_during_saves_the_previous_checkpoint_always_loads(tmp_path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    pick = random.Random(0)
    trials, killed_mid_save = 25, 0
    for _ in range(trials):
        saver = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path)],
            env=train_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        first = saver.stdout.readline()  # one save has completed
        time.sleep(pick.uniform(0.0, 0.5))
        saver.send_signal(signal.SIGKILL)
        saver.wait(timeout=60)
        done = [int(line) for line in (first + saver.stdout.read()).split()]
        saver.stdout.close()
        killed_mid_save += any(path.parent.glob(".last.pt.*.tmp"))
        payload = load_checkpoint(path)
        step = payload["position"]["global_step"]
        assert step >= done[-1]  # the newest completed save, or one finished as it died
        assert torch.equal(payload["model"]["w"], torch.full((4_000_000,), float(step)))
    assert killed_mid_save >= 1  # the kills did land inside saves
    save_checkpoint({"model": {}}, path)  # the next save clears what the kills left
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
