"""trainlab: config-driven PyTorch training with one readable loop.

    from trainlab import Trainer, EarlyStopping
    Trainer(model, optimizer, loss_fn, max_epochs=3, callbacks=[EarlyStopping()]).fit(
        train_loader, val_loader
    )

    result = trainlab.run(trainlab.compose(["model=cnn"]))   # a whole experiment
    trainlab.Predictor.load(result.run_dir).predict(inputs)  # a trained run's predictions

Names are imported when first used (PEP 562): `import trainlab` alone imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainlab.lazy import lazy_exports

if TYPE_CHECKING:
    from trainlab.app.api import RunResult, compose, run
    from trainlab.app.predict import Predictor
    from trainlab.components.callbacks import (
        EarlyStopping,
        LearningRateMonitor,
        ModelCheckpoint,
        Monitor,
        ProgressDisplay,
        TensorBoardFigures,
    )
    from trainlab.components.loggers import TensorBoardLogger
    from trainlab.components.metrics import TaskMetrics
    from trainlab.engine.batches import IterableBatches, TensorBatches, as_batches
    from trainlab.engine.callback import EVENTS, Callback
    from trainlab.engine.schedule import Schedule
    from trainlab.engine.seeding import seed_everything
    from trainlab.engine.trainer import Trainer, TrainState
    from trainlab.errors import ConfigError, DivergenceError, Preempted, TrainlabError

__version__ = "0.1.0"

# name -> the module that defines it
_MODULES = {
    # the loop
    "Trainer": "trainlab.engine.trainer",
    "TrainState": "trainlab.engine.trainer",
    "Callback": "trainlab.engine.callback",
    "EVENTS": "trainlab.engine.callback",
    "Schedule": "trainlab.engine.schedule",
    "TensorBatches": "trainlab.engine.batches",
    "IterableBatches": "trainlab.engine.batches",
    "as_batches": "trainlab.engine.batches",
    "seed_everything": "trainlab.engine.seeding",
    # the parts
    "EarlyStopping": "trainlab.components.callbacks",
    "LearningRateMonitor": "trainlab.components.callbacks",
    "ModelCheckpoint": "trainlab.components.callbacks",
    "Monitor": "trainlab.components.callbacks",
    "ProgressDisplay": "trainlab.components.callbacks",
    "TensorBoardFigures": "trainlab.components.callbacks",
    "TensorBoardLogger": "trainlab.components.loggers",
    "TaskMetrics": "trainlab.components.metrics",
    # a whole experiment
    "compose": "trainlab.app.api",
    "run": "trainlab.app.api",
    "RunResult": "trainlab.app.api",
    "Predictor": "trainlab.app.predict",
    # errors
    "TrainlabError": "trainlab.errors",
    "ConfigError": "trainlab.errors",
    "DivergenceError": "trainlab.errors",
    "Preempted": "trainlab.errors",
}

__all__ = [
    "EVENTS",
    "Callback",
    "ConfigError",
    "DivergenceError",
    "EarlyStopping",
    "IterableBatches",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "Monitor",
    "Predictor",
    "Preempted",
    "ProgressDisplay",
    "RunResult",
    "Schedule",
    "TaskMetrics",
    "TensorBatches",
    "TensorBoardFigures",
    "TensorBoardLogger",
    "TrainState",
    "Trainer",
    "TrainlabError",
    "__version__",
    "as_batches",
    "compose",
    "run",
    "seed_everything",
]


__getattr__ = lazy_exports(__name__, _MODULES)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
