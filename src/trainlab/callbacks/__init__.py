"""Callbacks: everything optional in the loop, each reacting to a few named events.

The classes are imported when first used (PEP 562), so a module that needs only, say,
`trainlab.callbacks.monitor` does not import torch: `--help` and config errors stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainlab.callbacks.base import EVENTS, Callback
    from trainlab.callbacks.checkpoint import ModelCheckpoint
    from trainlab.callbacks.early_stopping import EarlyStopping
    from trainlab.callbacks.figures import TensorBoardFigures
    from trainlab.callbacks.lr_monitor import LearningRateMonitor
    from trainlab.callbacks.monitor import Monitor
    from trainlab.callbacks.optuna_pruning import OptunaPruning
    from trainlab.callbacks.progress import ProgressDisplay

# name -> the module that defines it
_MODULES = {
    "EVENTS": "base",
    "Callback": "base",
    "EarlyStopping": "early_stopping",
    "LearningRateMonitor": "lr_monitor",
    "ModelCheckpoint": "checkpoint",
    "Monitor": "monitor",
    "OptunaPruning": "optuna_pruning",
    "ProgressDisplay": "progress",
    "TensorBoardFigures": "figures",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)


__all__ = [
    "EVENTS",
    "Callback",
    "EarlyStopping",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "Monitor",
    "OptunaPruning",
    "ProgressDisplay",
    "TensorBoardFigures",
]
