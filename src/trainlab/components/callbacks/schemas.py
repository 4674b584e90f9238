"""The settings of each shipped callback, checked before torch is imported.

Each callback class's signature takes the same defaults (a test compares them); the
names and meanings are Keras's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainlab.schema import auto_or_bool, spec


@dataclass
class EarlyStoppingSchema:
    monitor: str = spec("val/loss")
    mode: str = spec("auto", choices=("auto", "min", "max"))
    min_delta: float = spec(0.0, ge=0.0)
    patience: int = spec(0, ge=0)
    baseline: float | None = spec(None)
    restore_best_weights: bool = spec(False)
    start_from_epoch: int = spec(0, ge=0)


@dataclass
class ModelCheckpointSchema:
    dirpath: str = spec("checkpoints")
    monitor: str = spec("val/acc")
    mode: str = spec("auto", choices=("auto", "min", "max"))
    save_last: bool = spec(True)
    save_best: bool = spec(True)
    every_n_epochs: int | None = spec(1, ge=1)
    every_n_steps: int | None = spec(None, ge=1)
    keep_last: int = spec(0, ge=0)


@dataclass
class NoArgumentsSchema:
    pass


@dataclass
class FiguresSchema:
    confusion_matrix: bool = spec(True)
    pr_curves: bool = spec(True)
    scatter: bool = spec(True)
    graph: bool = spec(True)
    histograms: bool = spec(False)


@dataclass
class ProgressSchema:
    bar: Any = spec("auto", check=auto_or_bool)


@dataclass
class PruningSchema:
    amount: float = spec(0.5, ge=0.0, lt=1.0)
    structured: bool = spec(False)
    norm: float = spec(1, gt=0.0)
    start_epoch: int = spec(0, ge=0)
    end_epoch: int | None = spec(None, ge=0)


SCHEMAS: dict[str, type] = {
    "trainlab.components.callbacks.EarlyStopping": EarlyStoppingSchema,
    "trainlab.components.callbacks.ModelCheckpoint": ModelCheckpointSchema,
    "trainlab.components.callbacks.LearningRateMonitor": NoArgumentsSchema,
    "trainlab.components.callbacks.ProgressDisplay": ProgressSchema,
    "trainlab.components.callbacks.TensorBoardFigures": FiguresSchema,
    "trainlab.components.callbacks.Pruning": PruningSchema,
}
