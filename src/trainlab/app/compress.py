"""`trainlab compress run=FOLDER method=quantize|prune ...`: a smaller model of a finished run.

`method=quantize`: post-training dynamic int8 quantization of the Linear, LSTM and GRU
layers. `method=prune amount=0.5 [structured=true] [finetune_epochs=N]`: magnitude
pruning of the Linear and Conv layers, then, if asked, N epochs of training on the run's
own training split with the pruned weights held at zero. The result goes to
`FOLDER/compressed/<method>/` (see app/compressed.py), with one table against the fp32
model: size on disk, the test metric and its change, CPU latency for one row and a batch.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from trainlab.app.arguments import parse_options
from trainlab.errors import TrainlabError, did_you_mean

log = logging.getLogger("trainlab")

USAGE = (
    "usage: trainlab compress run=<run folder> method=quantize|prune [amount=0.5] "
    "[structured=false] [finetune_epochs=0] [checkpoint=best|last|<file.pt>]"
)
METHODS = ("quantize", "prune")
PRUNE_ONLY = ("amount", "structured", "finetune_epochs")
BATCH_ROWS = 256  # the batch of the latency column


def parse_number(
    options: dict[str, str],
    key: str,
    default: Any,
    kind: type,
    low: float,
    high: float | None,
    text: str,
) -> Any:
    """`options[key]` as `kind` within [low, high) (`high` None: no bound), else one line."""
    if key not in options:
        return default
    raw = options[key]
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value >= high):
        raise TrainlabError(f"{key}={raw}: must be {text}, e.g. {key}={default}")
    return value


def parse_bool(options: dict[str, str], key: str) -> bool:
    raw = options.get(key, "false").lower()
    if raw not in ("true", "false"):
        raise TrainlabError(f"{key}={options[key]}: must be true or false")
    return raw == "true"


def compress_command(argv: list[str]) -> Path:
    """What `trainlab compress` does; returns the folder written."""
    options = parse_options(
        argv, ("run", "method", "checkpoint", *PRUNE_ONLY), ("run", "method"), USAGE
    )
    method = options["method"]
    if method not in METHODS:
        raise TrainlabError(
            f"method={method} is not a compression method{did_you_mean(method, list(METHODS))};"
            " use method=quantize or method=prune"
        )
    if method == "quantize" and (given := [k for k in PRUNE_ONLY if k in options]):
        raise TrainlabError(
            f"{given[0]}= is an option of method=prune; method=quantize takes run= and "
            "checkpoint= only"
        )
    amount = parse_number(options, "amount", 0.5, float, 0.0, 1.0, "a fraction in [0, 1)")
    finetune = parse_number(options, "finetune_epochs", 0, int, 0, None, "an integer >= 0")
    structured = parse_bool(options, "structured")

    from trainlab.app.compressed import file_sizes, write_compressed
    from trainlab.app.run_model import load_run
    from trainlab.components.compression import quantize_int8, sparsity

    run = load_run(Path(options["run"]), options.get("checkpoint"))
    original = run.model
    if method == "quantize":
        compressed = quantize_int8(original)
        settings: dict[str, Any] = {}
    else:
        settings = {"amount": amount, "structured": structured, "finetune_epochs": finetune}
        compressed = prune_model(run, amount, structured, finetune)
    measured = {
        "fp32": measure(original, run, file_sizes),
        method: measure(compressed, run, file_sizes),
    }
    if method == "prune":
        measured[method]["sparsity"] = round(sparsity(compressed), 6)
    table = format_table(measured, run.metric)
    manifest = {
        "method": method,
        "options": settings,
        "source_checkpoint": str(run.checkpoint),
        "model": run.config["model"],
        "loss": run.config.get("loss") or {},
        "metric": run.metric,
        "results": measured,
    }
    folder = write_compressed(
        run.run_dir / "compressed" / method, compressed, manifest, run.run_dir, table
    )
    print(table)
    log.info(f"wrote {folder} (load it with trainlab.app.compressed.load_compressed)")
    return folder


def prune_model(run: Any, amount: float, structured: bool, finetune: int) -> Any:
    """A pruned copy of the run's model, fine-tuned `finetune` epochs on its training split."""
    import copy

    from trainlab.components.compression import apply_masks, prunable_weights, pruning_masks

    model = copy.deepcopy(run.model)
    weights = list(prunable_weights(model, structured))
    if len(weights) <= structured:  # structured leaves the output layer whole
        kind = "Linear or Conv layer but its output layer" if structured else "Linear, Conv or RNN"
        raise TrainlabError(
            f"run={run.run_dir}: {type(model).__name__} has no {kind} weights to prune"
            + ("; use structured=false" if structured else "")
        )
    if not finetune:
        apply_masks(model, pruning_masks(model, amount, structured))
        return model
    from omegaconf import OmegaConf

    from trainlab.components.callbacks import Pruning
    from trainlab.components.optim import build_optimizer
    from trainlab.engine.seeding import seed_everything
    from trainlab.engine.trainer import Trainer

    seed_everything(run.seed)
    model.train()
    optimizer = build_optimizer(OmegaConf.create(run.config["optim"]), model)
    trainer = Trainer(
        model,
        optimizer,
        run.loss_fn,
        max_epochs=finetune,
        metrics=run.new_metrics(),
        # Pruned before the first epoch, held at zero after every step.
        callbacks=[Pruning(amount, structured, start_epoch=0, end_epoch=0)],
        seed=run.seed,
    )
    state = trainer.fit(run.data.train_batches(run.seed), run.data.eval_batches("val"))
    log.info(
        f"fine-tuned {finetune} epoch{'s' * (finetune > 1)}: "
        + "  ".join(f"{k} {v:.4f}" for k, v in state.metrics.items())
    )
    return model.eval()


