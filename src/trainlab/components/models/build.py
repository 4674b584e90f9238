"""How a model is built for the data it will see.

A model class takes, besides its own config fields, whichever of these its signature names:
`input_shape` (one sample's shape), `num_outputs`, `input_kind` ("features", "image" or
"tokens"), `vocab_size` and `padding_idx` (token data). A class attribute `input_kinds`
lists the kinds it can take; a model without one is trusted with any data.
"""

from __future__ import annotations

import inspect

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch import nn

from trainlab.components.data.datasets import DataInfo
from trainlab.components.models.cnn import CNN
from trainlab.components.models.mlp import MLP
from trainlab.components.models.rnn import RNN
from trainlab.components.models.transformer import Transformer
from trainlab.errors import ConfigError

# The shipped models by config name (configs/model/<name>.yaml).
SHIPPED: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "transformer": Transformer,
    "rnn": RNN,
}


def build_model(cfg: DictConfig, info: DataInfo, num_outputs: int) -> nn.Module:
    model_class = get_class(cfg._target_)
    if not issubclass(model_class, nn.Module):
        # Checked before anything is built: a config (e.g. inside a checkpoint someone
        # sent) must not get any other class constructed, and run its __init__.
        raise ConfigError(
            f"model._target_={cfg._target_} is not a torch.nn.Module; name a model class, "
            f"e.g. one of: {', '.join(f'model={name}' for name in SHIPPED)}"
        )
    kinds = getattr(model_class, "input_kinds", None)
    if kinds is not None and info.input_kind not in kinds:
        fits = [name for name, cls in SHIPPED.items() if info.input_kind in cls.input_kinds]
        raise ConfigError(
            f"{model_class.__name__} cannot take {info.input_kind} data (data: {info.name}); "
            f"models that fit: {', '.join(f'model={name}' for name in fits)}"
        )
    known = {
        "input_shape": tuple(info.input_shape),
        "num_outputs": num_outputs,
        "input_kind": info.input_kind,
        "vocab_size": info.vocab_size,
        "padding_idx": info.padding_idx,
    }
    accepted = inspect.signature(model_class).parameters
    try:
        return instantiate(cfg, **{k: v for k, v in known.items() if k in accepted})
    except InstantiationException as ex:
        # A model that finds its config does not fit the data says so in words: pass that on.
        if isinstance(ex.__cause__, ConfigError):
            raise ex.__cause__ from None
        raise


def has_batch_norm(model: nn.Module) -> bool:
    """Whether `model` normalises over the batch while training (a batch of one row fails)."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    return any(isinstance(module, norms) for module in model.modules())
