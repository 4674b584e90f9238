"""Callbacks: everything optional in the loop, each reacting to a few named events.

The classes are imported when first used (PEP 562), so a module that needs only, say,
`trainlab.components.callbacks.monitor` does not import torch: `--help` and config errors stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainlab.lazy import lazy_exports

if TYPE_CHECKING:
    from trainlab.components.callbacks.checkpoint import ModelCheckpoint
    from trainlab.components.callbacks.early_stopping import EarlyStopping
    from trainlab.components.callbacks.figures import TensorBoardFigures
    from trainlab.components.callbacks.lr_monitor import LearningRateMonitor
    from trainlab.components.callbacks.monitor import Monitor
    from trainlab.components.callbacks.progress import ProgressDisplay
    from trainlab.components.callbacks.pruning import Pruning
    from trainlab.engine.callback import EVENTS, Callback

# name -> the module that defines it (the base class is the engine's)
_MODULES = {
    "EVENTS": "trainlab.engine.callback",
    "Callback": "trainlab.engine.callback",
    "EarlyStopping": "trainlab.components.callbacks.early_stopping",
    "LearningRateMonitor": "trainlab.components.callbacks.lr_monitor",
    "ModelCheckpoint": "trainlab.components.callbacks.checkpoint",
    "Monitor": "trainlab.components.callbacks.monitor",
    "ProgressDisplay": "trainlab.components.callbacks.progress",
    "Pruning": "trainlab.components.callbacks.pruning",
    "TensorBoardFigures": "trainlab.components.callbacks.figures",
}


__getattr__ = lazy_exports(__name__, _MODULES)


__all__ = [
    "EVENTS",
    "Callback",
    "EarlyStopping",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "Monitor",
    "ProgressDisplay",
    "Pruning",
    "TensorBoardFigures",
]
