"""Sweeps: a failing job in a multirun.

Each sweep runs the real train.py in a temporary folder.
"""

from __future__ import annotations

from pathlib import Path

from conftest import read_metrics, train_cli

# Small, quick trials: a narrow MLP, a few epochs, no TensorBoard or checkpoints.
QUICK = ("data.batch_size=128", "logger=none", "callbacks=none")


def test_grid_sweep_runs_every_job_then_reports_the_failure(tmp_path: Path) -> None:
    proc = train_cli("-m", "optim.lr=-1,0.01", "trainer.max_epochs=1", *QUICK, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: optim.lr=-1.0 is out of range: it must be > 0, e.g. optim.lr=0.001"
    )
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    assert not (sweep / "0").exists()
    assert read_metrics(sweep / "1")["epochs"] == 1
