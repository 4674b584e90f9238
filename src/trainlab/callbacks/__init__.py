"""Callbacks: everything optional in the loop, each reacting to a few named events."""

from trainlab.callbacks.base import EVENTS, Callback
from trainlab.callbacks.checkpoint import ModelCheckpoint
from trainlab.callbacks.early_stopping import EarlyStopping
from trainlab.callbacks.figures import TensorBoardFigures
from trainlab.callbacks.lr_monitor import LearningRateMonitor
from trainlab.callbacks.monitor import Monitor
from trainlab.callbacks.optuna_pruning import OptunaPruning
from trainlab.callbacks.progress import ProgressDisplay

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
