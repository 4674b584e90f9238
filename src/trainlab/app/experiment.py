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

from trainlab.app import processes, runs
from trainlab.app.config import validate, validate_metrics
from trainlab.app.early_checks import check_early
from trainlab.app.hparams import chosen_hparams, hparams
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


def build(
    cfg: DictConfig, fold: tuple[int, int] | None = None, checked: dict[str, Any] | None = None
) -> Experiment:
    """Validate `cfg` and build every part of the experiment it describes.

    `checked`: what `validate(cfg)` returned, when the caller validated `cfg` already
    (validating again costs a sweep job a few tenths of a second).

    `fold=(k, folds)` builds fold k of a cross-validation: part k of the non-test rows is
    the validation split. With `resume=...` the trainer continues from the checkpoint,
    which must match `cfg`'s model, data and seed.
    """
    trainer_cfg = (checked or validate(cfg))["trainer"]  # checked, every default filled in

    import torch  # imported here: config errors return without it
    from hydra.utils import instantiate

    from trainlab.components.callbacks import ModelCheckpoint
    from trainlab.components.losses import build_loss, num_outputs
    from trainlab.components.metrics import TaskMetrics, resolve_objective
    from trainlab.components.models import build_model
    from trainlab.components.models.build import has_batch_norm
    from trainlab.components.optim import build_optimizer, build_schedule, replan_schedule
    from trainlab.engine import distributed
    from trainlab.engine.checkpoint import load_checkpoint
    from trainlab.engine.runtime import (
        check_precision,
        keep_freed_memory,
        set_cudnn_benchmark,
        wants_channels_last,
    )
    from trainlab.engine.seeding import resolve_seed, seed_everything
    from trainlab.engine.trainer import Trainer

    processes.join(cfg)  # as RunFolder does; a run from Python arrives here first
    processes.check_processes(trainer_cfg, cfg)
    device = processes.place_on_device(resolve_device(trainer_cfg.device))
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
    if trainer_cfg.sync_batch_norm and distributed.world_size() > 1:
        model = processes.sync_batch_norm(model, device)
    if distributed.world_size() > 1:  # the same weights everywhere; dropout masks differ
        seed_everything(seed + distributed.rank())
        if trainer_cfg.strategy == "fsdp":  # before the optimizer: it takes the shards
            model = distributed.shard_model(model)
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
    train = data.train_batches(
        seed, limit=trainer_cfg.limit_train_batches, drop_last_single=has_batch_norm(model)
    )
    threads, count = None, None
    if device.type == "cpu":
        count, why = cpu_threads(trainer_cfg, resumed, model, optimizer, loss_fn, train)
        if count != torch.get_num_threads():  # leave torch's own pools alone otherwise
            torch.set_num_threads(count)
        threads = f"{count} CPU thread{'s' * (count > 1)} ({why})"
    steps = Trainer.steps_per_epoch(len(train), trainer_cfg.accumulate_grad_batches)
    schedule = build_schedule(
        cfg.sched, optimizer, steps_per_epoch=steps, max_epochs=trainer_cfg.max_epochs
    )
    # `data_info` goes to the callback as it is: Hydra would turn a dataclass given to
    # `instantiate` into a config (slowly, and not a DataInfo any more).
    callbacks = [
        instantiate(node, _partial_=True)(**wanted_by(node._target_, data_info=info))
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
        config=resolved_config(cfg, seed, count),
    )
    if resumed is not None:
        trainer.restore(resumed)
        if changed := runs.changed_settings(resumed["config"], trainer.config):
            log.warning(
                f"resuming with settings changed since the checkpoint: {'; '.join(changed)}"
            )
        if why := schedule_changed(resumed, trainer, schedule):
            position = resumed["position"]
            interval = schedule.interval if schedule is not None else "epoch"
            done = position["global_step"] if interval == "step" else position["epoch"]
            left = trainer_cfg.max_epochs * (steps if interval == "step" else 1) - done
            if left > 0:
                trainer.schedule = replan_schedule(
                    cfg.sched,
                    cfg.optim,
                    optimizer,
                    model,
                    steps_per_epoch=steps,
                    max_epochs=trainer_cfg.max_epochs,
                    done=done,
                )
                log.warning(
                    f"{why}: re-planned the schedule for trainer.max_epochs="
                    f"{trainer_cfg.max_epochs} ({steps} steps an epoch), going on from "
                    f"{interval} {done}"
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


def cpu_threads(
    trainer_cfg: TrainerSchema, resumed: dict[str, Any] | None, model, optimizer, loss_fn, train
) -> tuple[int, str]:
    """How many CPU threads the run trains with, and why. A resumed `auto` run keeps the
    count it began with: the count changes the last bits of the numbers."""
    from trainlab.engine.runtime import autocast
    from trainlab.engine.threads import choose_threads

    setting = trainer_cfg.num_threads
    began_with = (resumed or {}).get("config", {}).get("trainer", {}).get("num_threads")
    if setting == "auto" and isinstance(began_with, int):
        return began_with, "the count the resumed run began with"
    return choose_threads(
        setting,
        model,
        optimizer,
        loss_fn,
        train.example(train.batch_size),
        precision_context=autocast(trainer_cfg.precision, train.device),
    )


def resolved_config(cfg: DictConfig, seed: int, threads: int | None) -> dict[str, Any]:
    """The config a checkpoint keeps: `cfg` with the seed and thread count the run used."""
    config = OmegaConf.to_container(cfg, resolve=True) | {"seed": seed}
    if threads is not None:
        config["trainer"]["num_threads"] = threads
    return config


def run(cfg: DictConfig) -> float:
    """Train and test the experiment `cfg` describes; return its objective value."""
    from trainlab.engine import preemption

    preemption.phase = "checking the config"
    checked = validate(cfg)
    check_early(checked)  # before anything below reads a setting (cv.folds, resume)
    if runs.resume_source(cfg) is None:
        runs.check_new_run_folder(Path(cfg.paths.output_dir))
    if cfg.mode != "train":
        from trainlab.app.finders import find

        runs.record_run_config(cfg)
        return find(cfg)
    if cfg.cv.folds:
        from trainlab.app.cross_validation import cross_validate

        runs.record_run_config(cfg)
        return cross_validate(cfg)
    started = time.perf_counter()
    saved_config = OmegaConf.create(OmegaConf.to_container(cfg))  # as composed, for .hydra/
    preemption.phase = "building the experiment"
    exp = build(cfg, checked=checked)
    runs.record_run_config(saved_config)  # checked and built: now the folder may change
    if exp.resumed_from is not None:  # what a writer killed with the last run left
        from trainlab.engine.checkpoint import remove_dead_writers_files

        for folder in (exp.output_dir, exp.output_dir / "checkpoints"):
            remove_dead_writers_files(folder)
    logger = exp.trainer.logger
    try:
        final, state, best = train_and_test(exp)
        objective = final[cfg.objective]
        if logger is not None:
            final_metrics = {cfg.objective: objective} | final  # every val/ and test/ metric
            logger.log_hparams(hparams(cfg, exp.seed), final_metrics, chosen_hparams())
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
    preemption.phase = "writing metrics.json"
    write_json_atomic(summary, exp.output_dir / "metrics.json")
    preemption.phase = "finished"
    log.info("test: " + "  ".join(f"{k} {v:.4f}" for k, v in summary["test"].items()))
    log.info(f"objective {cfg.objective} = {objective:.4f}; results in {exp.output_dir}")
    return objective


def train_and_test(exp: Experiment) -> tuple[dict[str, float], Any, Path | None]:
    """Fit, then score the best checkpoint (or the final weights) on val and test."""
    from trainlab.engine import distributed, preemption

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
    if trainer.detect_anomaly:
        log.info(
            "autograd anomaly detection on: slower; a backward pass that makes a NaN or "
            "inf stops the run and names the operation that made it "
            "(trainer.detect_anomaly=false to turn it off)"
        )
    if (line := processes.describe(exp.train.batch_size, trainer.accumulate)) is not None:
        log.info(line)
    if exp.resumed_from is not None:
        position = trainer.state
        log.info(
            f"resuming from {exp.resumed_from}: epoch {trainer.start_epoch + 1}, "
            f"batch {position.batch_in_epoch}, step {position.global_step}"
        )
    preemption.phase = "training"
    with preemption.handled():  # SIGTERM / SIGUSR1: checkpoint at the next step, stop
        state = trainer.fit(exp.train, exp.val)
        late = preemption.requested() if state.stopped_by is None else None
    if state.stopped_by is not None:
        raise Preempted(stopped_message(exp, state), state.stopped_by)
    preemption.phase = "testing"
    if late is not None:  # after the loop's last look: the checkpoints are written
        raise preemption.Stopped(late)
    best = exp.checkpoint.best_path if exp.checkpoint is not None else None
    distributed.barrier()  # the main process has written best.pt before any reads it
    if best is not None:
        from trainlab.engine.checkpoint import load_checkpoint

        trainer.load_weights(load_checkpoint(best, map_location=exp.device)["model"])
        log.info(f"testing the best checkpoint: {best} (epoch {exp.checkpoint.best_epoch + 1})")
    final = {**trainer.evaluate(exp.val, "val"), **trainer.test(exp.test)}
    if trainer.logger is not None:
        trainer.logger.log_scalars(split(final, "test"), step=state.global_step)
    return final, state, best


def schedule_changed(resumed: dict[str, Any], trainer: Any, schedule: Any) -> str | None:
    """Why the checkpoint's schedule state does not fit this run (None: it does): the
    `sched` settings changed, or the run length a schedule was planned for did."""
    saved = resumed["config"]
    if saved.get("sched") != trainer.config.get("sched"):
        return "sched differs from the checkpoint's"
    if schedule is None or schedule.planned_epochs is None:
        return None
    before, now = saved.get("trainer", {}), trainer.config["trainer"]
    # What the number of optimizer steps, so the schedule's length, depends on.
    for key in ("max_epochs", "limit_train_batches", "accumulate_grad_batches"):
        if before.get(key) != now.get(key):
            return f"trainer.{key} changed ({before.get(key)} in the checkpoint)"
    return None


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
    from trainlab.app.sweeps.optuna_study import trial_storage
    from trainlab.app.sweeps.pruning import OptunaPruning

    trial = cfg[TRIAL_KEY]
    return OptunaPruning(
        storage=trial_storage(trial),
        study_name=trial.study_name,
        number=trial.number,
        monitor=cfg.objective,
        pruner=OmegaConf.to_container(trial.pruner) if trial.get("pruner") else None,
        run_dir=str(cfg.paths.output_dir),
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

    num_workers = getattr(data, "num_workers", 0)  # data.num_workers
    if getattr(data, "reads_items", False):  # a Dataset read item by item: a DataLoader
        if trainer_cfg.loader == "tensors":
            log.info("note: trainer.loader=tensors: this data is read item by item by a DataLoader")
        return data.stream_to(device, num_workers, use_pin_memory(trainer_cfg.pin_memory, device))
    if getattr(data, "streams", False):  # a table bigger than memory: never on the device whole
        if trainer_cfg.loader != "dataloader":
            log.info(
                f"trainer.loader={trainer_cfg.loader}: dataloader (a streamed table: its "
                f"batches are read from its cache folder, {num_workers} worker processes)"
            )
        return data.stream_to(device, num_workers, use_pin_memory(trainer_cfg.pin_memory, device))
    loader = choose_loader(trainer_cfg.loader, data.nbytes, device, num_workers)
    if loader == "tensors":
        return data.to(device)
    pin_memory = use_pin_memory(trainer_cfg.pin_memory, device)
    return data.stream_to(device, num_workers=num_workers, pin_memory=pin_memory)


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


def write_json_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write JSON through a temporary file renamed into place: never a half-written file."""
    from trainlab.engine.checkpoint import atomic_write_bytes
    from trainlab.engine.distributed import is_main_process

    if not is_main_process():  # the main process writes for all
        return
    atomic_write_bytes(path, json.dumps(payload, indent=2).encode())


__all__ = ["TrainlabError", "run"]