def measure(model: Any, run: Any, file_sizes: Any) -> dict[str, Any]:
    """Size, the test metrics and CPU latency (median of repeated calls) of `model`."""
    size, zipped = file_sizes(model)
    values = run.evaluate(model)
    rows = run.inputs
    return {
        "size_bytes": size,
        "zipped_bytes": zipped,
        "test": values,
        "latency_row_ms": latency(model, rows[:1], 50) * 1e3,
        "latency_batch_ms": latency(model, rows[:BATCH_ROWS], 10) * 1e3,
        "batch_rows": int(min(len(rows), BATCH_ROWS)),
    }


def latency(model: Any, inputs: Any, repeats: int) -> float:
    """Median seconds of one forward pass over `inputs` on one CPU thread (after 3 warm-up
    calls): one thread is what a serving worker gets, and is steady on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times = []
    try:
        with torch.inference_mode():
            for index in range(repeats + 3):
                started = time.perf_counter()
                model(inputs)
                if index >= 3:
                    times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times)


def format_table(measured: dict[str, dict[str, Any]], metric: str) -> str:
    """The Markdown table printed and written to report.md."""
    base = measured["fp32"]
    lines = [
        f"| model | size (KiB) | size ratio | zipped (KiB) | {metric} | change | "
        f"latency 1 row (ms) | latency {base['batch_rows']} rows (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, values in measured.items():
        score, reference = values["test"].get(metric), base["test"].get(metric)
        change = "" if name == "fp32" or score is None else f"{score - reference:+.4f}"
        label = name + (f" ({values['sparsity']:.1%} zero)" if "sparsity" in values else "")
        lines.append(
            f"| {label} | {values['size_bytes'] / 1024:.1f} | "
            f"{base['size_bytes'] / values['size_bytes']:.2f}x | "
            f"{values['zipped_bytes'] / 1024:.1f} | "
            f"{'' if score is None else f'{score:.4f}'} | {change} | "
            f"{values['latency_row_ms']:.3f} | {values['latency_batch_ms']:.3f} |"
        )
    return "\n".join(lines)


def compress_main(argv: list[str]) -> None:
    """`trainlab compress ...`."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip() + "\n\n" + USAGE)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    compress_command(argv)
