"""Build everything a config names, train, test, and report the objective.

`run(cfg)` is what the `trainlab` command calls for each Hydra job and what `trainlab.run`
calls from Python (`app/api.py`); it depends only on `cfg`, with `paths.output_dir` set.
It hands `cv.folds` to `app/cross_validation.py` and the finders' modes to `app/finders.py`,
which build their experiments with `build`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from trainlab.app import runs
from trainlab.app.config import validate, validate_metrics
from trainlab.app.early_checks import check_early
from trainlab.app.sweeps.optuna_study import TRIAL_KEY
from trainlab.errors import ConfigError, Preempted, TrainlabError

if TYPE_CHECKING:
    import torch

    from trainlab.app.sweeps.pruning import OptunaPruning
    from trainlab.components.data import DataBundle
    from trainlab.engine.schemas import TrainerSchema

log = logging.getLogger("trainlab")

# Set by trainlab's own commands: only then are process-wide settings (the allocator's
# thresholds) changed; a program that imports trainlab keeps its process as it is.
OWNS_PROCESS = False


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
    resumed_from: Path | None = None
    threads: str | None = None  # CPU threads, and why so many


def build(cfg: DictConfig, fold: tuple[int, int] | None = None) -> Experiment:
    """Validate `cfg` and build every part of the experiment it describes.

    `fold=(k, folds)` builds fold k of a cross-validation: part k of the non-test rows is
    the validation split. With `resume=...` the trainer continues from the checkpoint,
    which must match `cfg`'s model, data and seed.
    """
    trainer_cfg = validate(cfg)["trainer"]  # checked, every default filled in

    import torch  # imported here: config errors return without it
    from hydra.utils import instantiate

    from trainlab.components.callbacks import ModelCheckpoint
    from trainlab.components.losses import build_loss, num_outputs
    from trainlab.components.metrics import TaskMetrics, resolve_objective
    from trainlab.components.models import build_model
    from trainlab.components.optim import build_optimizer, build_schedule
    from trainlab.engine.checkpoint import load_checkpoint
    from trainlab.engine.runtime import (
        check_precision,
        keep_freed_memory,
        set_cudnn_benchmark,
        wants_channels_last,
    )
    from trainlab.engine.seeding import resolve_seed, seed_everything
    from trainlab.engine.threads import choose_threads
    from trainlab.engine.trainer import Trainer

    device = resolve_device(trainer_cfg.device)
    precision = trainer_cfg.precision
    check_precision(precision, device)  # before any work: 16-mixed needs CUDA
    source = runs.resume_source(cfg)
    resumed = None
    if source is not None:
        resumed = load_checkpoint(source, map_location=device)
        runs.check_compatible(resumed, runs.current_settings(cfg), source)
    elif cfg.get("resume") == "auto":
        log.info("resume=auto: no unfinished run of this command to continue; starting a new run")
    if resumed is not None:  # a drawn seed (seed=null) is the one the run began with
        seed = resumed["config"]["seed"]
    else:
        seed = resolve_seed(cfg.seed)
        if cfg.seed is None:
            log.info(f"seed=null: drew seed {seed} (pass seed={seed} to repeat this run)")
    seed_everything(seed)

    if OWNS_PROCESS and (kept := keep_freed_memory(trainer_cfg.keep_freed_memory)) is not None:
        log.debug(f"host memory: {kept}")
    folding = {"fold": fold} if fold is not None else {}
    data = instantiate(cfg.data, seed=seed, _convert_="all", **folding)
    data = place_data(data, device, trainer_cfg)
    info = data.info
    cfg.objective = resolve_objective(cfg.objective, info.task)
    validate_metrics(cfg, info.task)
    loss_fn, l1 = build_loss(cfg.loss, data, device)
    model = build_model(cfg.model, info, num_outputs(cfg.loss, data)).to(device)
    optimizer = build_optimizer(cfg.optim, model)

    channels_last = wants_channels_last(trainer_cfg.channels_last, model, device, info.input_kind)
    cudnn_benchmark = set_cudnn_benchmark(trainer_cfg.cudnn_benchmark, device)
    speed = {
        f"precision {precision}": precision != "32",
        "torch.compile": trainer_cfg.compile,
        "channels-last": channels_last,
        "cudnn.benchmark": cudnn_benchmark,
    }
    if any(speed.values()):
        log.info(f"speed settings: {', '.join(name for name, on in speed.items() if on)}")
    train = data.train_batches(seed, limit=trainer_cfg.limit_train_batches)
    threads = None
    if device.type == "cpu":
        count, why = choose_threads(
            trainer_cfg.num_threads, model, train.example(1)[0], train.batch_size
        )
        if count != torch.get_num_threads():  # leave torch's own pools alone otherwise
            torch.set_num_threads(count)
        threads = f"{count} CPU thread{'s' * (count > 1)} ({why})"
    steps = Trainer.steps_per_epoch(len(train), trainer_cfg.accumulate_grad_batches)
    schedule = build_schedule(
        cfg.sched, optimizer, steps_per_epoch=steps, max_epochs=trainer_cfg.max_epochs
    )
    callbacks = [
        instantiate(node, **wanted_by(node._target_, data_info=info))
        for node in (cfg.callbacks or {}).values()
        if node is not None
    ]
    if cfg.get(TRIAL_KEY) is not None:  # a trial of an Optuna search: report, maybe prune
        callbacks.append(optuna_pruning(cfg))
    logger = None
    if cfg.logger.get("_target_"):
        # A resumed run hides what the stopped process logged after its checkpoint.
        purge = resumed["position"]["global_step"] + 1 if resumed is not None else None
        logger = instantiate(cfg.logger, **wanted_by(cfg.logger._target_, purge_step=purge))
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
        nan_policy=trainer_cfg.nan_policy,
        max_skipped_steps=trainer_cfg.max_skipped_steps,
        detect_anomaly=trainer_cfg.detect_anomaly,
        precision=precision,
        compile_model=trainer_cfg.compile,
        channels_last=channels_last,
        config=OmegaConf.to_container(cfg, resolve=True) | {"seed": seed},
    )
    if resumed is not None:
        trainer.restore(resumed)
        if changed := runs.changed_settings(resumed["config"], trainer.config):
            log.warning(
                f"resuming with settings changed since the checkpoint: {'; '.join(changed)}"
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
        resumed_from=source if resumed is not None else None,
        threads=threads,
    )


def run(cfg: DictConfig) -> float:
    """Train and test the experiment `cfg` describes; return its objective value."""
    check_early(validate(cfg))  # before anything below reads a setting (cv.folds, resume)
    if runs.resume_source(cfg) is None:
        runs.check_new_run_folder(Path(cfg.paths.output_dir))
    if cfg.mode != "train":
        from trainlab.app.finders import find

        return find(cfg)
    if cfg.cv.folds:
        from trainlab.app.cross_validation import cross_validate

        return cross_validate(cfg)
    started = time.perf_counter()
    exp = build(cfg)
    logger = exp.trainer.logger
    try:
        final, state, best = train_and_test(exp)
        objective = final[cfg.objective]
        if logger is not None:
            final_metrics = split(final, "test") | {cfg.objective: objective}
            logger.log_hparams(hparams(cfg, exp.seed), final_metrics)
    finally:  # also when training stops early: the event files keep what was logged
        if logger is not None:
            logger.close()
    summary = {
        "objective": {"name": cfg.objective, "value": objective},
        "task": exp.data.info.task,
        "val": split(final, "val"),
        "test": split(final, "test"),
        "best_checkpoint": str(best) if best else None,
        "epochs": state.epoch + 1,
        "steps": state.global_step,
        "seed": exp.seed,
        "device": str(exp.device),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(summary, exp.output_dir / "metrics.json")
    log.info("test: " + "  ".join(f"{k} {v:.4f}" for k, v in summary["test"].items()))
    log.info(f"objective {cfg.objective} = {objective:.4f}; results in {exp.output_dir}")
    return objective


def train_and_test(exp: Experiment) -> tuple[dict[str, float], Any, Path | None]:
    """Fit, then score the best checkpoint (or the final weights) on val and test."""
    from trainlab.engine import preemption

    trainer, info = exp.trainer, exp.data.info
    # What prediction needs besides the weights: DataInfo and any fitted preprocessing.
    exp.data.save(exp.output_dir)
    log.info(
        f"training {type(trainer.model).__name__} "
        f"({count_parameters(trainer.model):,} parameters) on {len(exp.data.train)} "
        f"{info.name} rows ({info.task}), device {exp.device}"
        + (f", {exp.threads}" if exp.threads else "")
        + f", seed {exp.seed}, run folder {exp.output_dir}"
    )
    if exp.resumed_from is not None:
        position = trainer.state
        log.info(
            f"resuming from {exp.resumed_from}: epoch {trainer.start_epoch + 1}, "
            f"batch {position.batch_in_epoch}, step {position.global_step}"
        )
    with preemption.handled():  # SIGTERM / SIGUSR1: checkpoint at the next step, stop
        state = trainer.fit(exp.train, exp.val)
    if state.stopped_by is not None:
        raise Preempted(stopped_message(exp, state))
    best = exp.checkpoint.best_path if exp.checkpoint is not None else None
    if best is not None:
        from trainlab.engine.checkpoint import load_checkpoint

        trainer.model.load_state_dict(load_checkpoint(best, map_location=exp.device)["model"])
        log.info(f"testing the best checkpoint: {best} (epoch {exp.checkpoint.best_epoch + 1})")
    final = {**trainer.evaluate(exp.val, "val"), **trainer.test(exp.test)}
    if trainer.logger is not None:
        trainer.logger.log_scalars(split(final, "test"), step=state.global_step)
    return final, state, best


def stopped_message(exp: Experiment, state: Any) -> str:
    where = f"{state.stopped_by} at step {state.global_step} (epoch {state.epoch + 1})"
    saved = exp.checkpoint is not None and exp.checkpoint.save_last
    if not saved:
        return f"{where}; no checkpoint saved (callbacks.model_checkpoint is off)"
    if exp.cfg.cv.folds:
        return f"{where}; saved {exp.checkpoint.last_path}; cross-validation cannot resume yet"
    return (
        f"{where}; saved {exp.checkpoint.last_path}; to continue, run the same command "
        "with resume=auto"
    )


def split(values: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in values.items() if k.startswith(f"{prefix}/")}


def optuna_pruning(cfg: DictConfig) -> OptunaPruning:
    """The callback reporting to the Optuna trial the sweeper started this job for."""
    from trainlab.app.sweeps.pruning import OptunaPruning

    trial = cfg[TRIAL_KEY]
    return OptunaPruning(
        storage=trial.storage,
        study_name=trial.study_name,
        number=trial.number,
        monitor=cfg.objective,
        pruner=OmegaConf.to_container(trial.pruner) if trial.get("pruner") else None,
    )


def wanted_by(target: str, **available: Any) -> dict[str, Any]:
    """The arguments among `available` that the class or function `target` accepts."""
    import inspect

    from hydra.utils import get_object

    parameters = inspect.signature(get_object(target)).parameters
    return {name: value for name, value in available.items() if name in parameters}


def place_data(data: DataBundle, device: torch.device, trainer_cfg: TrainerSchema) -> DataBundle:
    """Put the data where `trainer.loader` says batches come from: on the device
    (tensors), or in host memory behind a DataLoader (dataloader)."""
    from trainlab.components.data.loaders import choose_loader, use_pin_memory

    loader = choose_loader(trainer_cfg.loader, data.nbytes, device, trainer_cfg.num_workers)
    if loader == "tensors":
        return data.to(device)
    pin_memory = use_pin_memory(trainer_cfg.pin_memory, device)
    return data.stream_to(device, num_workers=trainer_cfg.num_workers, pin_memory=pin_memory)


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
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    flat: dict[str, Any] = {"seed": seed}
    for group in ("data", "model", "loss", "optim", "sched"):
        node = cfg.get(group)
        if node is None:
            continue
        for key, value in OmegaConf.to_container(node, resolve=True).items():
            if key == "_target_":  # the option chosen (e.g. mlp), else the class name
                flat[group] = choices.get(group) or str(value).rsplit(".", 1)[-1]
            elif not key.startswith("_"):
                flat[f"{group}.{key}"] = value
    flat["trainer.max_epochs"] = cfg.trainer.max_epochs
    return flat


def write_json_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write JSON through a temporary file renamed into place: never a half-written file."""
    from trainlab.engine.checkpoint import atomic_write
    from trainlab.engine.distributed import is_main_process

    if not is_main_process():  # the main process writes for all
        return
    text = json.dumps(payload, indent=2).encode()
    atomic_write(path, lambda handle: handle.write(text))


__all__ = ["TrainlabError", "run"]
