"""How many CPU threads torch uses: one for small models, all cores for large ones.

A small model's operations are too short to split across threads: each split costs a
wake-up and a wait, and when another process holds a core, the thread waiting for it
stalls the whole step (measurements in docs/speed.md). A large
model's operations (convolutions over big batches) gain nearly a core's worth per thread.
The line between them is the work of one training batch's forward pass, estimated from
the model's layers and the shapes they see; it depends on the config only, never on a
timing, so the same config always trains with the same threads (and the same numbers).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

# Forward passes of a training batch below this many floating-point operations train
# with one thread: below it a second thread gains little on an idle machine and loses
# badly on a busy one; above it, it gains (docs/speed.md, "CPU threads").
SMALL_MODEL_FLOPS = 20e6
COUNTED = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.RNNBase)
# torch's own choice (the machine's physical cores, or OMP_NUM_THREADS), before any run
# of this process changed it.
DEFAULT_THREADS = torch.get_num_threads()


def choose_threads(
    setting: int | str, model: nn.Module, sample: torch.Tensor, batch_size: int
) -> tuple[int, str]:
    """The thread count for `trainer.num_threads=setting`, and why (for the run's log).

    `sample` is one input row as the model takes it, `batch_size` the training batch.
    """
    if setting != "auto":
        return int(setting), f"trainer.num_threads={setting}"
    if os.environ.get("OMP_NUM_THREADS"):
        return DEFAULT_THREADS, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    if DEFAULT_THREADS == 1:
        return 1, "one core"
    flops = forward_flops(model, sample) * batch_size
    if flops < SMALL_MODEL_FLOPS:
        return 1, f"a small model: ~{flops / 1e6:.0f} MFLOP per forward pass"
    return DEFAULT_THREADS, f"~{flops / 1e6:.0f} MFLOP per forward pass"


def forward_flops(model: nn.Module, sample: torch.Tensor) -> float:
    """Floating-point operations of one forward pass over `sample` (a batch of one),
    counted from the layers that do nearly all the work (linear, convolution, attention,
    recurrent); the rest is ignored. The model runs in eval mode: no dropout draws, no
    batch-norm statistics updated."""
    counted: list[float] = []

    def count(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        counted.append(layer_flops(module, inputs, output))

    hooks = [
        module.register_forward_hook(count)
        for module in model.modules()
        if isinstance(module, COUNTED)
    ]
    was_training = model.training
    try:
        model.eval()
        # With gradients on, torch's fused Transformer path (which skips the layers'
        # own forward methods, and so the hooks) stays off.
        with torch.enable_grad():
            model(sample)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return sum(counted)


def layer_flops(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> float:
    if isinstance(module, nn.Linear):
        return 2.0 * module.in_features * module.out_features * _rows(inputs[0], module)
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return 2.0 * per_output * output.numel()
    if isinstance(module, nn.MultiheadAttention):
        query = inputs[0]
        length = query.shape[1] if module.batch_first else query.shape[0]
        width = module.embed_dim
        projections = 2.0 * 4 * width * width * length  # query, key, value, output
        return projections + 2.0 * 2 * length * length * width  # scores, weighted sum
    if isinstance(module, nn.RNNBase):
        data = inputs[0]
        steps = (
            data.data.shape[0]
            if hasattr(data, "batch_sizes")
            else data.numel() / (module.input_size)
        )
        gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
        directions = 2 if module.bidirectional else 1
        width = module.hidden_size
        first = module.input_size + width
        later = width * directions + width
        per_step = first + later * (module.num_layers - 1)
        return 2.0 * gates * width * per_step * directions * steps
    return 0.0


def _rows(tensor: torch.Tensor, module: nn.Linear) -> float:
    return tensor.numel() / module.in_features
