"""A finished run's model with its data rebuilt, for the commands that measure a model on
the run's own test split (`compress`, `explain`).

The model comes from a checkpoint read with `weights_only` and classes checked as
prediction checks them (app/predict_run.py). The data is rebuilt from the checkpoint's
data config and seed, as `resume=` rebuilds it: the same rows in the same splits, with
the preprocessing fitted on the same training rows.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from trainlab.app.predict_run import (
    build_model_from,
    checkpoint_file,
    load_data_info,
    note_unfinished,
    read_checkpoint,
)
from trainlab.components.data.datasets import DataInfo
from trainlab.errors import TrainlabError


@dataclass
class RunModel:
    run_dir: Path
    checkpoint: Path
    config: dict[str, Any]
    info: DataInfo
    model: nn.Module
    data: Any  # the run's data module, rebuilt
    loss_fn: nn.Module
    seed: int
    metric: str  # the test metric reported: the objective's test counterpart
    split: str
    batches: list[tuple[torch.Tensor, torch.Tensor]]  # of `split`

    @property
    def inputs(self) -> torch.Tensor:
        """The split's inputs in one tensor (the first batch's, when batches differ in
        shape, as padded token batches may)."""
        try:
            return torch.cat([inputs for inputs, _ in self.batches])
        except RuntimeError:
            return self.batches[0][0]

    @property
    def targets(self) -> torch.Tensor:
        return torch.cat([targets for _, targets in self.batches])

    def new_metrics(self) -> Any:
        from trainlab.components.metrics import TaskMetrics

        info = self.info
        return TaskMetrics(
            info.task, info.num_classes, torch.device("cpu"), info.target_mean, info.target_std
        )

    @torch.inference_mode()
    def evaluate(
        self, model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> dict[str, float]:
        """`test/loss` and every metric of the task, for `model` on the split (or `batches`)."""
        metrics = self.new_metrics()
        total, count = 0.0, 0
        for inputs, targets in self.batches if batches is None else batches:
            outputs = model(inputs).float()
            total += float(self.loss_fn(outputs, targets)) * len(targets)
            count += len(targets)
            metrics.update(outputs, targets)
        values = {"loss": total / max(count, 1)} | {
            name: float(value) for name, value in metrics.compute().items()
        }
        return {f"test/{name}": value for name, value in values.items()}


def load_run(run_dir: Path, checkpoint: str | None = None, split: str = "test") -> RunModel:
    """The run's model (`checkpoint`: best by default) and its rebuilt data, on the CPU,
    with the batches of `split`."""
    from hydra.utils import instantiate

    from trainlab.components.losses import build_loss
    from trainlab.components.metrics import resolve_objective
    from trainlab.engine.seeding import seed_everything
    from trainlab.schema import all_schemas

    info = load_data_info(run_dir)
    path = checkpoint_file(run_dir, checkpoint)
    payload = read_checkpoint(path)
    note_unfinished(run_dir, path, payload)
    model = build_model_from(payload, info, path)
    config = payload["config"]
    data_cfg = dict(config.get("data") or {})
    target = data_cfg.get("_target_")
    # A config is data: only trainlab's own data modules are called to rebuild the split.
    if target not in all_schemas() or not str(target).startswith("trainlab.components.data"):
        raise TrainlabError(
            f"checkpoint={path}: data._target_={target} is not one of trainlab's data modules, "
            "so its test split cannot be rebuilt here; train with a shipped data config"
        )
    seed = int(config.get("seed", 0))
    seed_everything(seed)
    folds = (config.get("cv") or {}).get("folds")
    fold = re.fullmatch(r"fold_(\d+)", run_dir.resolve().name)
    # A cross-validation's fold trained on its own rows, with scaling fitted on them.
    folding = {"fold": (int(fold.group(1)), int(folds))} if folds and fold else {}
    data = instantiate(OmegaConf.create(data_cfg), seed=seed, _convert_="all", **folding)
    data.to(torch.device("cpu"))
    if list(data.info.class_names or []) != list(info.class_names or []):
        raise TrainlabError(
            f"run={run_dir}: its data rebuilt now has other classes than data_info.json "
            "(the data files changed since training); train the run again"
        )
    loss_fn, _ = build_loss(OmegaConf.create(config.get("loss") or {}), data, torch.device("cpu"))
    objective = resolve_objective(str(config.get("objective", "auto")), info.task)
    metric = "test/" + objective.split("/", 1)[-1]
    batches = [(inputs.cpu(), targets.cpu()) for inputs, targets in data.eval_batches(split)]
    if not batches:
        raise TrainlabError(f"run={run_dir}: its {split} split is empty; nothing to measure on")
    return RunModel(run_dir, path, config, info, model, data, loss_fn, seed, metric, split, batches)


@contextmanager
def folder_written(folder: Path) -> Iterator[Path]:
    """A temporary sibling of `folder` to write into; on success it replaces `folder` whole,
    so a failure or stop midway leaves the previous result (or nothing), never half."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    except OSError as ex:
        raise TrainlabError(
            f"cannot write {folder} ({ex.strerror or type(ex).__name__}); make the run "
            "folder writable, or copy it somewhere that is"
        ) from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private; the result is a normal folder
    try:
        yield tmp
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
