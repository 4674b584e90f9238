"""Model compression: dynamic int8 quantization and magnitude pruning, on plain modules.

Quantization is torch's own post-training dynamic quantization (`quantize_dynamic`): int8
weights for Linear, LSTM and GRU layers, activations quantized on the fly, CPU kernels
(fbgemm / x86). torchao's `quantize_` covers Linear layers only, not LSTM or GRU; see
docs/compress.md for the comparison.

Pruning computes masks with `torch.nn.utils.prune`'s own methods (L1 magnitude,
unstructured, or Ln norm over whole output rows / channels, structured) and writes the
zeros into the weights, so the model keeps its plain parameter names: a pruned model's
state dict loads into an unpruned one, checkpoints and resume work unchanged.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

# The layers whose `weight` pruning zeroes: the ones that hold nearly all of a model's weights.
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` (float32, on the CPU) with int8 Linear / LSTM / GRU layers and
    8-bit embeddings (weights only, a scale per row: a lookup has no activations).

    `torch.ao.quantization` says it is deprecated in favour of torchao, which has no
    LSTM / GRU counterpart; it is what torch ships for them, so its warning is silenced
    here and a test pins the behaviour.
    """
    import copy

    model = copy.deepcopy(model).cpu().float().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        from torch.ao import quantization

        dynamic = quantization.default_dynamic_qconfig
        kinds = {nn.Linear: dynamic, nn.LSTM: dynamic, nn.GRU: dynamic}
        kinds[nn.Embedding] = quantization.float_qparams_weight_only_qconfig
        # A Transformer layer's fast path reads its Linear layers' `weight` as a tensor,
        # which an int8 layer no longer has: those stay in float32.
        inside = {
            f"{name}.{child}" if name else child
            for name, module in model.named_modules()
            if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer))
            for child, _ in module.named_modules()
            if child
        }
        layers = {
            name: kinds[type(module)]
            for name, module in model.named_modules()
            if type(module) in kinds and name not in inside
        }
        return quantization.quantize_dynamic(model, layers, dtype=torch.qint8)


def _quantized_rnns(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase

    for name, module in model.named_modules():
        if isinstance(module, RNNBase):
            yield name, module


def quantized_state_dict(model: nn.Module) -> dict[str, Any]:
    """The state dict of a `quantize_int8` model in tensors only, so `torch.load` reads it
    with `weights_only`: a quantized LSTM / GRU keeps its weights as packed C++ objects,
    saved here as their int8 tensors and float biases (`<layer>.weight_bias.<name>`)."""
    state = model.state_dict()
    for name, module in _quantized_rnns(model):
        prefix = f"{name}." if name else ""
        for key in [k for k in state if k.startswith(f"{prefix}_all_weight_values.")]:
            del state[key]
        for values in module._weight_bias().values():
            for key, tensor in values.items():
                state[f"{prefix}weight_bias.{key}"] = tensor.detach()
    return state


def load_quantized_state_dict(model: nn.Module, state: dict[str, Any]) -> None:
    """Load what `quantized_state_dict` wrote into a `quantize_int8` model of the same
    architecture (every key must be used, as `load_state_dict` requires)."""
    metadata = getattr(state, "_metadata", None)  # the layers' format versions
    state = OrderedDict(state)
    if metadata is not None:
        state._metadata = metadata
    for name, module in _quantized_rnns(model):
        prefix = f"{name}." if name else ""
        values = {
            k[len(prefix) + len("weight_bias.") :]: state.pop(k)
            for k in list(state)
            if k.startswith(f"{prefix}weight_bias.")
        }
        module.set_weight_bias(values)
        # The packed weights just made, under the keys the layer's own loading reads.
        state.update({prefix + key: value for key, value in module.state_dict().items()})
    model.load_state_dict(state)


def prunable_weights(model: nn.Module, structured: bool = False) -> dict[str, nn.Parameter]:
    """The weights pruning acts on, by parameter name, in the model's order: the `weight`
    of each Linear and Conv layer and, unstructured, an LSTM's / GRU's weight matrices."""
    found = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, PRUNABLE):
            found[f"{prefix}weight"] = module.weight
        elif isinstance(module, nn.RNNBase) and not structured:
            for key, parameter in module.named_parameters(recurse=False):
                if key.startswith("weight_"):
                    found[prefix + key] = parameter
    return found


def pruning_masks(
    model: nn.Module,
    amount: float,
    structured: bool = False,
    norm: float = 1,
    masks: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A mask (True keep, False drop) per parameter name, each weight pruned on its own.

    Unstructured: the `amount` fraction of each weight's values smallest in magnitude
    (`L1Unstructured`). Structured: the `amount` fraction of each Linear / Conv layer's
    output units (rows, channels) smallest in Ln norm (`LnStructured`), with their biases;
    the model's last such layer (its outputs) is left whole, since a class with zeroed
    logits is a class lost. Earlier `masks` are kept: what they pruned stays pruned, and
    the fraction counts it.
    """
    weights = list(prunable_weights(model, structured).items())
    if structured:
        weights = weights[:-1]
    masks = masks or {}
    names = dict(model.named_parameters())
    new = {}
    for name, parameter in weights:
        weight = parameter.detach()
        start = masks.get(name)
        start = torch.ones_like(weight) if start is None else start.to(weight.device, weight.dtype)
        if structured:
            method = prune.LnStructured(amount, n=norm, dim=0)
            # LnStructured ranks the masked weight, so channels pruned before rank lowest.
            mask = method.compute_mask(weight * start, default_mask=start).to(torch.bool)
            bias = name.removesuffix("weight") + "bias"
            if bias in names:
                new[bias] = mask.flatten(1).any(dim=1)
        else:
            mask = prune.L1Unstructured(amount).compute_mask(weight * start, default_mask=start)
        new[name] = mask.to(torch.bool)
    return new


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned values of each masked parameter, in place."""
    parameters = dict(model.named_parameters())
    for name, mask in masks.items():
        parameter = parameters[name]
        parameter.mul_(mask.to(parameter.device, parameter.dtype))


def sparsity(model: nn.Module) -> float:
    """The fraction of the prunable weights (as unstructured pruning counts them) that are
    exactly zero."""
    weights = prunable_weights(model).values()
    zeros = sum(int((weight == 0).sum()) for weight in weights)
    return zeros / max(sum(weight.numel() for weight in weights), 1)
