"""Finders run before training: a learning rate (LR range test) and a batch size.

Both leave the model and optimizer as they found them, write what they measured into the
run folder (JSON, a PNG, TensorBoard) and print the override for the next run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

log = logging.getLogger("trainlab")
# The LR finder's TensorBoard tag group. TensorBoard opens the first two groups in sorted
# order; this one sorts after train, test and val, which a first look is for.
LR_FIND_GROUP = "zz_lr_find"


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    diverged: bool


def batches_forever(train) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        yield from train.epoch(epoch)
        epoch += 1


class restored:
    """Context manager: put the model and optimizer back as they were on exit."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer

    def __enter__(self) -> restored:
        self.weights = copy.deepcopy(self.model.state_dict())
        self.optimizer_state = copy.deepcopy(self.optimizer.state_dict())
        self.rng = torch.get_rng_state()
        return self

    def __exit__(self, *exc: object) -> None:
        self.model.load_state_dict(self.weights)
        self.optimizer.load_state_dict(self.optimizer_state)
        torch.set_rng_state(self.rng)


def find_lr(
    exp,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 200,
    smoothing: float = 0.05,
    divergence: float = 4.0,
) -> LRFinderResult:
    """LR range test: raise the learning rate exponentially from `min_lr` to `max_lr`,
    one training step each, until the smoothed loss exceeds `divergence` times its best.

    Suggests the rate where the smoothed loss falls fastest against log(lr).
    """
    trainer = exp.trainer
    model, optimizer, loss_fn = trainer.model, trainer.optimizer, trainer.loss_fn
    factor = (max_lr / min_lr) ** (1.0 / max(num_steps - 1, 1))
    lrs: list[float] = []
    losses: list[float] = []
    average, best, diverged = 0.0, math.inf, False
    with restored(model, optimizer):
        model.train()
        batches = batches_forever(exp.train)
        for step in range(num_steps):
            lr = min_lr * factor**step
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = next(batches)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            value = loss.item()  # the finder needs each loss at once, to stop on divergence
            average = smoothing * value + (1 - smoothing) * average
            smoothed = average / (1 - (1 - smoothing) ** (step + 1))  # bias-corrected EMA
            if not math.isfinite(smoothed) or smoothed > divergence * best:
                diverged = True
                break
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
    return LRFinderResult(lrs, losses, suggest_lr(lrs, losses), diverged)


def suggest_lr(lrs: list[float], losses: list[float]) -> float:
    """The rate of steepest descent of the loss against log(lr), ignoring both ends."""
    if len(lrs) < 10:
        return lrs[int(np.argmin(losses))] if lrs else float("nan")
    skip = max(len(lrs) // 10, 1)
    slopes = np.gradient(np.array(losses), np.log(np.array(lrs)))
    return float(lrs[skip + int(np.argmin(slopes[skip:-skip]))])


def run_lr_find(exp, options) -> float:
    result = find_lr(
        exp,
        min_lr=options.min_lr,
        max_lr=options.max_lr,
        num_steps=options.num_steps,
    )
    folder = exp.output_dir
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "suggested_lr": result.suggestion,
        "diverged": result.diverged,
        "steps": len(result.lrs),
        "lrs": result.lrs,
        "losses": result.losses,
    }
    (folder / "lr_find.json").write_text(json.dumps(payload, indent=2))
    figure = lr_figure(result)
    figure.savefig(folder / "lr_find.png", dpi=100)
    logger = exp.trainer.logger
    if logger is not None:
        for step, (lr, loss) in enumerate(zip(result.lrs, result.losses, strict=True)):
            logger.log_scalars({f"{LR_FIND_GROUP}/loss": loss, f"{LR_FIND_GROUP}/lr": lr}, step)
        logger.writer.add_figure(f"{LR_FIND_GROUP}/curve", figure, 0)
        logger.close()
    ended = "the loss diverged" if result.diverged else "reached max_lr"
    log.info(
        f"LR finder: {len(result.lrs)} steps from {result.lrs[0]:.1e}, {ended}; "
        f"suggested learning rate {result.suggestion:.3g}. Curve: {folder / 'lr_find.png'}"
    )
    log.info(f"next run: python train.py optim.lr={result.suggestion:.3g} ...")
    return result.suggestion


