"""Losses from their configs, with what they need from the data (class weights, shapes)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainlab.components.data.datasets import DataBundle, DataInfo
from trainlab.errors import ConfigError

# Keys of a loss config that trainlab handles, not the loss class.
DRIVER_KEYS = ("class_weight", "l1")

CLASSIFICATION_LOSSES = (
    "torch.nn.CrossEntropyLoss",
    "trainlab.components.losses.BCEWithLogitsLoss",
)
REGRESSION_LOSSES = ("torch.nn.MSELoss", "torch.nn.L1Loss", "torch.nn.HuberLoss")


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """Binary cross-entropy on one logit per row; takes class-index targets (0 or 1)."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return super().forward(outputs.reshape(-1), targets.reshape(-1).to(outputs.dtype))


def num_outputs(cfg: DictConfig, data: DataBundle | DataInfo) -> int:
    """How many outputs the model needs for this loss and data (the bundle or its info)."""
    info = data if isinstance(data, DataInfo) else data.info  # any data module has .info
    if info.task == "regression":
        return info.num_targets
    if cfg.get("_target_") == "trainlab.components.losses.BCEWithLogitsLoss":
        return 1
    return info.num_classes


# A table's task is detected (data=csv); the user may mean the other one.
CHOOSE_TASK = " (data=csv: data.task=classification|regression sets the task)"


def check_loss_fits(cfg: DictConfig, task: str) -> None:
    target = cfg.get("_target_")
    if task == "regression" and target in CLASSIFICATION_LOSSES:
        raise ConfigError(
            f"loss {target} is for classification but the data is a regression task; "
            "use loss=mse, loss=mae or loss=huber" + CHOOSE_TASK
        )
    if task != "regression" and target in REGRESSION_LOSSES:
        raise ConfigError(
            f"loss {target} is for regression but the data is a {task} classification task; "
            "use loss=cross_entropy" + (" or loss=bce" if task == "binary" else "") + CHOOSE_TASK
        )
    if task == "multiclass" and target == "trainlab.components.losses.BCEWithLogitsLoss":
        raise ConfigError("loss=bce needs two classes; this data has more: use loss=cross_entropy")


def class_weights(
    setting: Any, targets: torch.Tensor | None, num_classes: int
) -> torch.Tensor | None:
    """None, 'balanced' (n_rows / (n_classes * rows of the class), as scikit-learn), or a list."""
    if setting is None:
        return None
    if setting == "balanced":
        counts = np.bincount(targets.cpu().numpy(), minlength=num_classes)
        return torch.as_tensor(
            len(targets) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32
        )
    weights = torch.as_tensor(list(setting), dtype=torch.float32)
    if len(weights) != num_classes:
        raise ConfigError(
            f"loss.class_weight has {len(weights)} values but the data has {num_classes} classes"
        )
    return weights


def build_loss(cfg: DictConfig, data: DataBundle, device: torch.device) -> tuple[nn.Module, float]:
    """The loss module (class weights on `device`) and the L1 penalty strength (applied to
    weights during training)."""
    check_loss_fits(cfg, data.info.task)
    options = OmegaConf.to_container(cfg, resolve=True)
    setting = options.pop("class_weight", None)
    l1 = float(options.pop("l1", 0.0))
    # Read only when needed: a Dataset read item by item has no targets tensor at hand.
    targets = data.train.targets if setting == "balanced" else None
    weights = class_weights(setting, targets, max(data.info.num_classes, 1))
    extra: dict[str, torch.Tensor] = {}
    if weights is not None:
        if options["_target_"] == "trainlab.components.losses.BCEWithLogitsLoss":
            extra["pos_weight"] = (weights[1] / weights[0]).reshape(1).to(device)
        else:
            extra["weight"] = weights.to(device)
    return instantiate(options, **extra), l1
