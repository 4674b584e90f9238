"""TensorBoard logging: scalars, and the hparams summary that fills the HParams tab."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

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

    def log_hparams(
        self,
        params: dict[str, Any],
        metrics: dict[str, float],
        chosen: Iterable[str] = (),
    ) -> None:
        """Record the run's hyperparameters and the names of its final metrics.

        The summaries go into this run's own event file (SummaryWriter.add_hparams would
        open a second run folder); the metric values are the scalars logged under the
        same tags. Booleans stay booleans and strings strings (torch's `hparams` writes a
        boolean as a number). TensorBoard lists first the hparams marked as differing
        between runs, by name, then the others, by name: the `chosen` ones (what the
        command set or a sweep varies) are marked so, and come first.
        """
        if self.writer is None:
            return
        finite = [k for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)]
        for summary in hparams_summaries(params, finite, set(chosen)):
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


def hparams_summaries(
    params: dict[str, Any], metric_tags: list[str], chosen: set[str]
) -> list[Summary]:
    """The hparams plugin's experiment, session-start and session-end summaries."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    infos = []
    for name, value in params.items():
        if isinstance(value, bool):  # before int: a bool is an int
            start.hparams[name].bool_value = value
            kind = api_pb2.DATA_TYPE_BOOL
        elif isinstance(value, (int, float)):
            start.hparams[name].number_value = value
            kind = api_pb2.DATA_TYPE_FLOAT64
        else:  # lists and None as text
            start.hparams[name].string_value = str(value)
            kind = api_pb2.DATA_TYPE_STRING
        infos.append(api_pb2.HParamInfo(name=name, type=kind, differs=name in chosen))
    experiment = api_pb2.Experiment(
        hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in metric_tags],
    )
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    contents = {
        metadata.EXPERIMENT_TAG: plugin_data_pb2.HParamsPluginData(experiment=experiment),
        metadata.SESSION_START_INFO_TAG: plugin_data_pb2.HParamsPluginData(
            session_start_info=start
        ),
        metadata.SESSION_END_INFO_TAG: plugin_data_pb2.HParamsPluginData(session_end_info=end),
    }
    return [
        Summary(
            value=[
                Summary.Value(
                    tag=tag,
                    metadata=metadata.create_summary_metadata(content),
                    tensor=metadata.NULL_TENSOR,
                )
            ]
        )
        for tag, content in contents.items()
    ]
