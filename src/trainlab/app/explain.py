"""`trainlab explain run=FOLDER [split=test] [max_rows=1000]`: what the model's outputs owe
to each input, on the run's own test split.

Tables: permutation importance on the test metric (by input column and by raw column)
and integrated gradients (Captum). Images: saliency maps. Text: token attributions
(layer integrated gradients on the embedding), the top tokens per class. Written to
`FOLDER/explain/<split>/` (CSV files and a PNG chart) and to the run's TensorBoard
folder, under `explain/`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from trainlab.app.arguments import parse_options
from trainlab.app.compress import parse_number
from trainlab.errors import TrainlabError, did_you_mean

log = logging.getLogger("trainlab")

USAGE = (
    "usage: trainlab explain run=<run folder> [split=test|val] [max_rows=1000] "
    "[checkpoint=best|last|<file.pt>]"
)
SPLITS = ("test", "val")
SHOWN = 20  # bars in a chart, tokens per class
GRID = 16  # images in the saliency grid


def explain_command(argv: list[str]) -> Path:
    """What `trainlab explain` does; returns the folder written."""
    options = parse_options(argv, ("run", "split", "max_rows", "checkpoint"), ("run",), USAGE)
    split = options.get("split", "test")
    if split not in SPLITS:
        raise TrainlabError(
            f"split={split} is not a split to explain{did_you_mean(split, list(SPLITS))}; "
            "use split=test or split=val"
        )
    max_rows = parse_number(options, "max_rows", 1000, int, 1, None, "an integer >= 1")

    from trainlab.app.run_model import folder_written, load_run

    run = load_run(Path(options["run"]), options.get("checkpoint"), split)
    inputs, targets = run.inputs[:max_rows], run.targets[: len(run.inputs)][:max_rows]
    kind = run.info.input_kind
    explain = {"features": explain_table, "image": explain_images, "tokens": explain_tokens}
    folder = run.run_dir / "explain" / split
    with folder_written(folder) as tmp:
        summary, figure, images = explain[kind](run, inputs, targets, tmp)
        figure.savefig(tmp / "attributions.png", dpi=100, bbox_inches="tight")
    write_tensorboard(run.run_dir / "tb", split, summary, figure, images)
    log.info(f"{summary}\nwrote {folder} and TensorBoard tags explain/{split}/* in {run.run_dir}")
    return folder


def explain_table(run: Any, inputs: Any, targets: Any, out: Path) -> tuple[str, Any, Any]:
    import pandas as pd

    from trainlab.app.attributions import (
        attribution_target,
        input_names,
        integrated_gradients,
        permutation_importance,
    )
    from trainlab.components.callbacks.monitor import resolve_mode

    names, columns = input_names(run.data.preprocessor, inputs.shape[1])
    raw = list(dict.fromkeys(columns))
    higher = resolve_mode(run.metric, "auto") == "max"

    def score(values):
        return run.evaluate(run.model, [(values, targets)])[run.metric]

    single, single_std = permutation_importance(
        score, inputs, [[i] for i in range(len(names))], higher, seed=run.seed
    )
    groups = [[i for i, c in enumerate(columns) if c == column] for column in raw]
    grouped, grouped_std = permutation_importance(score, inputs, groups, higher, seed=run.seed)
    with torch_no_inference():
        target = attribution_target(run.model(inputs), targets, run.info.task)
        gradients = integrated_gradients(run.model, inputs, target).numpy()
    features = pd.DataFrame(
        {
            "feature": names,
            "column": columns,
            "permutation_importance": single,
            "permutation_std": single_std,
            "integrated_gradients": np.abs(gradients).mean(axis=0),
            "integrated_gradients_signed": gradients.mean(axis=0),
        }
    ).sort_values("permutation_importance", ascending=False, kind="stable")
    by_column = pd.DataFrame(
        {
            "column": raw,
            "permutation_importance": grouped,
            "permutation_std": grouped_std,
            "integrated_gradients": [
                features.loc[features.column == c, "integrated_gradients"].sum() for c in raw
            ],
        }
    ).sort_values("permutation_importance", ascending=False, kind="stable")
    features.to_csv(out / "features.csv", index=False)
    by_column.to_csv(out / "columns.csv", index=False)
    figure = bar_charts(
        [
            (by_column.column, by_column.permutation_importance, f"permutation: {run.metric}"),
            (features.feature, features.integrated_gradients, "integrated gradients (mean |a|)"),
        ]
    )
    pairs = zip(by_column.column[:5], by_column.permutation_importance[:5], strict=True)
    top = ", ".join(f"{column} {value:.3f}" for column, value in pairs)
    return f"permutation importance ({run.metric}, {len(inputs)} rows): {top}", figure, None


def explain_images(run: Any, inputs: Any, targets: Any, out: Path) -> tuple[str, Any, Any]:
    import pandas as pd

    from trainlab.app.attributions import attribution_target, saliency

    with torch_no_inference():
        target = attribution_target(run.model(inputs), targets, run.info.task)
        maps = saliency(run.model, inputs.clone().requires_grad_(), target)
    mean = maps.mean(dim=0)  # (C, H, W)
    channels, height, width = mean.shape
    index = np.indices((channels, height, width)).reshape(3, -1)
    pixels = pd.DataFrame(
        {"channel": index[0], "row": index[1], "col": index[2], "saliency": mean.flatten()}
    ).sort_values("saliency", ascending=False, kind="stable")
    pixels.to_csv(out / "pixels.csv", index=False)
    shown = maps[:GRID].amax(dim=1, keepdim=True)  # the strongest channel of each pixel
    shown = shown / shown.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    images = inputs[:GRID]
    low = images.flatten(1).amin(dim=1).view(-1, 1, 1, 1)
    high = images.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    images = (images - low) / (high - low).clamp_min(1e-12)
    figure = image_grid(images, shown, mean.amax(dim=0), targets[:GRID], run.info.class_names)
    strongest = pixels[["row", "col", "saliency"]][:5].values
    top = ", ".join(f"({int(r)},{int(c)}) {v:.3g}" for r, c, v in strongest)
    return f"saliency ({len(inputs)} images), strongest pixels: {top}", figure, (images, shown)


def explain_tokens(run: Any, inputs: Any, targets: Any, out: Path) -> tuple[str, Any, Any]:
    import pandas as pd

    from trainlab.app.attributions import (
        attribution_target,
        embedding_layer,
        token_attributions,
        token_texts,
    )

    embedding = embedding_layer(run.model)
    if embedding is None:
        raise TrainlabError(
            f"run={run.run_dir}: its model has no nn.Embedding to attribute tokens through"
        )
    info = run.info
    with torch_no_inference():
        target = attribution_target(run.model(inputs), targets, info.task)
        values = token_attributions(run.model, embedding, inputs, target, info.padding_idx)
    texts = token_texts(run.data.preprocessor, info.vocab_size or int(inputs.max()) + 1)
    real = inputs != info.padding_idx
    labels = (
        [info.class_names[int(t)] for t in targets]
        if info.task != "regression"
        else ["target"] * len(targets)
    )
    rows = pd.DataFrame(
        {
            "class": np.repeat(labels, real.sum(dim=1).numpy()),
            "token": [texts[int(t)] for t in inputs[real]],
            "attribution": values[real].numpy(),
        }
    )
    top = (
        rows.groupby(["class", "token"], sort=True)["attribution"]
        .agg(["mean", "count"])
        .reset_index()
        .sort_values(["class", "mean"], ascending=[True, False], kind="stable")
        .groupby("class", sort=True)
        .head(SHOWN)
        .rename(columns={"mean": "mean_attribution"})
    )
    top.to_csv(out / "tokens.csv", index=False)
    classes = list(dict.fromkeys(top["class"]))
    figure = bar_charts(
        [
            (part.token, part.mean_attribution, f"class {name}: top tokens")
            for name in classes
            for part in [top[top["class"] == name]]
        ]
    )
    best = "; ".join(
        f"{name}: {', '.join(top[top['class'] == name].token[:3])}" for name in classes
    )
    return f"token attributions ({len(inputs)} texts), top tokens per class: {best}", figure, None


class torch_no_inference:
    """Gradients on, whatever the caller set: attributions differentiate the model."""

    def __enter__(self) -> None:
        import torch

        self.previous = torch.is_grad_enabled()
        torch.set_grad_enabled(True)

    def __exit__(self, *exc: Any) -> None:
        import torch

        torch.set_grad_enabled(self.previous)


def bar_charts(panels: list[tuple[Any, Any, str]]) -> Any:
    """Horizontal bars, one panel per (labels, values, title), the largest SHOWN values."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6 * len(panels), 0.3 * SHOWN + 1.5))
    for position, (labels, values, title) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), position + 1)
        labels, values = list(labels)[:SHOWN], list(values)[:SHOWN]
        axes.barh(range(len(values))[::-1], values)
        axes.set_yticks(range(len(values))[::-1], [str(label)[:30] for label in labels])
        axes.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


