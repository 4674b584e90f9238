"""Shared helpers: compose the real configs with Hydra and run them in a temporary folder."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from trainlab.app.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"

# A run small enough for a smoke test: one short epoch.
SMOKE = ("trainer.max_epochs=1", "trainer.limit_train_batches=3")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """A worker per CPU core (pytest-xdist) unless `-n` was given; without pytest-xdist
    installed (or with `-p no:xdist`) the suite runs in one process as before."""
    if hasattr(config, "workerinput"):  # a worker: it runs the tests it is sent
        return
    if config.pluginmanager.has_plugin("xdist") and config.getoption("numprocesses") is None:
        config.option.numprocesses = "auto"
        if config.getoption("dist") == "no":  # long tests last must not leave a worker idle
            config.option.dist = "worksteal"


def compose_config(*overrides: str, output_dir: Path | str = "unused-run-dir") -> DictConfig:
    """The config `python train.py OVERRIDES` would run, writing into `output_dir`.

    Hydra composes the config files once a test process per set of structural overrides
    (config groups; with a deletion, all of them); value overrides (`optim.lr=0.1`) are
    applied to a copy by Hydra's own override code, as a sweep composes its jobs
    (trainlab.app.sweeps.compose; tests/test_sweep_overhead.py checks both give Hydra's
    config).
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from trainlab.app.sweeps.compose import split_overrides

    register_resolvers()
    parsed = _override_parser().parse_overrides([*overrides, f"paths.output_dir={output_dir}"])
    values, lines = split_overrides(parsed, GROUPS)
    structural = tuple(lines)
    if structural not in _COMPOSED:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            _COMPOSED[structural] = compose(config_name="train", overrides=list(structural))
    config = copy.deepcopy(_COMPOSED[structural])
    ConfigLoaderImpl._apply_overrides_to_config(values, config)
    return config


# compose_config's compositions, by their structural overrides.
_COMPOSED: dict[tuple[str, ...], DictConfig] = {}
GROUPS = frozenset(p.name for p in CONFIG_DIR.iterdir() if p.is_dir())


@functools.cache
def _override_parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


@pytest.fixture
def run_experiment(tmp_path: Path) -> Callable[..., tuple[float, Path]]:
    """Run `trainlab.app.experiment.run` on the composed config; return (objective, run folder)."""
    from trainlab.app.experiment import run

    counter = iter(range(1000))

    def _run(*overrides: str) -> tuple[float, Path]:
        run_dir = tmp_path / f"run{next(counter)}"
        cfg = compose_config(*overrides, output_dir=run_dir)
        return run(cfg), run_dir

    return _run


@pytest.fixture(scope="session")
def text_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CSV of generated reviews (columns text, label) for `data=text`."""
    from trainlab.components.data.text_datasets import demo_reviews

    path = tmp_path_factory.mktemp("text") / "reviews.csv"
    demo_reviews(seed=0, n_samples=600).to_csv(path, index=False)
    return path


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def cli_env() -> dict[str, str]:
    """The environment of a user's shell, importing this checkout's `src/` first.

    (An editable install, or PYTHONPATH=src relative to the checkout, may point elsewhere
    once the command runs in a temporary folder.)
    """
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "TRAINLAB_VERBOSE")}
    # tests/ too, for the test-only parts in custom_parts.py used as `_target_`s.
    paths = [str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


train_env = cli_env


def train_command(*args: str, cwd: Path) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *args, f"paths.root_dir={cwd / 'outputs'}"]


def train_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `train.py` as a user would, writing outputs under `cwd`."""
    if not any(a.startswith("paths.root_dir=") for a in args):
        args = (*args, f"paths.root_dir={cwd / 'outputs'}")
    return script_cli("train.py", *args, cwd=cwd, timeout=timeout)


def script_cli(
    script: str, *args: str, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run one of the root scripts (`train.py`, `predict.py`) as a user would, in `cwd`.

    The script imports this checkout's `src/` (whatever is installed, and wherever `cwd` is).
    """
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_in_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`train.py ARGS` run in this process, through the command's own error path.

    The config is composed as the command composes it (an error there ends in `exit_with`,
    as in `cli.main`); the job runs inside `report_errors` in a run folder under
    `cwd/outputs/runs/` holding what Hydra writes before a job starts. Returns what the
    process would: its exit status and what it printed (log records go to the log, not
    stdout, without Hydra's logging setup). For config and data errors: the one-line
    contract of the process itself is checked by a few `train_cli` tests.
    """
    from trainlab.app.cli import report_errors
    from trainlab.app.experiment import run
    from trainlab.errors import exit_with

    root = (
        []
        if any(a.startswith("paths.root_dir=") for a in args)
        else [f"paths.root_dir={cwd / 'outputs'}"]
    )
    run_dir = cwd / "outputs" / "runs" / "in-process"
    stdout, stderr, status = io.StringIO(), io.StringIO(), 0
    with (
        contextlib.chdir(cwd),  # relative paths in ARGS mean what they mean to the command
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            try:
                cfg = compose_config(*args, *root, output_dir=run_dir)
            except Exception as ex:
                exit_with(ex)
            (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
            (run_dir / ".hydra" / "overrides.yaml").write_text(json.dumps(list(args)))  # YAML too
            report_errors(run)(cfg)
        except SystemExit as ended:
            status = ended.code
    return subprocess.CompletedProcess(
        ["train.py", *args], status, stdout.getvalue(), stderr.getvalue()
    )


def pets_table(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """A small table like a user's: numbers with gaps, a category with gaps, a text label.

    `id` numbers the rows (a feature without gaps, so tests can find a row after a split).
    The label follows from weight, height and color, so a model can learn it.
    """
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=rows).round(1)
    height = rng.normal(size=rows).round(1)
    color = rng.choice(["red", "green", "blue"], size=rows)
    shift = np.select([color == "red", color == "blue"], [1.0, -1.0], 0.0)
    score = weight + 0.5 * height + shift + rng.normal(scale=0.2, size=rows)
    table = pd.DataFrame(
        {
            "id": np.arange(rows),
            "weight": weight,
            "height": height,
            "color": color,
            "label": np.where(score > 0, "dog", "cat"),
        }
    )
    table.loc[rng.random(rows) < 0.1, "weight"] = np.nan
    table.loc[rng.random(rows) < 0.1, "height"] = np.nan
    table.loc[rng.random(rows) < 0.1, "color"] = np.nan
    return table


@pytest.fixture(scope="session")
def table_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pets_table()` written as a CSV once per test session (for `data=csv` smoke runs)."""
    path = tmp_path_factory.mktemp("tables") / "pets.csv"
    pets_table().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 of scikit-learn's digits as PNG files in <folder>/<class>/, for `data=image_folder`."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("image_folder") / "digits"
    digits = load_digits()
    pairs = zip(digits.images[:200], digits.target[:200], strict=True)
    for index, (image, label) in enumerate(pairs):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = (image * 255 / 16).round().astype("uint8")
        Image.fromarray(pixels, "L").save(root / str(label) / f"{index:04d}.png")
    return root
