"""What prediction reads from a run folder, checked: the folder, the checkpoint, the model.

Nothing here runs code from the folder: checkpoints are read with `weights_only`, and a
model is built only from classes importable here that are `torch.nn.Module`s.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from trainlab.components.data.datasets import DATA_INFO_FILE, DataInfo
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

RUN_HINT = "point run= at the folder train.py printed (outputs/runs/<date>_<time>...)"
CHECKPOINTS = ("best", "last")
# Data settings that change how batches are served, not what the model learned from.
BATCHING = ("batch_size", "eval_batch_size", "shuffle", "drop_last", "augment")


def load_data_info(run_dir: Path) -> DataInfo:
    """The run's DataInfo; a folder that is not a run folder is refused in words."""
    if not run_dir.exists():
        raise TrainlabError(f"run={run_dir}: no such run folder; {RUN_HINT}")
    if not run_dir.is_dir():
        raise TrainlabError(f"run={run_dir} is a file, not a run folder; {RUN_HINT}")
    if not (run_dir / DATA_INFO_FILE).is_file():
        runs = sorted(p.parent.name for p in run_dir.glob(f"*/{DATA_INFO_FILE}"))
        hint = f"it holds run folders ({', '.join(runs[:3])}): pick one" if runs else RUN_HINT
        raise TrainlabError(
            f"run={run_dir} is not a trainlab run folder (no {DATA_INFO_FILE}); {hint}"
        )
    try:
        return DataInfo.load(run_dir)
    except (ValueError, TypeError, AssertionError) as ex:
        raise TrainlabError(
            f"run={run_dir}: {DATA_INFO_FILE} cannot be read ({type(ex).__name__}); "
            "it was changed or cut short: train the run again"
        ) from None


def checkpoint_file(run_dir: Path, checkpoint: str | None) -> Path:
    """The checkpoint to predict with.

    None: `best.pt`, or `last.pt` for a run that has no best yet. `best` / `last`: that
    file of the run. Anything else is a path, or a file name in the run's checkpoints/.
    """
    folder = run_dir / "checkpoints"
    if checkpoint is None:
        for name in CHECKPOINTS:
            if (folder / f"{name}.pt").is_file():
                return folder / f"{name}.pt"
        raise TrainlabError(
            f"run={run_dir} has no checkpoints/best.pt or last.pt (stopped before its first "
            "save, or trained without callbacks.model_checkpoint); pass checkpoint=<file.pt>"
        )
    if checkpoint in CHECKPOINTS:
        path = folder / f"{checkpoint}.pt"
        if path.is_file():
            return path
        other = "last" if checkpoint == "best" else "best"
        hint = (
            f"use checkpoint={other}"
            if (folder / f"{other}.pt").is_file()
            else "pass checkpoint=<file.pt> (the run was trained without model_checkpoint?)"
        )
        raise TrainlabError(f"run={run_dir} has no checkpoints/{checkpoint}.pt; {hint}")
    path = Path(checkpoint)
    if not path.is_file() and not path.is_absolute() and (folder / path).is_file():
        return folder / path
    if path.is_dir():
        raise TrainlabError(
            f"checkpoint={checkpoint} is a folder; use checkpoint=best, last or a .pt file"
        )
    if not path.is_file():
        raise TrainlabError(
            f"checkpoint not found: {checkpoint} (nor in {folder}); "
            "use checkpoint=best, last or a .pt file"
        )
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    payload = load_checkpoint(path)
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("model"), dict):
        raise TrainlabError(
            f"checkpoint={path} has no model weights or config; use one a trainlab run wrote"
        )
    return payload


def note_unfinished(run_dir: Path, path: Path, payload: dict[str, Any]) -> None:
    """Say so when the run has not finished: its checkpoint may be an early one."""
    fold = re.fullmatch(r"fold_\d+", run_dir.name)  # a cross-validation's fold: one file for all
    if (run_dir / "metrics.json").is_file() or (
        fold and (run_dir.parent / "metrics.json").is_file()
    ):
        return
    position = payload.get("position") or {}
    log.info(
        f"note: run={run_dir} has not finished (no metrics.json); predicting with {path} "
        f"(saved at epoch {position.get('epoch', '?')}, step {position.get('global_step', '?')})"
    )