def image_grid(images: Any, maps: Any, mean: Any, targets: Any, class_names: list[str]) -> Any:
    """Each image beside its saliency map, and the mean map over the split."""
    from matplotlib.figure import Figure

    count = len(images)
    figure = Figure(figsize=(2 * 4, 1.1 * (count // 2 + 2)))
    columns = 4
    rows = (count + 1) // 2 + 1
    for index in range(count):
        for offset, (picture, colours) in enumerate(
            [(images[index].permute(1, 2, 0).squeeze(-1), "gray"), (maps[index][0], "hot")]
        ):
            axes = figure.add_subplot(rows, columns, 2 * index + offset + 1)
            axes.imshow(picture.numpy(), cmap=colours)
            axes.axis("off")
            if offset == 0 and class_names:
                axes.set_title(class_names[int(targets[index])], fontsize=8)
    axes = figure.add_subplot(rows, columns, rows * columns)
    axes.imshow(mean.numpy(), cmap="hot")
    axes.set_title("mean saliency", fontsize=8)
    axes.axis("off")
    return figure


def write_tensorboard(folder: Path, split: str, summary: str, figure: Any, images: Any) -> None:
    """The chart, the summary line and (images) the saliency grid, under `explain/<split>/`."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder), filename_suffix=".explain")
    try:
        writer.add_figure(f"explain/{split}/attributions", figure, close=False)
        writer.add_text(f"explain/{split}/summary", summary)
        if images is not None:
            pictures, maps = images
            if pictures.shape[1] not in (1, 3):  # TensorBoard shows grey or RGB
                pictures = pictures.mean(dim=1, keepdim=True)
            writer.add_images(f"explain/{split}/inputs", pictures)
            writer.add_images(f"explain/{split}/saliency", maps)
    finally:
        writer.close()


def explain_main(argv: list[str]) -> None:
    """`trainlab explain ...`."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip() + "\n\n" + USAGE)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    explain_command(argv)
