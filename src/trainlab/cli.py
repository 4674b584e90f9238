"""Build everything a config names, train, test, and report the objective.

`run(cfg)` is what `train.py` calls for each Hydra job; it depends only on `cfg`, so tests
and scripts can call it with a config composed by `hydra.compose`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.config import validate
from trainlab.errors import ConfigError, TrainlabError
from trainlab.metrics import metric_names

log = logging.getLogger("trainlab")


def run(cfg: DictConfig) -> float:
    """Train and test the experiment `cfg` describes; return its objective value."""
    started = time.perf_counter()
    validate(cfg, metric_names())

    from hydra.utils import instantiate

    from trainlab.callbacks import ModelCheckpoint
    from trainlab.checkpoint import load_checkpoint
    from trainlab.metrics import build_metrics
    from trainlab.optim import build_optimizer, build_schedule
    from trainlab.seeding import resolve_seed, seed_everything
    from trainlab.trainer import Trainer

    output_dir = Path(cfg.paths.output_dir)
    seed = resolve_seed(cfg.seed)
    if cfg.seed is None:
        log.info(f"seed=null: drew seed {seed} (pass seed={seed} to repeat this run)")
    device = resolve_device(cfg.trainer.device)
    seed_everything(seed)

    data = instantiate(cfg.data, seed=seed, _convert_="all").to(device)
    model = instantiate(
        cfg.model, input_shape=data.info.input_shape, num_outputs=data.info.num_classes
    ).to(device)
    optimizer = build_optimizer(cfg.optim, model)
    train_batches = data.train_batches(seed, limit=cfg.trainer.limit_train_batches)
    val_batches = data.eval_batches("val", limit=cfg.trainer.limit_eval_batches)
    test_batches = data.eval_batches("test", limit=cfg.trainer.limit_eval_batches)
    schedule = build_schedule(
        cfg.sched, optimizer, steps_per_epoch=len(train_batches), max_epochs=cfg.trainer.max_epochs
    )
    callbacks = [instantiate(node) for node in (cfg.callbacks or {}).values() if node is not None]
    logger = instantiate(cfg.logger) if cfg.logger.get("_target_") else None
    resolved = OmegaConf.to_container(cfg, resolve=True)

    trainer = Trainer(
        model,
        optimizer,
        instantiate(cfg.loss),
        max_epochs=cfg.trainer.max_epochs,
        schedule=schedule,
        metrics=build_metrics(data.info.num_classes, device),
        callbacks=callbacks,
        logger=logger,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        config=resolved,
    )
    log.info(
        f"training {type(model).__name__} ({count_parameters(model):,} parameters) on "
        f"{len(data.train)} {cfg.data._target_.rsplit('_', 1)[-1]} samples, "
        f"device {device}, seed {seed}, run folder {output_dir}"
    )
    state = trainer.fit(train_batches, val_batches)

    # Judge the run by its best checkpoint when there is one.
    checkpoints = [cb for cb in callbacks if isinstance(cb, ModelCheckpoint)]
    best = checkpoints[0].best_path if checkpoints else None
    if best is not None:
        model.load_state_dict(load_checkpoint(best, map_location=device)["model"])
        log.info(f"testing the best checkpoint: {best} (epoch {checkpoints[0].best_epoch + 1})")
    final = {**trainer.evaluate(val_batches, "val"), **trainer.evaluate(test_batches, "test")}
    objective = final[cfg.objective]
    if logger is not None:
        test_metrics = {k: v for k, v in final.items() if k.startswith("test/")}
        logger.log_scalars(test_metrics, step=state.epoch)
        logger.log_hparams(hparams(cfg, seed), test_metrics | {cfg.objective: objective})
        logger.close()

    summary = {
        "objective": {"name": cfg.objective, "value": objective},
        "val": {k: v for k, v in final.items() if k.startswith("val/")},
        "test": {k: v for k, v in final.items() if k.startswith("test/")},
        "best_checkpoint": str(best) if best else None,
        "epochs": state.epoch + 1,
        "steps": state.global_step,
        "seed": seed,
        "device": str(device),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(summary, output_dir / "metrics.json")
    shown = "  ".join(f"{k} {v:.4f}" for k, v in summary["test"].items())
    log.info(f"test: {shown}")
    log.info(f"objective {cfg.objective} = {objective:.4f}; results in {output_dir}")
    return objective


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device={name} but this machine has no CUDA GPU visible to torch; "
            "use trainer.device=auto or trainer.device=cpu"
        )
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(
            f"trainer.device={name} but only {torch.cuda.device_count()} CUDA device(s) are "
            "visible; use trainer.device=cuda (the first) or trainer.device=auto"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device=mps but MPS is not available; use trainer.device=auto")
    return torch.device(name)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def hparams(cfg: DictConfig, seed: int) -> dict[str, Any]:
    """The hyperparameters shown in TensorBoard's HParams tab: the chosen options and fields."""
    flat: dict[str, Any] = {"seed": seed}
    for group in ("data", "model", "loss", "optim", "sched"):
        node = cfg.get(group)
        if node is None:
            continue
        for key, value in OmegaConf.to_container(node, resolve=True).items():
            if key == "_target_":
                flat[group] = str(value).rsplit(".", 1)[-1]
            elif not key.startswith("_"):
                flat[f"{group}.{key}"] = value
    flat["trainer.max_epochs"] = cfg.trainer.max_epochs
    return flat


def write_json_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write JSON through a temporary file renamed into place: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["TrainlabError", "run"]
