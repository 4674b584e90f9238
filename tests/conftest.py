"""Shared helpers: compose the real configs with Hydra and run them in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from trainlab.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"

# A run small enough for a smoke test: one short epoch.
SMOKE = ("trainer.max_epochs=1", "trainer.limit_train_batches=3")


def compose_config(*overrides: str, output_dir: Path | str = "unused-run-dir") -> DictConfig:
    """The config `python train.py OVERRIDES` would run, writing into `output_dir`."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            config_name="train", overrides=[*overrides, f"paths.output_dir={output_dir}"]
        )


@pytest.fixture
def run_experiment(tmp_path: Path) -> Callable[..., tuple[float, Path]]:
    """Run `trainlab.cli.run` on the composed config; return (objective, run folder)."""
    from trainlab.cli import run

    counter = iter(range(1000))

    def _run(*overrides: str) -> tuple[float, Path]:
        run_dir = tmp_path / f"run{next(counter)}"
        cfg = compose_config(*overrides, output_dir=run_dir)
        return run(cfg), run_dir

    return _run


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def train_env() -> dict[str, str]:
    """The environment for a `train.py` subprocess: this checkout's `src` is imported (not
    an installed trainlab) and `tests/` too, for the test-only parts in `custom_parts.py`.
    Absolute paths, as the subprocess runs in another folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "TRAINLAB_VERBOSE")}
    paths = [str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def train_command(*args: str, cwd: Path) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *args, f"paths.root_dir={cwd / 'outputs'}"]


def train_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `train.py` as a user would, writing outputs under `cwd`."""
    return subprocess.run(
        train_command(*args, cwd=cwd),
        cwd=cwd,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