def own_config(run_dir: Path, chosen: Path) -> dict[str, Any] | None:
    """The run's own resolved config (from its best or last checkpoint, else .hydra), to
    check a checkpoint given as a path against; None when it cannot be read."""
    for name in CHECKPOINTS:
        path = run_dir / "checkpoints" / f"{name}.pt"
        if path.is_file() and path.resolve() != chosen.resolve():
            try:
                return load_checkpoint(path)["config"]
            except (TrainlabError, KeyError):
                continue
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return None
    try:
        config = OmegaConf.load(saved)
        return {
            key: OmegaConf.to_container(config[key], resolve=True)
            for key in ("data", "model", "loss", "seed")
            if key in config and config[key] is not None
        }
    except Exception:  # an unreadable or unresolvable .hydra config: nothing to compare with
        return None


def check_same_model(checkpoint: dict[str, Any], run: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint trained with another model, data or seed than the run's own:
    the run's tokenizer or scaling would not be the one its weights learned from."""
    differences = []
    for section in ("model", "data"):
        ours, theirs = run.get(section) or {}, checkpoint.get(section) or {}
        for key in sorted(set(ours) | set(theirs)):
            if section == "data" and key in BATCHING:
                continue
            if ours.get(key) != theirs.get(key):
                there, here = _short(key, theirs.get(key)), _short(key, ours.get(key))
                differences.append(f"{section}.{key}={there} there, {here} here")
    if run.get("seed") is not None and checkpoint.get("seed") != run.get("seed"):
        differences.append(f"seed={checkpoint.get('seed')} there, {run.get('seed')} here")
    if differences:
        more = f"; and {len(differences) - 2} more" if len(differences) > 2 else ""
        raise TrainlabError(
            f"checkpoint={path} is another run's ({'; '.join(differences[:2])}{more}): "
            "predict with it from its own run folder, or with this run's checkpoint=best or last"
        )


def _short(key: str, value: Any) -> str:
    if key == "_target_" and isinstance(value, str):
        return value.rsplit(".", 1)[-1]  # the class or function name says enough
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def check_model_classes(node: Any, where: str) -> None:
    """Every `_target_` of the model config must name an `nn.Module` class importable here:
    a config is data, and a crafted one must not make prediction call any other callable."""
    from hydra.utils import get_class

    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None:
            try:
                cls = get_class(str(target))
            except Exception as ex:
                raise TrainlabError(
                    f"{where}: model class {target} cannot be imported here "
                    f"({type(ex).__name__}); install the package that defines it"
                ) from None
            if not issubclass(cls, nn.Module):
                raise TrainlabError(
                    f"{where}: model._target_={target} is not a torch.nn.Module; "
                    "prediction builds models only"
                )
        for value in node.values():
            check_model_classes(value, where)
    elif isinstance(node, list):
        for value in node:
            check_model_classes(value, where)


def build_model_from(payload: dict[str, Any], info: DataInfo, path: Path) -> nn.Module:
    """The model the checkpoint's config describes, with the checkpoint's weights."""
    from trainlab.components.losses import num_outputs
    from trainlab.components.models import build_model

    config = payload["config"]
    check_model_classes(config.get("model"), f"checkpoint={path}")
    loss = OmegaConf.create(config.get("loss") or {})
    model = build_model(OmegaConf.create(config["model"]), info, num_outputs(loss, info))
    expected = model.state_dict()
    weights = payload["model"]
    missing = [k for k in expected if k not in weights]
    extra = [k for k in weights if k not in expected]
    if missing or extra:
        names = ", ".join((missing or extra)[:3])
        problem = "lacks the weights" if missing else "holds weights"
        raise TrainlabError(
            f"checkpoint={path} {problem} {names} that {type(model).__name__} "
            f"{'has' if missing else 'does not have'}; it was saved by another model: "
            "use this run's checkpoints"
        )
    for key, tensor in expected.items():
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise TrainlabError(
                f"checkpoint={path}: weight {key} has shape {tuple(weights[key].shape)} but "
                f"this run's data ({info.name}) needs {tuple(tensor.shape)}; use this run's "
                "checkpoints"
            )
    model.load_state_dict(weights)
    return model.eval()
