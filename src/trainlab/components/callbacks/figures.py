"""TensorBoardFigures: confusion matrices, precision-recall curves, a predicted-vs-true
scatter, the model graph, and weight / gradient histograms.

Per-epoch images are drawn straight from the confusion-matrix tensor (no plotting library
in the loop); the test set's confusion matrix, drawn once, has its counts and class names
(drawn with Pillow); the regression scatter uses matplotlib.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import TYPE_CHECKING, Any

import torch

from trainlab.engine.callback import Callback

if TYPE_CHECKING:
    import numpy as np

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
        # training slows a CNN's training steps on CPU afterwards (docs/speed.md). A
        # stopped run logs it when its resumed run ends.
        writer = tensorboard_writer(trainer)
        if (
            self.graph
            and not self.graph_logged
            and writer is not None
            and trainer.example_input is not None
        ):
            self.graph_logged = True
            # Tracing runs the model: in eval mode, so batch-norm statistics stay as they
            # are, and on a forked random stream, so the run draws what it would have. Under
            # no_grad, as the model runs to evaluate (an eval-mode Transformer layer takes
            # its fused path only without grad). Tracer warnings concern reusing the trace
            # on other inputs, which this display never does.
            model, was_training = trainer.model, trainer.model.training
            try:
                model.eval()
                with (
                    torch.random.fork_rng(devices=[]),
                    torch.no_grad(),
                    warnings.catch_warnings(),
                    contextlib.redirect_stdout(io.StringIO()),  # add_graph prints its failure
                ):
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    # torch.jit.trace, which torch deprecates
                    warnings.filterwarnings("ignore", r"`torch\.jit\.trace", DeprecationWarning)
                    writer._get_file_writer().add_graph(model_graph(model, trainer.example_input))
            except Exception as ex:  # tracing is best effort: some models cannot be traced
                first_line = (str(ex).strip().splitlines() or [""])[0][:200]
                log.info(f"note: model graph not logged ({type(ex).__name__}: {first_line})")
            finally:
                model.train(was_training)

    def on_validation_end(self, trainer, state) -> None:
        if (writer := tensorboard_writer(trainer)) is None:
            return
        matrix = trainer.metrics.confusion_matrix() if trainer.metrics is not None else None
        if self.confusion_matrix and matrix is not None:
            writer.add_image(
                "val/confusion_matrix", heatmap(matrix), state.global_step, dataformats="HWC"
            )
        # Here rather than at the epoch's end: written before the epoch's checkpoint.
        if self.histograms:
            for name, parameter in trainer.model.named_parameters():
                writer.add_histogram(f"weight/{name}", parameter, state.global_step)

    def on_before_optimizer_step(self, trainer, state) -> None:
        # Gradients of the epoch's last step; they are cleared right after the step.
        writer = tensorboard_writer(trainer)
        if self.histograms and writer is not None and trainer.is_last_step_of_epoch():
            for name, parameter in trainer.model.named_parameters():
                if parameter.grad is not None:
                    writer.add_histogram(f"grad/{name}", parameter.grad, state.global_step)

    def on_test_end(self, trainer, state) -> None:
        writer = tensorboard_writer(trainer)
        if writer is None or trainer.outputs is None or trainer.metrics is None:
            return
        metrics = trainer.metrics
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
            writer.add_image(
                "test/confusion_matrix", confusion_image(matrix.cpu(), names), step,
                dataformats="HWC",
            )  # fmt: skip
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


# Graphs traced in this process, by architecture (a sweep's trials share a few): tracing
# costs a small model's job about as much as its training.
_GRAPHS: dict[tuple, Any] = {}
_GRAPHS_KEPT = 16


def model_graph(model: torch.nn.Module, example: Any) -> Any:
    """TensorBoard's graph of `model` run on `example` (what `SummaryWriter.add_graph`
    logs), traced once per architecture for trainlab's own models: their structure,
    settings, parameter shapes and input shapes decide the graph, their weights do not.
    A user's model (whose forward may depend on more than its repr shows) is traced every
    time."""
    key = _graph_key(model, example)
    if key is None:
        return _traced_graph(model, example)
    if key not in _GRAPHS:
        if len(_GRAPHS) >= _GRAPHS_KEPT:
            _GRAPHS.pop(next(iter(_GRAPHS)))
        _GRAPHS[key] = _traced_graph(model, example)
    return _GRAPHS[key]


def _traced_graph(model: torch.nn.Module, example: Any) -> Any:
    """torch.utils.tensorboard's `graph(model, example)`, without the trace's check (a
    second trace, compared with the first): a graph to look at, not a module to run."""
    from torch.utils.tensorboard._pytorch_graph import (
        DeviceStepStats,
        GraphDef,
        RunMetadata,
        StepStats,
        VersionDef,
        parse,
    )

    trace = torch.jit.trace(model, example, strict=True, check_trace=False)
    graph = trace.graph
    torch._C._jit_pass_inline(graph)
    nodes = parse(graph, trace, example)
    stats = RunMetadata(step_stats=StepStats(dev_stats=[DeviceStepStats(device="/device:CPU:0")]))
    return GraphDef(node=nodes, versions=VersionDef(producer=22)), stats


def _graph_key(model: torch.nn.Module, example: Any) -> tuple | None:
    if not type(model).__module__.startswith("trainlab.components.models."):
        return None
    inputs = example if isinstance(example, (tuple, list)) else (example,)
    if not all(isinstance(x, torch.Tensor) for x in inputs):
        return None
    tensors = [*model.named_parameters(), *model.named_buffers()]
    # Settings a module's repr may leave out that change its forward (norm_first, ...).
    flags = tuple(
        (name, key, value)
        for name, module in model.named_modules()
        for key, value in sorted(vars(module).items())
        if key != "training" and isinstance(value, (bool, int, float, str, type(None)))
    )
    return (
        type(model).__qualname__,
        repr(model),
        flags,
        tuple((name, tuple(t.shape), t.dtype, t.device.type) for name, t in tensors),
        tuple((tuple(x.shape), x.dtype, x.device.type) for x in inputs),
    )


def tensorboard_writer(trainer) -> Any:
    """The run's SummaryWriter; None without a logger, or where this process does not write
    (see `TensorBoardLogger`)."""
    return getattr(trainer.logger, "writer", None)


def heatmap(matrix: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """Rows normalised to [0, 1] and drawn as white-to-blue cells: an HWC uint8 image."""
    matrix = matrix.float().cpu()
    shares = matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    white, blue = torch.tensor([255.0, 255.0, 255.0]), torch.tensor([8.0, 48.0, 107.0])
    colours = white + shares.unsqueeze(-1) * (blue - white)
    image = colours.repeat_interleave(cell, dim=0).repeat_interleave(cell, dim=1)
    return image.to(torch.uint8)


def confusion_image(matrix: torch.Tensor, names: list[str]) -> np.ndarray:
    """The confusion matrix with its counts and class names: an HWC uint8 image.

    Drawn with Pillow rather than matplotlib, whose import costs more than drawing this.
    Cells are shaded by their share of the true class's row (white: none, blue: all),
    like the per-epoch heat maps; rows are the true classes, columns the predicted ones.
    """
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    counts = matrix.long().tolist()
    n = len(counts)
    widest = max(len(str(count)) for row in counts for count in row)
    cell = max(22, min(48, 7 * widest + 14))
    font = ImageFont.load_default(size=max(8, min(14, cell * 0.9 / (0.62 * widest))))
    label_font = ImageFont.load_default(size=12)
    label_width = max(label_font.getlength(name) for name in names)
    left = int(label_width) + 30  # the row names, and "true" turned on its side
    top = 10
    width, height = left + n * cell + 10, top + n * cell + int(label_width) + 36
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    white, blue = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])
    for row in range(n):
        total = max(sum(counts[row]), 1)
        for column in range(n):
            share = counts[row][column] / total
            colour = tuple(int(c) for c in white + share * (blue - white))
            x, y = left + column * cell, top + row * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(220, 220, 220))
            text = "white" if share > 0.5 else "black"
            draw.text((x + cell / 2, y + cell / 2), str(counts[row][column]), fill=text,
                      font=font, anchor="mm")  # fmt: skip
    for index, name in enumerate(names):
        middle = top + index * cell + cell / 2
        draw.text((left - 6, middle), name, fill="black", font=label_font, anchor="rm")
        # Column names run downwards, as rotated text.
        length = int(label_font.getlength(name)) + 2
        label = Image.new("RGB", (length, 16), "white")
        ImageDraw.Draw(label).text((0, 8), name, fill="black", font=label_font, anchor="lm")
        label = label.rotate(90, expand=True)
        x = left + index * cell + (cell - label.width) // 2
        image.paste(label, (x, top + n * cell + 4 + int(label_width) - length + 2))
    bottom = top + n * cell + int(label_width) + 8
    draw.text((left + n * cell / 2, bottom + 12), "predicted", fill="black", font=label_font,
              anchor="mm")  # fmt: skip
    side = Image.new("RGB", (40, 16), "white")
    ImageDraw.Draw(side).text((20, 8), "true", fill="black", font=label_font, anchor="mm")
    side = side.rotate(90, expand=True)
    image.paste(side, (4, top + n * cell // 2 - side.height // 2))
    return np.asarray(image)


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
