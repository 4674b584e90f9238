"""The settings of the TensorBoard logger (beside `loggers.py`, which imports torch)."""

from __future__ import annotations

from dataclasses import dataclass

from trainlab.schema import spec


@dataclass
class TensorBoardSchema:
    log_dir: str = spec("tb")


SCHEMAS: dict[str, type] = {"trainlab.components.loggers.TensorBoardLogger": TensorBoardSchema}
