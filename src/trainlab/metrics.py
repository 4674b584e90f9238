"""Classification metrics, computed on the device with torchmetrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CLASSIFICATION_METRICS = ("loss", "acc", "precision", "recall", "f1", "auroc")


def metric_names() -> tuple[str, ...]:
    """Every epoch-level tag a run logs: what `monitor` and `objective` may name."""
    splits = [f"{split}/{name}" for split in ("val", "test") for name in CLASSIFICATION_METRICS]
    return ("train/loss", *splits)


def build_metrics(num_classes: int, device: torch.device):  # -> MetricCollection
    """Accuracy (micro), macro precision / recall / F1, and macro one-vs-rest AUROC."""
    from torchmetrics import MetricCollection
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassAUROC,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "auroc": MulticlassAUROC(num_classes, average="macro"),
        },
        compute_groups=False,
    ).to(device)
