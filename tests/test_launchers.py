"""Sweeps through Hydra launchers: submitit's local executor (the SLURM code path)."""

from __future__ import annotations

import pytest
from conftest import read_metrics, train_cli


@pytest.mark.slow  # three processes (the sweep and a submitit job each), each importing torch
def test_submitit_local_runs_each_job_in_its_own_process(tmp_path) -> None:
    result = train_cli(
        "-m",
        "hydra/launcher=submitit_local",
        "optim.lr=1e-3,1e-2",
        "trainer.max_epochs=1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").iterdir()
    objectives = [read_metrics(sweep_dir / job)["objective"]["value"] for job in ("0", "1")]
    assert all(0.5 < value <= 1.0 for value in objectives)
    assert (sweep_dir / ".submitit").is_dir()  # submitit's job logs
    assert len((sweep_dir / "leaderboard.csv").read_text().splitlines()) == 3
