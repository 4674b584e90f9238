"""Predictions of a trained run for new rows of a table, preprocessed exactly as in training.

`trainlab predict run=<run folder> input=<file> [output=predictions.csv] [checkpoint=best]`
rebuilds the model from the checkpoint's config and the run's `data_info.json`, loads the
weights, applies the run's fitted `preprocessing.pkl` to the input and writes one row per
input row: the class label and each class's probability, or the value in the target's units.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import nn

from trainlab.components.data.datasets import DATA_INFO_FILE, DataInfo
from trainlab.components.data.files import read_table
from trainlab.components.data.preprocessing import TablePreprocessor
from trainlab.components.losses import num_outputs
from trainlab.components.models import build_model
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.errors import TrainlabError, did_you_mean

log = logging.getLogger("trainlab")

USAGE = (
    "usage: trainlab predict run=<run folder> input=<csv|parquet|npz file> "
    "[output=predictions.csv] [checkpoint=best|last|<file.pt>]"
)
DEFAULTS = {"output": "predictions.csv", "checkpoint": "best"}
KEYS = ("run", "input", "output", "checkpoint")
OUTPUT_SUFFIXES = (".csv", ".parquet")
ROWS_PER_CHUNK = 4096  # rows sent through the model at once


def parse_args(argv: list[str]) -> dict[str, str]:
    """`key=value` arguments into a dict (with defaults); anything else is an error."""
    options = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not value:
            raise TrainlabError(f"cannot parse '{arg}': write key=value; {USAGE}")
        if key not in KEYS:
            raise TrainlabError(f"unknown option '{key}'{did_you_mean(key, list(KEYS))}; {USAGE}")
        options[key] = value
    if missing := [key for key in ("run", "input") if key not in options]:
        raise TrainlabError(f"{' and '.join(missing)} not given; {USAGE}")
    return options


def checkpoint_file(run_dir: Path, checkpoint: str) -> Path:
    """`best` or `last` in the run's checkpoints/ folder, or a path to a checkpoint file."""
    if checkpoint not in ("best", "last"):
        return Path(checkpoint)
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        other = "last" if checkpoint == "best" else "best"
        hint = (
            f"use checkpoint={other}"
            if (run_dir / "checkpoints" / f"{other}.pt").is_file()
            else "pass checkpoint=<file.pt> (the run was trained without model_checkpoint?)"
        )
        raise TrainlabError(f"run={run_dir} has no checkpoints/{checkpoint}.pt; {hint}")
    return path


@dataclass
class Predictor:
    """A trained model with its data description and its fitted preprocessing."""

    model: nn.Module
    info: DataInfo
    preprocessor: TablePreprocessor
    data_config: dict[str, Any]  # the run's data settings (e.g. the .npz array names)

    @classmethod
    def load(cls, run_dir: str | Path, checkpoint: str = "best") -> Predictor:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise TrainlabError(
                f"run={run_dir}: no such run folder; point run= at outputs/runs/..."
            )
        if not (run_dir / DATA_INFO_FILE).is_file():
            raise TrainlabError(
                f"run={run_dir} is not a finished trainlab run folder (no {DATA_INFO_FILE}); "
                "point run= at the folder train.py printed (outputs/runs/<date>_<time>...)"
            )
        info = DataInfo.load(run_dir)
        preprocessor = TablePreprocessor.load(run_dir)
        payload = load_checkpoint(checkpoint_file(run_dir, checkpoint))
        config = OmegaConf.create(payload["config"])
        model = build_model(config.model, info, num_outputs(config.loss, info))
        model.load_state_dict(payload["model"])
        return cls(model.eval(), info, preprocessor, payload["config"]["data"])

    @torch.inference_mode()
    def outputs(self, frame: pd.DataFrame, where: str) -> torch.Tensor:
        """The model's raw outputs for the rows of `frame`."""
        inputs = torch.as_tensor(self.preprocessor.transform(frame, where))
        return torch.cat([self.model(chunk) for chunk in inputs.split(ROWS_PER_CHUNK)])

    def predict(self, frame: pd.DataFrame, where: str = "the input") -> pd.DataFrame:
        """One row per row of `frame`: `prediction` (a class name or a value in the target's
        units) and, for classification, `probability_<class>` for each class."""
        outputs = self.outputs(frame, where)
        info = self.info
        if info.task == "regression":
            mean = torch.tensor(info.target_mean or [0.0])
            std = torch.tensor(info.target_std or [1.0])
            return pd.DataFrame({"prediction": (outputs * std + mean)[:, 0].numpy()})
        if outputs.shape[-1] == 1:  # one logit (loss=bce): the positive class's probability
            positive = outputs[:, 0].sigmoid()
            probabilities = torch.stack([1 - positive, positive], dim=1)
        else:
            probabilities = outputs.softmax(dim=-1)
        names = info.class_names
        table = {"prediction": [names[i] for i in probabilities.argmax(dim=1).tolist()]}
        for index, name in enumerate(names):
            table[f"probability_{name}"] = probabilities[:, index].numpy()
        return pd.DataFrame(table)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write CSV or Parquet through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def predict_command(argv: list[str]) -> Path:
    """What `predict.py` does; returns the path of the predictions written."""
    options = parse_args(argv)
    source, output = Path(options["input"]), Path(options["output"])
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise TrainlabError(f"output={output}: write .csv or .parquet, e.g. output=predictions.csv")
    if output.resolve() == source.resolve():
        raise TrainlabError(f"output={output} is the input file; choose another output path")
    predictor = Predictor.load(options["run"], options["checkpoint"])
    data = predictor.data_config
    frame = read_table(
        source,
        what="input",
        npz_features=data.get("npz_features", "X"),
        npz_target=data.get("npz_target", "y"),
    )
    predictions = predictor.predict(frame, f"input={source}")
    write_table(predictions, output)
    log.info(f"wrote {len(predictions)} predictions to {output}")
    return output


def predict_main(argv: list[str]) -> None:
    """`trainlab predict ...` (and `python predict.py ...`)."""
    import sys

    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip() + "\n\n" + USAGE)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    predict_command(argv)
