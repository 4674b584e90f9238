"""TensorBoardFigures: confusion matrices, precision-recall curves, a predicted-vs-true
scatter, the model graph, and weight / gradient histograms.

Per-epoch images are drawn straight from the confusion-matrix tensor (no plotting library
in the loop); the test-set figures, drawn once, use matplotlib for labels and counts.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from trainlab.callbacks.base import Callback

log = logging.getLogger(__name__)


class TensorBoardFigures(Callback):
    def __init__(
        self,
        confusion_matrix: bool = True,
        pr_curves: bool = True,
        scatter: bool = True,
        graph: bool = True,
        histograms: bool = False,
        data_info: Any = None,
    ) -> None:
        self.confusion_matrix, self.pr_curves, self.scatter = confusion_matrix, pr_curves, scatter
        self.graph, self.histograms = graph, histograms
        self.class_names = list(getattr(data_info, "class_names", []) or [])
        self.graph_logged = False

    def on_fit_end(self, trainer, state) -> None:
        # Once per run, when training is over: tracing the model (torch.jit.trace) before
        # training made a CNN's training steps ~25% slower afterwards on CPU (2026-11-23,
        # scripts/bench.py). A stopped run logs it when its resumed run ends.
        if (
            self.graph
            and not self.graph_logged
            and trainer.logger is not None
            and trainer.example_input is not None
        ):
            self.graph_logged = True
            # Tracing runs the model: in eval mode, so batch-norm statistics stay as they
            # are, and on a forked random stream, so the run draws what it would have.
            model, was_training = trainer.model, trainer.model.training
            try:
                model.eval()
                with torch.random.fork_rng(devices=[]):
                    trainer.logger.writer.add_graph(model, trainer.example_input)
            except Exception as ex:  # tracing is best effort: some models cannot be traced
                log.warning(f"model graph not logged: {type(ex).__name__}: {ex}")
            finally:
                model.train(was_training)

    def on_validation_end(self, trainer, state) -> None:
        if trainer.logger is None:
            return
        matrix = trainer.metrics.confusion_matrix() if trainer.metrics is not None else None
        if self.confusion_matrix and matrix is not None:
            trainer.logger.writer.add_image(
                "val/confusion_matrix", heatmap(matrix), state.global_step, dataformats="HWC"
            )
        # Here rather than at the epoch's end: written before the epoch's checkpoint.
        if self.histograms:
            for name, parameter in trainer.model.named_parameters():
                trainer.logger.writer.add_histogram(f"weight/{name}", parameter, state.global_step)

    def on_before_optimizer_step(self, trainer, state) -> None:
        # Gradients of the epoch's last step; they are cleared right after the step.
        if self.histograms and trainer.logger is not None and trainer.is_last_step_of_epoch():
            for name, parameter in trainer.model.named_parameters():
                if parameter.grad is not None:
                    trainer.logger.writer.add_histogram(
                        f"grad/{name}", parameter.grad, state.global_step
                    )

    def on_test_end(self, trainer, state) -> None:
        if trainer.logger is None or trainer.outputs is None or trainer.metrics is None:
            return
        writer, metrics = trainer.logger.writer, trainer.metrics
        outputs, targets = trainer.outputs
        predicted = metrics.predictions(outputs).float().cpu()
        targets = targets.cpu()
        step = state.global_step
        if metrics.task == "regression":
            if self.scatter:
                unscale = metrics.std.cpu(), metrics.mean.cpu()
                writer.add_figure(
                    "test/predicted_vs_true",
                    scatter_figure(
                        predicted * unscale[0] + unscale[1], targets * unscale[0] + unscale[1]
                    ),
                    step,
                )
            return
        matrix = metrics.confusion_matrix()
        if self.confusion_matrix and matrix is not None:
            names = self.class_names or [str(i) for i in range(len(matrix))]
            writer.add_figure("test/confusion_matrix", confusion_figure(matrix.cpu(), names), step)
        if self.pr_curves:
            if metrics.task == "binary":
                writer.add_pr_curve("test/pr_curve", targets, predicted, step)
            else:
                for index in range(predicted.shape[1]):
                    name = self.class_names[index] if self.class_names else str(index)
                    writer.add_pr_curve(
                        f"test/pr_curve/{name}", targets == index, predicted[:, index], step
                    )

    def state_dict(self) -> dict[str, Any]:
        return {"graph_logged": self.graph_logged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.graph_logged = state.get("graph_logged", False)


def heatmap(matrix: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """Rows normalised to [0, 1] and drawn as white-to-blue cells: an HWC uint8 image."""
    matrix = matrix.float().cpu()
    shares = matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    white, blue = torch.tensor([255.0, 255.0, 255.0]), torch.tensor([8.0, 48.0, 107.0])
    colours = white + shares.unsqueeze(-1) * (blue - white)
    image = colours.repeat_interleave(cell, dim=0).repeat_interleave(cell, dim=1)
    return image.to(torch.uint8)


def confusion_figure(matrix: torch.Tensor, names: list[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.45 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix.numpy(), cmap="Blues")
    dark = matrix.max().item() / 2
    for (row, column), count in enumerate_cells(matrix):
        colour = "white" if count > dark else "black"
        axes.text(column, row, str(count), ha="center", va="center", fontsize=8, color=colour)
    axes.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted",
        ylabel="true",
    )
    figure.tight_layout()
    return figure


def enumerate_cells(matrix: torch.Tensor):
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            yield (row, column), int(matrix[row, column])


def scatter_figure(predicted: torch.Tensor, targets: torch.Tensor):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 5))
    x, y = targets.reshape(-1).numpy(), predicted.reshape(-1).numpy()
    axes.scatter(x, y, s=8, alpha=0.6)
    low, high = min(x.min(), y.min()), max(x.max(), y.max())
    axes.plot([low, high], [low, high], color="grey", linewidth=1)  # perfect predictions
    axes.set(xlabel="true", ylabel="predicted")
    figure.tight_layout()
    return figure
