"""TensorBoard logging: scalars, and the hparams summary that fills the HParams tab."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

# Events waiting for the writer thread. SummaryWriter's default, 10, makes the training
# loop wait for that thread at every 10th scalar; the queue is emptied at every flush.
MAX_QUEUE = 10_000


class TensorBoardLogger:
    """Writes one event stream per run into `log_dir`.

    All scalars share one x axis, the optimizer step. A resumed run passes
    `purge_step=<checkpoint's step + 1>`: TensorBoard then hides whatever the stopped
    process logged after its checkpoint, which the resumed run logs again.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(
            log_dir=str(self.log_dir), purge_step=purge_step, max_queue=MAX_QUEUE
        )

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        now = time.time()
        for tag, value in values.items():
            self._scalar(tag, value, step, now)

    def log_scalar_series(self, tag: str, values: list[float], steps: list[int]) -> None:
        now = time.time()
        for step, value in zip(steps, values, strict=True):
            self._scalar(tag, value, step, now)

    def _scalar(self, tag: str, value: float, step: int, walltime: float) -> None:
        # What `SummaryWriter.add_scalar` writes for a float, without its conversions and
        # checks, which cost more than the write for one number.
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])
        self.writer.file_writer.add_summary(summary, step, walltime)

    def log_hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Record the run's hyperparameters and the names of its final metrics.

        The summaries go into this run's own event file (SummaryWriter.add_hparams would
        open a second run folder); the metric values are the scalars logged under the
        same tags.
        """
        finite = {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}
        for summary in hparams(_plain(params), finite):
            self.writer.file_writer.add_summary(summary)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """HParams accepts numbers, strings and booleans; lists and None become strings."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
