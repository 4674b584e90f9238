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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.config import validate, validate_metrics
from trainlab.errors import ConfigError, TrainlabError

log = logging.getLogger("trainlab")


@dataclass
class Experiment:
    """Everything a config builds: data, trainer (model, optimizer, ...), output folder."""

    cfg: DictConfig
    data: Any
    trainer: Any
    train: Any
    val: Any
    test: Any
    checkpoint: Any
    seed: int
    device: Any
    output_dir: Path


def build(cfg: DictConfig) -> Experiment:
    """Validate `cfg` and build every part of the experiment it describes."""
    validate(cfg)

    import torch  # noqa: F401  (imported here: config errors return without it)
    from hydra.utils import instantiate

    from trainlab.callbacks import ModelCheckpoint
    from trainlab.losses import build_loss, num_outputs
    from trainlab.metrics import TaskMetrics, resolve_objective
    from trainlab.models import build_model
    from trainlab.optim import build_optimizer, build_schedule
    from trainlab.seeding import resolve_seed, seed_everything
    from trainlab.trainer import Trainer

    seed = resolve_seed(cfg.seed)
    if cfg.seed is None:
        log.info(f"seed=null: drew seed {seed} (pass seed={seed} to repeat this run)")
    device = resolve_device(cfg.trainer.device)
    seed_everything(seed)

    data = instantiate(cfg.data, seed=seed, _convert_="all").to(device)
    info = data.info
    cfg.objective = resolve_objective(cfg.objective, info.task)
    validate_metrics(cfg, info.task)
    loss_fn, l1 = build_loss(cfg.loss, data)
    model = build_model(cfg.model, info, num_outputs(cfg.loss, data)).to(device)
    optimizer = build_optimizer(cfg.optim, model)

    trainer_cfg = cfg.trainer
    train = data.train_batches(seed, limit=trainer_cfg.limit_train_batches)
    steps = Trainer.steps_per_epoch(len(train), trainer_cfg.accumulate_grad_batches)
    schedule = build_schedule(
        cfg.sched, optimizer, steps_per_epoch=steps, max_epochs=trainer_cfg.max_epochs
    )
    callbacks = [instantiate(node) for node in (cfg.callbacks or {}).values() if node is not None]
    logger = instantiate(cfg.logger) if cfg.logger.get("_target_") else None
    trainer = Trainer(
        model,
        optimizer,
        loss_fn,
        max_epochs=trainer_cfg.max_epochs,
        schedule=schedule,
        metrics=TaskMetrics(info.task, info.num_classes, device, info.target_mean, info.target_std),
        callbacks=callbacks,
        logger=logger,
        log_every_n_steps=trainer_cfg.log_every_n_steps,
        accumulate_grad_batches=trainer_cfg.accumulate_grad_batches,
        gradient_clip_val=trainer_cfg.gradient_clip_val,
        gradient_clip_algorithm=trainer_cfg.gradient_clip_algorithm,
        l1=l1,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    checkpoints = [cb for cb in callbacks if isinstance(cb, ModelCheckpoint)]
    return Experiment(
        cfg=cfg,
        data=data,
        trainer=trainer,
        train=train,
        val=data.eval_batches("val", limit=trainer_cfg.limit_eval_batches),
        test=data.eval_batches("test", limit=trainer_cfg.limit_eval_batches),
        checkpoint=checkpoints[0] if checkpoints else None,
        seed=seed,
        device=device,
        output_dir=Path(cfg.paths.output_dir),
    )


def run(cfg: DictConfig) -> float:
    """Train and test the experiment `cfg` describes; return its objective value."""
    started = time.perf_counter()
    exp = build(cfg)
    # What prediction needs besides the weights: DataInfo and any fitted preprocessing.
    exp.data.save(exp.output_dir)
    trainer, info = exp.trainer, exp.data.info
    log.info(
        f"training {type(trainer.model).__name__} "
        f"({count_parameters(trainer.model):,} parameters) on {len(exp.data.train)} "
        f"{info.name} rows ({info.task}), device {exp.device}, seed {exp.seed}, "
        f"run folder {exp.output_dir}"
    )
    state = trainer.fit(exp.train, exp.val)

    # Judge the run by its best checkpoint when there is one.
    best = exp.checkpoint.best_path if exp.checkpoint is not None else None
    if best is not None:
        from trainlab.checkpoint import load_checkpoint

        trainer.model.load_state_dict(load_checkpoint(best, map_location=exp.device)["model"])
        log.info(f"testing the best checkpoint: {best} (epoch {exp.checkpoint.best_epoch + 1})")
    final = {**trainer.evaluate(exp.val, "val"), **trainer.evaluate(exp.test, "test")}
    objective = final[cfg.objective]
    test_metrics = {k: v for k, v in final.items() if k.startswith("test/")}
    if trainer.logger is not None:
        trainer.logger.log_scalars(test_metrics, step=state.epoch)
        trainer.logger.log_hparams(
            hparams(cfg, exp.seed), test_metrics | {cfg.objective: objective}
        )
        trainer.logger.close()

    summary = {
        "objective": {"name": cfg.objective, "value": objective},
        "task": info.task,
        "val": {k: v for k, v in final.items() if k.startswith("val/")},
        "test": test_metrics,
        "best_checkpoint": str(best) if best else None,
        "epochs": state.epoch + 1,
        "steps": state.global_step,
        "seed": exp.seed,
        "device": str(exp.device),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(summary, exp.output_dir / "metrics.json")
    log.info("test: " + "  ".join(f"{k} {v:.4f}" for k, v in test_metrics.items()))
    log.info(f"objective {cfg.objective} = {objective:.4f}; results in {exp.output_dir}")
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
