"""k-fold cross-validation (`cv.folds=K`): one model per fold, the mean and spread of each
metric over the folds."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from trainlab.app.experiment import build, hparams, split, train_and_test, write_json_atomic

log = logging.getLogger("trainlab")


def cross_validate(cfg: DictConfig) -> float:
    """k-fold cross-validation: one model per fold, each in `fold_<k>/` of the run folder.

    Reports every fold and the mean and standard deviation of each metric; the objective
    is the mean over folds. The test split is held out of every fold and scored only by
    each fold's best checkpoint at the end.
    """
    started = time.perf_counter()
    folds, run_dir = cfg.cv.folds, Path(cfg.paths.output_dir)
    results, seed = [], None
    for k in range(folds):
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg.paths.output_dir = str(run_dir / f"fold_{k}")
        if seed is not None:
            fold_cfg.seed = seed  # a drawn seed (seed=null) is drawn once for all folds
        log.info(f"cross-validation: fold {k + 1}/{folds}")
        exp = build(fold_cfg, fold=(k, folds))
        seed = exp.seed
        final, _, _ = train_and_test(exp)
        if exp.trainer.logger is not None:
            exp.trainer.logger.close()
        results.append(final)
        cfg.objective = fold_cfg.objective  # resolved from `auto` by build
    mean = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
    std = {k: float(np.std([r[k] for r in results])) for k in results[0]}
    objective = mean[cfg.objective]

    from trainlab.components.loggers import TensorBoardLogger

    if cfg.logger.get("_target_"):
        summary_logger = TensorBoardLogger(run_dir / "tb")
        summary_logger.log_scalars({f"cv_mean/{k}": v for k, v in mean.items()}, step=0)
        summary_logger.log_scalars({f"cv_std/{k}": v for k, v in std.items()}, step=0)
        summary_logger.log_hparams(
            {**hparams(cfg, seed), "cv.folds": folds}, {f"cv_mean/{cfg.objective}": objective}
        )
        summary_logger.close()
    summary = {
        "objective": {"name": cfg.objective, "value": objective, "aggregate": "mean over folds"},
        "val": split(mean, "val"),
        "test": split(mean, "test"),
        "cv": {"folds": results, "mean": mean, "std": std},
        "seed": seed,
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(summary, run_dir / "metrics.json")
    for name in results[0]:
        values = "  ".join(f"{r[name]:.4f}" for r in results)
        log.info(f"{name:<16} {mean[name]:.4f} ± {std[name]:.4f}   folds: {values}")
    log.info(f"objective {cfg.objective} (mean of {folds} folds) = {objective:.4f}")
    return objective