def lr_figure(result: LRFinderResult):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(result.lrs, result.losses)
    axes.axvline(
        result.suggestion,
        color="tab:red",
        linestyle="--",
        label=f"suggested {result.suggestion:.2g}",
    )
    axes.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)")
    axes.legend()
    figure.tight_layout()
    return figure


def find_batch_size(
    exp, candidates: list[int], steps: int = 5
) -> tuple[int, dict[int, float | None]]:
    """The largest batch that fits in memory (CUDA), or the fastest in samples/s (CPU).

    Each candidate trains `steps` steps after one warm-up step; a candidate that runs out
    of GPU memory is recorded as None. Weights and optimizer state are restored after.
    """
    trainer, train = exp.trainer, exp.train
    model, optimizer, loss_fn = trainer.model, trainer.optimizer, trainer.loss_fn
    cuda = train.device.type == "cuda"
    throughput: dict[int, float | None] = {}
    with restored(model, optimizer):
        model.train()
        for size in sorted(c for c in candidates if c <= train.num_samples):
            inputs, targets = train.example(size)
            try:
                for step in range(steps + 1):
                    if step == 1:  # the first step warms up caches and allocators
                        synchronize(cuda)
                        started = time.perf_counter()
                    optimizer.zero_grad(set_to_none=True)
                    loss_fn(model(inputs), targets).backward()
                    optimizer.step()
                synchronize(cuda)
                throughput[size] = size * steps / (time.perf_counter() - started)
            except torch.cuda.OutOfMemoryError:
                throughput[size] = None
                torch.cuda.empty_cache()
                break
    fitting = [s for s, v in throughput.items() if v is not None]
    if not fitting:
        return 0, throughput
    if cuda:
        return max(fitting), throughput
    return max(fitting, key=lambda s: throughput[s]), throughput


def synchronize(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def scaled_lr(lr: float, old_batch: int, new_batch: int, rule: str) -> float:
    """Scale the learning rate with the batch size: `linear` (Goyal et al. 2017), `sqrt`, or
    `none`."""
    ratio = new_batch / old_batch
    return {"linear": lr * ratio, "sqrt": lr * math.sqrt(ratio), "none": lr}[rule]


def run_batch_size_find(exp, options, cfg) -> int:
    candidates = list(options.candidates)
    best, throughput = find_batch_size(exp, candidates, steps=options.steps)
    old_batch = exp.train.batch_size
    lr = scaled_lr(cfg.optim.lr, old_batch, best, options.scale_lr) if best else None
    folder = Path(exp.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "batch_size": best,
        "rule": "largest that fits in GPU memory"
        if exp.train.device.type == "cuda"
        else "fastest (samples/s) on CPU",
        "samples_per_second": {str(k): v for k, v in throughput.items()},
        "scale_lr": options.scale_lr,
        "lr": lr,
    }
    (folder / "batch_size_find.json").write_text(json.dumps(payload, indent=2))
    for size, value in throughput.items():
        shown = "out of memory" if value is None else f"{value:,.0f} samples/s"
        log.info(f"batch {size:>6}: {shown}")
    override = f"data.batch_size={best}"
    if options.scale_lr != "none":
        override += f" optim.lr={lr:.3g}  ({options.scale_lr} scaling from batch {old_batch})"
    log.info(f"batch-size finder ({payload['rule']}): {best}")
    log.info(f"next run: python train.py {override}")
    return best


def find(cfg: DictConfig) -> float:
    """`mode=lr_find` or `mode=batch_size_find`: measure, suggest, train nothing."""
    from trainlab.app.experiment import build

    exp = build(cfg)
    if cfg.mode == "lr_find":
        return run_lr_find(exp, cfg.lr_find)
    return float(run_batch_size_find(exp, cfg.batch_size_find, cfg))
