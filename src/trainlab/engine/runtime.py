"""Speed settings of the trainer: mixed precision, torch.compile, channels-last, cuDNN autotuning,
and how the C library's allocator treats the memory CPU tensors give back.

Each is resolved here from `trainer.*` and the device, so the loop in `trainer.py` only
uses the result: an autocast context (or `nullcontext`), a `GradScaler` (or None), the
module to call for training (compiled or not), a memory format (or None).
"""

from __future__ import annotations

import ctypes
import logging
import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from trainlab.errors import ConfigError

log = logging.getLogger("trainlab")

# float16 gradients that overflow even with the loss scaled below 1 are not an overflow the
# scaler can fix: the run has diverged (torch's GradScaler docs: "If the scale falls below
# 1 ..., something is likely wrong"; DeepSpeed's loss scaler stops at 1 by default too).
MIN_LOSS_SCALE = 1.0

# glibc's mallopt parameters, and the largest mmap threshold it accepts on 64-bit systems
# (HEAP_MAX_SIZE / 2): blocks up to this size come from the heap and stay there once freed.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BLOCKS_UP_TO = 32 * 2**20
NEVER_TRIM = 2**30
PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def keep_freed_memory(setting: bool) -> str | None:
    """Tell glibc's malloc to keep the memory that CPU tensors free, for the next step.

    By default glibc hands a freed block back to the system when it was mapped on its own
    (blocks over a threshold that moves with the process's history) or when the free space
    at the top of a heap grows past another; the next step's tensors of the same size then
    page-fault on every 4 KiB page again. Whether a process falls into that depends on the
    order of its earlier allocations, so identical processes train at different speeds
    (docs/speed.md, "Host memory"). Fixed thresholds (what MALLOC_MMAP_THRESHOLD_ and
    MALLOC_TRIM_THRESHOLD_ set) end the lottery: the process keeps its peak memory
    instead of returning it between steps.

    Returns what was done, for the run's log; None when nothing was (switched off, not
    glibc). The setting is process-wide and stays for later runs in the same process.
    """
    if not setting:
        return None
    if any(name.startswith("MALLOC_") for name in os.environ):
        return "left to the MALLOC_* environment variables"
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in PRELOADED_ALLOCATORS):
        return f"left to the allocator in LD_PRELOAD ({preload})"
    try:
        libc = ctypes.CDLL(None)  # this process's C library
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl and macOS differ)
    except (OSError, AttributeError):
        return None
    if libc.mallopt(M_MMAP_THRESHOLD, KEEP_BLOCKS_UP_TO) and libc.mallopt(
        M_TRIM_THRESHOLD, NEVER_TRIM
    ):
        return "freed blocks up to 32 MiB kept for reuse (glibc)"
    return None


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this device should not train with, in one line, before any work."""
    if precision == "16-mixed" and device.type != "cuda":
        # Refused rather than allowed slowly: CPUs without float16 matrix units (most)
        # emulate float16 matmuls, many times slower than float32 (docs/speed.md). torch
        # does offer a CPU GradScaler, so this is a speed refusal, not a correctness one.
        raise ConfigError(
            f"trainer.precision=16-mixed needs a CUDA GPU (float16 matrix math on "
            f"{device.type} is emulated and many times slower than float32); use "
            "trainer.precision=bf16-mixed or trainer.precision=32"
        )
    if precision == "bf16-mixed" and device.type == "cuda":
        with torch.cuda.device(device):
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        if not native:
            raise ConfigError(
                "trainer.precision=bf16-mixed but this GPU has no native bfloat16 (it needs "
                "compute capability 8.0+, e.g. A100, H100, RTX 30xx); use "
                "trainer.precision=16-mixed"
            )


def autocast(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    """The context to run forward and loss in: torch.autocast for mixed precision.

    Built once and entered at each step (an autocast object can be re-entered after exit).
    """
    if precision == "32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """Loss scaling for float16 (its small range underflows small gradients); bfloat16 has
    float32's range and needs none. Built wherever torch has one (CPU included: the Trainer
    as a library trains what torch can; `check_precision` is the command line's refusal)."""
    return torch.amp.GradScaler(device.type) if precision == "16-mixed" else None


def resolve_auto(setting: Any, when_auto: bool) -> bool:
    """`auto | true | false` settings: `auto` takes `when_auto`."""
    return when_auto if setting == "auto" else bool(setting)


def wants_channels_last(
    setting: Any, model: nn.Module, device: torch.device, input_kind: str
) -> bool:
    """`auto`: on for a convolutional model on image data on CUDA, where channels-last
    convolutions run faster (tensor cores, no layout transposes); elsewhere it gains nothing."""
    if setting is True and input_kind != "image":
        raise ConfigError(
            f"trainer.channels_last=true needs image data (4-D batches), but this data is "
            f"{input_kind}; use trainer.channels_last=auto"
        )
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return resolve_auto(setting, device.type == "cuda" and convolutional and input_kind == "image")


def set_cudnn_benchmark(setting: Any, device: torch.device) -> bool:
    """`auto`: on for CUDA. cuDNN then times several convolution algorithms for each new
    input shape and keeps the fastest, which may be non-deterministic: `false` keeps CUDA
    runs repeatable. Set either way, so an earlier run in this process does not leak."""
    torch.backends.cudnn.benchmark = resolve_auto(setting, device.type == "cuda")
    return torch.backends.cudnn.benchmark


class CompiledOrEager:
    """`torch.compile(model)`, or `model` itself once compiling fails.

    torch compiles at the first call (and again for a new input shape), so that is where a
    missing C++ compiler, an unsupported platform or a model dynamo cannot trace shows up:
    one warning line says why, and training goes on uncompiled. `model` stays the module
    that checkpoints save, without the compiled wrapper's `_orig_mod.` key prefix.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        try:
            self.compiled: Any = torch.compile(model)
        except RuntimeError as ex:  # e.g. a Python version torch.compile does not support
            self._fall_back(ex)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            return self.model(inputs)
        try:
            return self.compiled(inputs)
        except torch._dynamo.exc.TorchDynamoException as ex:
            # Tracing and code generation come before running (except for parts before a
            # graph break, which may have run once already); a model that raises by itself
            # raises again below, eagerly, with its own error.
            self._fall_back(ex)
            return self.model(inputs)

    def _fall_back(self, ex: Exception) -> None:
        self.compiled = None
        lines = [line.strip() for line in str(ex).splitlines() if line.strip()]
        reason = lines[0] if lines else type(ex).__name__
        if len(reason) > 200:
            reason = reason[:197] + "..."
        log.warning(
            f"trainer.compile=true: torch.compile failed ({reason}); training continues "
            "uncompiled (eager)"
        )
