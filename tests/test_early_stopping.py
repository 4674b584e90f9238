"""EarlyStopping behaves as Keras's on a table of cases.

Every row's expected outcome was recorded from Keras 3.15.1's own `keras.callbacks.EarlyStopping`
(torch backend), fed the same values. Left out: cases where Keras 3 decides `mode="auto"`
from a compiled metric object (we decide by name: `acc`, `f1`, `auroc`... are maximised, as
Keras does with `metrics=["acc"]`), unknown modes (refused by our config validation), and a
float32 rounding tie (we compare in float64).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import NamedTuple

import pytest
import torch
from torch import nn

from trainlab.components.callbacks import EarlyStopping
from trainlab.engine.trainer import TrainState

NAN = math.nan


class Case(NamedTuple):
    name: str
    monitor: str
    mode: str
    patience: int
    min_delta: float
    baseline: float | None
    start_from_epoch: int
    restore_best_weights: bool
    values: list[float | None]  # None: the epoch's metrics lack the monitored key
    stop_epoch: int | None  # epoch index at which training stops; None: never
    best_epoch: int
    wait: int
    restored_epoch: int | None  # whose weights the model holds at the end, when restoring


CASES = [
    Case("min_p0", "val/loss", "min", 0, 0, None, 0, False, [1.0, 0.9, 0.95, 0.8], 2, 1, 1, None),
    Case(
        "min_p1",
        "val/loss",
        "min",
        1,
        0,
        None,
        0,
        False,
        [1.0, 0.9, 0.95, 0.96, 0.8],
        2,
        1,
        1,
        None,
    ),
    Case(
        "min_p3",
        "val/loss",
        "min",
        3,
        0,
        None,
        0,
        False,
        [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.5],
        4,
        1,
        3,
        None,
    ),
    Case(
        "min_p3_recovery",
        "val/loss",
        "min",
        3,
        0,
        None,
        0,
        False,
        [1.0, 0.9, 0.95, 0.96, 0.85, 0.9, 0.91, 0.92, 0.93],
        7,
        4,
        3,
        None,
    ),
    Case(
        "max_p1", "val/acc", "max", 1, 0, None, 0, False, [0.5, 0.6, 0.55, 0.58, 0.7], 2, 1, 1, None
    ),
    Case(
        "max_p3",
        "val/acc",
        "max",
        3,
        0,
        None,
        0,
        False,
        [0.5, 0.6, 0.55, 0.58, 0.59, 0.7],
        4,
        1,
        3,
        None,
    ),
    Case(
        "auto_val_loss_p1",
        "val/loss",
        "auto",
        1,
        0,
        None,
        0,
        False,
        [1.0, 0.5, 0.75, 0.8],
        2,
        1,
        1,
        None,
    ),
    Case("min_tie_p0", "val/loss", "min", 0, 0, None, 0, False, [1.0, 1.0, 0.5], 1, 0, 1, None),
    Case(
        "min_tie_p2", "val/loss", "min", 2, 0, None, 0, False, [1.0, 1.0, 1.0, 0.5], 2, 0, 2, None
    ),
    Case("max_tie_p0", "val/acc", "max", 0, 0, None, 0, False, [0.5, 0.6, 0.6], 2, 1, 1, None),
    Case(
        "min_delta_min_p3",
        "val/loss",
        "min",
        3,
        0.25,
        None,
        0,
        False,
        [1.0, 0.875, 0.75, 0.5, 0.375, 0.3125, 0.25],
        6,
        3,
        3,
        None,
    ),
    Case(
        "min_delta_max_p3",
        "val/acc",
        "max",
        3,
        0.25,
        None,
        0,
        False,
        [0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 0.8, 0.9, 1.0],
        8,
        5,
        3,
        None,
    ),
    Case(
        "min_delta_negative_max_is_abs",
        "val/acc",
        "max",
        3,
        -0.25,
        None,
        0,
        False,
        [0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 0.8, 0.9, 1.0],
        8,
        5,
        3,
        None,
    ),
    Case(
        "min_delta_negative_is_abs",
        "val/loss",
        "min",
        3,
        -0.25,
        None,
        0,
        False,
        [1.0, 0.875, 0.75, 0.5, 0.375, 0.3125, 0.25],
        6,
        3,
        3,
        None,
    ),
    Case(
        "min_delta_decimal_exact_delta",
        "val/loss",
        "min",
        0,
        0.1,
        None,
        0,
        False,
        [1.0, 0.9, 0.5],
        1,
        0,
        1,
        None,
    ),
    Case(
        "min_delta_max_p0_small_gain",
        "val/acc",
        "max",
        0,
        0.05,
        None,
        0,
        False,
        [0.5, 0.52, 0.9],
        1,
        0,
        1,
        None,
    ),
    Case(
        "baseline_min_never_beaten_still_improving",
        "val/loss",
        "min",
        2,
        0,
        0.5,
        0,
        False,
        [1.0, 0.9, 0.8, 0.7, 0.6],
        None,
        4,
        5,
        None,
    ),
    Case(
        "baseline_min_never_beaten_no_improve",
        "val/loss",
        "min",
        2,
        0,
        0.5,
        0,
        False,
        [1.0, 1.1, 1.2, 1.3],
        1,
        0,
        2,
        None,
    ),
    Case(
        "baseline_min_beaten_later",
        "val/loss",
        "min",
        3,
        0,
        0.5,
        0,
        False,
        [1.0, 0.9, 0.4, 0.45, 0.46, 0.47, 0.48],
        5,
        2,
        3,
        None,
    ),
    Case(
        "baseline_max_never_beaten",
        "val/acc",
        "max",
        2,
        0,
        0.9,
        0,
        False,
        [0.5, 0.4, 0.45, 0.6],
        1,
        0,
        2,
        None,
    ),
    Case(
        "baseline_max_beaten_later",
        "val/acc",
        "max",
        2,
        0,
        0.8,
        0,
        False,
        [0.5, 0.6, 0.85, 0.84, 0.83, 0.9],
        4,
        2,
        2,
        None,
    ),
    Case("baseline_tie_min", "val/loss", "min", 1, 0, 0.5, 0, False, [0.5, 0.6], 1, 0, 2, None),
    Case(
        "baseline_with_min_delta",
        "val/loss",
        "min",
        1,
        0.25,
        1.0,
        0,
        False,
        [2.0, 0.875, 0.5, 0.6],
        3,
        2,
        1,
        None,
    ),
    Case("baseline_p0", "val/loss", "min", 0, 0, 0.5, 0, False, [1.0, 0.9, 0.95], 2, 1, 3, None),
    Case(
        "start_from_epoch_2",
        "val/loss",
        "min",
        1,
        0,
        None,
        2,
        False,
        [5.0, 4.0, 3.0, 3.5, 3.6, 1.0],
        3,
        2,
        1,
        None,
    ),
    Case(
        "start_from_epoch_3_ignores_early_better",
        "val/loss",
        "min",
        0,
        0,
        None,
        3,
        False,
        [1.0, 2.0, 3.0, 4.0, 4.5],
        4,
        3,
        1,
        None,
    ),
    Case(
        "start_from_epoch_beyond_sequence",
        "val/loss",
        "min",
        0,
        0,
        None,
        10,
        False,
        [1.0, 2.0, 3.0],
        None,
        0,
        0,
        None,
    ),
    Case(
        "restore_with_stop_min",
        "val/loss",
        "min",
        2,
        0,
        None,
        0,
        True,
        [1.0, 0.5, 0.75, 0.8, 0.9],
        3,
        1,
        2,
        1,
    ),
    Case(
        "restore_with_stop_max",
        "val/acc",
        "max",
        1,
        0,
        None,
        0,
        True,
        [0.5, 0.9, 0.7, 0.6, 0.95],
        2,
        1,
        1,
        1,
    ),
    Case(
        "restore_no_stop_best_in_middle",
        "val/loss",
        "min",
        5,
        0,
        None,
        0,
        True,
        [1.0, 0.5, 0.75, 0.8],
        None,
        1,
        2,
        1,
    ),
    Case(
        "restore_no_stop_best_is_last",
        "val/loss",
        "min",
        5,
        0,
        None,
        0,
        True,
        [1.0, 0.9, 0.8],
        None,
        2,
        0,
        2,
    ),
    Case(
        "restore_with_start_from_epoch",
        "val/loss",
        "min",
        1,
        0,
        None,
        2,
        True,
        [0.1, 0.2, 0.5, 0.6],
        3,
        2,
        1,
        2,
    ),
    Case(
        "restore_start_from_epoch_beyond_sequence",
        "val/loss",
        "min",
        1,
        0,
        None,
        10,
        True,
        [0.1, 0.2, 0.5],
        None,
        0,
        0,
        None,
    ),
    Case(
        "restore_baseline_never_beaten",
        "val/loss",
        "min",
        2,
        0,
        0.1,
        0,
        True,
        [1.0, 0.8, 0.9, 0.95],
        2,
        1,
        3,
        1,
    ),
    Case(
        "restore_tie_keeps_first",
        "val/loss",
        "min",
        3,
        0,
        None,
        0,
        True,
        [1.0, 0.5, 0.5, 0.5, 0.5],
        4,
        1,
        3,
        1,
    ),
    Case(
        "nan_middle_min_p1",
        "val/loss",
        "min",
        1,
        0,
        None,
        0,
        False,
        [1.0, NAN, 0.9, 0.95],
        1,
        0,
        1,
        None,
    ),
    Case(
        "nan_middle_min_p2",
        "val/loss",
        "min",
        2,
        0,
        None,
        0,
        False,
        [1.0, NAN, 0.9, 0.95],
        None,
        2,
        1,
        None,
    ),
    Case(
        "nan_first_min_p2",
        "val/loss",
        "min",
        2,
        0,
        None,
        0,
        False,
        [NAN, 1.0, 0.5, 0.25],
        2,
        0,
        2,
        None,
    ),
    Case(
        "nan_first_max_p1", "val/acc", "max", 1, 0, None, 0, False, [NAN, 0.5, 0.9], 1, 0, 1, None
    ),
    Case(
        "nan_restore_min", "val/loss", "min", 1, 0, None, 0, True, [1.0, 0.5, NAN, 0.4], 2, 1, 1, 1
    ),
    Case(
        "patience_longer_than_sequence",
        "val/loss",
        "min",
        10,
        0,
        None,
        0,
        False,
        [1.0, 1.1, 1.2, 1.3],
        None,
        0,
        3,
        None,
    ),
    Case("single_value_p0", "val/loss", "min", 0, 0, None, 0, False, [1.0], None, 0, 0, None),
    Case(
        "missing_monitor_key_skipped",
        "val/loss",
        "min",
        1,
        0,
        None,
        0,
        False,
        [1.0, None, 1.1],
        2,
        0,
        1,
        None,
    ),
    # Our name rule for mode="auto": accuracy is maximised, as Keras does for a compiled "acc".
    Case(
        "auto_val_acc_by_name",
        "val/acc",
        "auto",
        1,
        0.0,
        None,
        0,
        False,
        [0.5, 0.75, 0.6, 0.7],
        2,
        1,
        1,
        None,
    ),
]


def run_case(case: Case) -> tuple[EarlyStopping, TrainState, nn.Module]:
    model = nn.Linear(3, 2)
    trainer = SimpleNamespace(model=model)  # EarlyStopping reads only the model
    callback = EarlyStopping(
        monitor=case.monitor,
        mode=case.mode,
        min_delta=case.min_delta,
        patience=case.patience,
        baseline=case.baseline,
        restore_best_weights=case.restore_best_weights,
        start_from_epoch=case.start_from_epoch,
    )
    state = TrainState()
    callback.on_fit_start(trainer, state)
    for epoch, value in enumerate(case.values):
        with torch.no_grad():  # weights that say which epoch they come from
            for parameter in model.parameters():
                parameter.fill_(float(epoch))
        state.epoch = epoch
        state.metrics = {} if value is None else {case.monitor: value}
        callback.on_validation_end(trainer, state)
        if state.should_stop:
            break
    callback.on_fit_end(trainer, state)
    return callback, state, model


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_early_stopping_matches_keras(case: Case) -> None:
    callback, state, model = run_case(case)
    assert callback.stopped_epoch == case.stop_epoch
    assert state.should_stop == (case.stop_epoch is not None)
    assert callback.best_epoch == case.best_epoch
    assert callback.wait == case.wait
    if case.restore_best_weights:
        held = model.weight.flatten()[0].item()
        last_fed = case.stop_epoch if case.stop_epoch is not None else len(case.values) - 1
        expected = case.restored_epoch if case.restored_epoch is not None else last_fed
        assert held == expected


def test_state_round_trips_for_resume() -> None:
    case = CASES[0]
    callback, _, _ = run_case(case._replace(values=case.values[:2]))
    restored = EarlyStopping(monitor=case.monitor, patience=case.patience)
    restored.load_state_dict(callback.state_dict())
    assert restored.state_dict() == callback.state_dict()


def test_no_two_cases_feed_the_same_inputs() -> None:
    # A copied row under a new name tests nothing new (a negative min_delta went untested so).
    inputs = [case[1:9] for case in CASES]
    assert len(set(map(repr, inputs))) == len(inputs)
