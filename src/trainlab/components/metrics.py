"""Metrics for each task, computed on the device with torchmetrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# The epoch-level metrics of each task, besides `loss`.
TASK_METRICS = {
    "multiclass": ("acc", "precision", "recall", "f1", "auroc"),
    "binary": ("acc", "precision", "recall", "f1", "auroc", "ap"),
    "regression": ("mse", "rmse", "mae", "r2"),
}
# Model outputs wait and are scored together, one update per this many output values
# (16 MiB of float32): each torchmetrics update has a fixed cost per metric whatever its
# size (docs/speed.md). Classification scores are the same (counts; exact AUROC keeps
# every prediction either way), regression errors equal to float32 rounding.
SCORE_EVERY_VALUES = 2**22
# What `objective=auto` means for each task.
DEFAULT_OBJECTIVE = {"multiclass": "val/acc", "binary": "val/acc", "regression": "val/r2"}


def metric_names(task: str) -> tuple[str, ...]:
    """Every epoch-level tag a run of `task` logs: what `monitor` and `objective` may name."""
    names = ("loss", *TASK_METRICS[task])
    return ("train/loss", *(f"{split}/{name}" for split in ("val", "test") for name in names))


def resolve_objective(objective: str, task: str) -> str:
    return DEFAULT_OBJECTIVE[task] if objective == "auto" else objective


class TaskMetrics:
    """Turns raw model outputs into what torchmetrics expects for the task, and scores them.

    Multiclass: softmax over the outputs. Binary: the positive class's probability, from
    two outputs (cross-entropy) or one logit (BCE). Regression: the outputs as they are.
    Classification also keeps a confusion matrix, read with `confusion_matrix()`.
    """

    def __init__(
        self,
        task: str,
        num_classes: int,
        device: torch.device,
        target_mean: list[float] | None = None,
        target_std: list[float] | None = None,
    ) -> None:
        import torch
        from torchmetrics import MetricCollection, regression
        from torchmetrics import classification as cls

        self.task = task
        # Regression metrics are reported in the data's units, not the standardised ones.
        self.mean = torch.tensor(target_mean or [0.0], device=device)
        self.std = torch.tensor(target_std or [1.0], device=device)
        # Accuracy, precision, recall and F1 are read off the confusion matrix, with
        # torchmetrics' own reductions (`counted_scores`): one bincount per update instead
        # of one per metric, the same values.
        if task == "multiclass":
            metrics = {"auroc": cls.MulticlassAUROC(num_classes, average="macro")}
            confusion = cls.MulticlassConfusionMatrix(num_classes)
        elif task == "binary":
            metrics = {"auroc": cls.BinaryAUROC(), "ap": cls.BinaryAveragePrecision()}
            confusion = cls.BinaryConfusionMatrix()
        else:
            metrics = {
                "mse": regression.MeanSquaredError(),
                "rmse": regression.MeanSquaredError(squared=False),
                "mae": regression.MeanAbsoluteError(),
                "r2": regression.R2Score(),
            }
            confusion = None
        self.collection = MetricCollection(metrics, compute_groups=False).to(device)
        self.confusion = confusion.to(device) if confusion is not None else None
        self._waiting: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._waiting_values = 0

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities (multiclass), positive-class probability (binary), or values."""
        if self.task == "multiclass":
            return outputs.softmax(dim=-1)
        if self.task == "binary":
            if outputs.shape[-1] == 2:
                return outputs.softmax(dim=-1)[..., 1]
            return outputs.reshape(-1).sigmoid()
        return outputs

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch's raw outputs and targets; they are scored in blocks (see
        SCORE_EVERY_VALUES), and before any result is read."""
        self._waiting.append((outputs, targets))
        self._waiting_values += outputs.numel()
        if self._waiting_values >= SCORE_EVERY_VALUES:
            self._score_waiting()

    def _score_waiting(self) -> None:
        if not self._waiting:
            return
        if len(self._waiting) == 1:
            ((outputs, targets),) = self._waiting
        else:
            import torch

            outputs = torch.cat([o for o, _ in self._waiting])
            targets = torch.cat([t for _, t in self._waiting])
        self._waiting, self._waiting_values = [], 0
        self._score(outputs, targets)

    def _score(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        predicted = self.predictions(outputs)
        if self.task == "regression":
            predicted = predicted * self.std + self.mean
            targets = targets * self.std + self.mean
            if predicted.shape[-1] == 1:
                predicted, targets = predicted.reshape(-1), targets.reshape(-1)
        self.collection.update(predicted, targets)
        if self.confusion is not None:
            self.confusion.update(predicted, targets)

    def compute(self) -> dict[str, torch.Tensor]:
        """Every metric of the task, in TASK_METRICS' order."""
        self._score_waiting()
        values = dict(self.collection.compute())
        if self.confusion is not None:
            values |= counted_scores(self.confusion.compute(), self.task)
        return {name: values[name] for name in TASK_METRICS[self.task]}

    def confusion_matrix(self) -> torch.Tensor | None:
        self._score_waiting()
        return self.confusion.compute() if self.confusion is not None else None

    def reset(self) -> None:
        self._waiting, self._waiting_values = [], 0
        self.collection.reset()
        if self.confusion is not None:
            self.confusion.reset()


def counted_scores(confusion: torch.Tensor, task: str) -> dict[str, torch.Tensor]:
    """Accuracy, precision, recall and F1 from a confusion matrix (rows: true class), by
    torchmetrics' reductions: what MulticlassAccuracy (micro) and MulticlassPrecision,
    Recall and F1Score (macro: classes neither present nor predicted left out), or the
    Binary* metrics at their 0.5 threshold, compute from the same counts.

    The reductions are torchmetrics' private functions: allowed because
    tests/test_metrics.py pins them (equal to the public metrics in 20 cases, edge cases
    included) and they score faster than one metric per score (docs/speed.md).
    """
    from torchmetrics.functional.classification.accuracy import _accuracy_reduce
    from torchmetrics.functional.classification.f_beta import _fbeta_reduce
    from torchmetrics.functional.classification.precision_recall import (
        _precision_recall_reduce,
    )

    true_positives = confusion.diagonal()
    false_positives = confusion.sum(dim=0) - true_positives
    false_negatives = confusion.sum(dim=1) - true_positives
    true_negatives = confusion.sum() - true_positives - false_positives - false_negatives
    counts = (true_positives, false_positives, true_negatives, false_negatives)
    if task == "binary":  # the positive class's counts
        counts = tuple(count[1] for count in counts)
        accuracy = average = "binary"
    else:
        accuracy, average = "micro", "macro"
    return {
        "acc": _accuracy_reduce(*counts, average=accuracy),
        "precision": _precision_recall_reduce("precision", *counts, average=average),
        "recall": _precision_recall_reduce("recall", *counts, average=average),
        "f1": _fbeta_reduce(*counts, beta=1.0, average=average),
    }
