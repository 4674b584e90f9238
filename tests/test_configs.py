"""Every file in configs/ composes and runs a one-epoch smoke run; the README lists them all."""

from __future__ import annotations

import math

import pytest
from conftest import CONFIG_DIR, ROOT, SMOKE, read_metrics

from trainlab.components.metrics import TASK_METRICS

# Groups whose options are chosen on the command line (paths and hydra are plumbing).
GROUPS = [
    "regularization",
    "data",
    "model",
    "loss",
    "optim",
    "sched",
    "trainer",
    "callbacks",
    "logger",
    "experiment",
    "debug",
]


# `data=csv` reads a file: TABLE_CSV stands for the one the `table_csv` fixture writes.
TABLE = ["data.path=TABLE_CSV", "data.target=label"]

# Options that need particular companions to make sense (a regression loss needs
# regression data, and so on).
COMPANIONS = {
    ("data", "csv"): TABLE,
    ("experiment", "csv_mlp"): TABLE,
    ("data", "diabetes"): ["loss=mse"],
    ("loss", "bce"): ["data=breast_cancer"],
    ("loss", "mse"): ["data=diabetes"],
    ("loss", "mae"): ["data=diabetes"],
    ("loss", "huber"): ["data=diabetes"],
    # Token data needs a token model.
    ("data", "text"): ["model=transformer", "data.path=reviews.csv"],
    ("data", "text_demo"): ["model=rnn"],
}
# Options that read a file: (group, option) -> (fixture that writes one, config key). Its
# path, appended to the companions, replaces their placeholder (the last override wins).
FILES = {
    ("data", "text"): ("text_csv", "data.path"),
    ("data", "csv"): ("table_csv", "data.path"),
    ("experiment", "csv_mlp"): ("table_csv", "data.path"),
}


def options():
    for group in GROUPS:
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            yield group, path.stem


@pytest.mark.parametrize(("group", "option"), list(options()))
def test_every_config_runs_one_epoch(run_experiment, request, group: str, option: str) -> None:
    companions = list(COMPANIONS.get((group, option), []))
    if (group, option) in FILES:
        fixture, key = FILES[group, option]
        companions.append(f"{key}={request.getfixturevalue(fixture)}")
    objective, run_dir = run_experiment(f"{group}={option}", *companions, *SMOKE)
    metrics = read_metrics(run_dir)
    assert metrics["objective"]["value"] == objective
    assert metrics["epochs"] == 1
    assert all(math.isfinite(v) for v in metrics["test"].values())
    expected = {f"test/{name}" for name in ("loss", *TASK_METRICS[metrics["task"]])}
    assert set(metrics["test"]) == expected


def test_readme_lists_every_option() -> None:
    readme = (ROOT / "README.md").read_text()
    searches = [("hparams_search", p.stem) for p in (CONFIG_DIR / "hparams_search").glob("*.yaml")]
    missing = [f"{g}={o}" for g, o in [*options(), *searches] if f"{g}={o}" not in readme]
    assert not missing, f"README.md does not mention: {missing}"
