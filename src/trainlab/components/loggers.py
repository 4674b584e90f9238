"""TensorBoard logging: scalars, and the hparams summary that fills the HParams tab."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from trainlab.engine.distributed import is_main_process

# Events waiting for SummaryWriter's writer thread. Its default, 10, would make the
# training loop wait for that thread at every 10th scalar.
MAX_QUEUE = 10_000
# Scalars are held back at most this long (seconds) when no flush comes sooner.
FLUSH_SECONDS = 30.0


class TensorBoardLogger:
    """Writes one event stream per run into `log_dir`.

    All scalars share one x axis, the optimizer step. A resumed run passes
    `purge_step=<checkpoint's step + 1>`: TensorBoard then hides whatever the stopped
    process logged after its checkpoint, which the resumed run logs again.

    Scalars are held in memory and handed to SummaryWriter's writer thread at `flush`
    (the trainer flushes after each validation and before each checkpoint) or after
    FLUSH_SECONDS, and the flush waits until they are written. So the writer thread runs
    between epochs, not during the training steps, where each of its wake-ups would take
    the interpreter (and a core) from the loop.

    Only the main process writes: elsewhere `writer` is None and logging does nothing.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.writer: SummaryWriter | None = None
        if is_main_process():
            self.writer = SummaryWriter(
                log_dir=str(self.log_dir), purge_step=purge_step, max_queue=MAX_QUEUE
            )
        self._held: list[tuple[str, float, int, float]] = []  # (tag, value, step, walltime)
        self._flushed_at = time.monotonic()

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        now = time.time()
        self._held.extend((tag, float(value), step, now) for tag, value in values.items())
        self._flush_if_due()

    def log_scalar_series(self, tag: str, values: list[float], steps: list[int]) -> None:
        if self.writer is None:
            return
        now = time.time()
        self._held.extend(
            (tag, float(value), step, now) for step, value in zip(steps, values, strict=True)
        )
        self._flush_if_due()

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._flushed_at > FLUSH_SECONDS:
            self.flush()

    def log_hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Record the run's hyperparameters and the names of its final metrics.

        The summaries go into this run's own event file (SummaryWriter.add_hparams would
        open a second run folder); the metric values are the scalars logged under the
        same tags.
        """
        if self.writer is None:
            return
        finite = {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}
        for summary in hparams(_plain(params), finite):
            self.writer.file_writer.add_summary(summary)

    def flush(self) -> None:
        """Write the held scalars and wait until everything logged is in the file."""
        if self.writer is None:
            return
        file_writer = self.writer.file_writer
        for tag, value, step, walltime in self._held:
            # What `SummaryWriter.add_scalar` writes for a float, without its conversions
            # and checks, which cost more than the write for one number.
            summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
            file_writer.add_summary(summary, step, walltime)
        self._held = []
        self.writer.flush()
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """HParams accepts numbers, strings and booleans; lists and None become strings."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
