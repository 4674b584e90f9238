"""k-fold cross-validation: disjoint folds, a held-out test split, the mean as objective."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import read_metrics

from trainlab.components.data.datasets import split_rows


def test_folds_partition_the_non_test_rows() -> None:
    labels = np.repeat(np.arange(4), 50)
    splits = [
        split_rows(labels, val_fraction=0.15, test_fraction=0.2, seed=3, stratify=True, fold=(k, 5))
        for k in range(5)
    ]
    tests = {tuple(sorted(test)) for _, _, test in splits}
    assert len(tests) == 1  # the same test rows for every fold
    (test,) = tests
    vals = [set(val) for _, val, _ in splits]
    assert set().union(*vals) == set(range(200)) - set(test)
    assert sum(len(v) for v in vals) == 200 - len(test)  # disjoint
    for train, val, _ in splits:
        assert not set(train) & set(val) and not set(train) & set(test)
        assert np.bincount(labels[val]).tolist() == [8, 8, 8, 8]  # stratified


def test_cv_run_reports_every_fold_and_returns_the_mean(run_experiment) -> None:
    objective, run_dir = run_experiment("cv.folds=5", "trainer.max_epochs=2")
    metrics = read_metrics(run_dir)
    folds = metrics["cv"]["folds"]
    assert len(folds) == 5
    assert objective == pytest.approx(np.mean([f["val/acc"] for f in folds]))
    assert metrics["cv"]["std"]["val/acc"] == pytest.approx(np.std([f["val/acc"] for f in folds]))
    assert metrics["test"]["test/acc"] == pytest.approx(np.mean([f["test/acc"] for f in folds]))
    assert objective > 0.85
    for k in range(5):
        assert (run_dir / f"fold_{k}" / "checkpoints" / "best.pt").is_file()
        assert list((run_dir / f"fold_{k}" / "tb").glob("events.*"))
    assert list((run_dir / "tb").glob("events.*"))  # the mean and deviation


@pytest.mark.parametrize(
    "overrides",
    [
        ("data=text_demo", "data.n_samples=300", "model=rnn"),
        ("data=csv", "data.target=label"),
    ],
    ids=["text", "csv"],
)
def test_every_data_loader_cuts_its_own_folds(run_experiment, table_csv, overrides) -> None:
    path = [f"data.path={table_csv}"] if "data=csv" in overrides else []
    _, run_dir = run_experiment(*overrides, *path, "cv.folds=3", "trainer.max_epochs=1")
    folds = read_metrics(run_dir)["cv"]["folds"]
    assert len(folds) == 3
    # Same seed, same initial weights: only different validation rows make these differ.
    assert len({round(f["val/loss"], 6) for f in folds}) == 3
    assert len({round(f["test/loss"], 6) for f in folds}) == 3  # trained on other rows
