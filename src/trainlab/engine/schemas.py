"""The `trainer:` settings: the loop's own (the `Trainer`'s arguments, same defaults) and how
the run places data and computes (device, loader, threads, precision, memory).

Torch-free, so a bad `trainer.*` value is reported before torch is imported; and, as all
of the engine, free of Hydra and the application.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trainlab.schema import auto_or_bool, auto_or_count, spec

PRECISIONS = ("32", "bf16-mixed", "16-mixed")  # Lightning's names


def device_name(value: Any) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        return None
    return "must be one of: auto, cpu, cuda, cuda:N, mps"


def precision_name(value: Any) -> str | None:
    if value in PRECISIONS:
        return None
    if (newer := {"16": "16-mixed", "bf16": "bf16-mixed"}.get(value)) is not None:
        return f"is the older name of trainer.precision={newer}: use that"
    return f"must be one of: {', '.join(PRECISIONS)}"


@dataclass
class TrainerSchema:
    max_epochs: int = spec(30, ge=1)
    device: str = spec("auto", check=device_name)
    log_every_n_steps: int = spec(1, ge=1)
    limit_train_batches: int | None = spec(None, ge=1)
    limit_eval_batches: int | None = spec(None, ge=1)
    accumulate_grad_batches: int = spec(1, ge=1)
    gradient_clip_val: float | None = spec(None, gt=0.0)
    gradient_clip_algorithm: str = spec("norm", choices=("norm", "value"))
    nan_policy: str = spec("stop", choices=("stop", "skip"))
    max_skipped_steps: int = spec(10, ge=0)
    detect_anomaly: bool = spec(False)
    loader: str = spec("auto", choices=("auto", "tensors", "dataloader"))
    pin_memory: Any = spec("auto", check=auto_or_bool)
    num_threads: Any = spec("auto", check=auto_or_count)
    # A string field: `precision: 32` (an integer in YAML) arrives as "32".
    precision: str = spec("32", check=precision_name)
    compile: bool = spec(False)
    channels_last: Any = spec("auto", check=auto_or_bool)
    cudnn_benchmark: Any = spec("auto", check=auto_or_bool)
    keep_freed_memory: bool = spec(True)
    # Several processes (docs/distributed.md): how many this command starts, how the
    # model is spread over them, how long a collective may wait for a missing process.
    devices: Any = spec(1, check=auto_or_count)
    strategy: str = spec("ddp", choices=("ddp", "fsdp"))
    sync_batch_norm: bool = spec(False)
    dist_timeout_s: float = spec(300.0, gt=0.0)
