"""Predictions of a trained run for new inputs, encoded exactly as in training.

`trainlab predict run=<run folder> input=<file> [output=predictions.csv] [checkpoint=best]`
rebuilds the model from the checkpoint's config and the run's `data_info.json`, loads the
weights and encodes the input as training did: a table through the run's fitted
preprocessing, text through its tokenizer, images and feature arrays through the scaling
training fitted. It writes one row per input row: `row` (the input's row, from 1), the
class and each class's probability, or the value in the target's units.
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
from torch import nn

from trainlab.app.predict_inputs import input_for_run
from trainlab.app.predict_run import (
    CHECKPOINTS,
    build_model_from,
    check_same_model,
    checkpoint_file,
    load_data_info,
    note_unfinished,
    own_config,
    read_checkpoint,
)
from trainlab.components.data.datasets import DataInfo
from trainlab.components.data.file_checks import check_file
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

USAGE = (
    "usage: trainlab predict run=<run folder> input=<csv|parquet|npz|npy|txt file> "
    "[output=predictions.csv] [checkpoint=best|last|<file.pt>]"
)
DEFAULTS = {"output": "predictions.csv"}
KEYS = ("run", "input", "output", "checkpoint")
OUTPUT_SUFFIXES = (".csv", ".parquet")
ROWS_PER_CHUNK = 4096  # rows sent through the model at once


def parse_args(argv: list[str]) -> dict[str, str]:
    """`key=value` arguments into a dict (with defaults); anything else is an error."""
    from trainlab.app.arguments import parse_options

    return parse_options(argv, KEYS, ("run", "input"), USAGE, defaults=DEFAULTS, example=_example)


def _example(arg: str) -> str:
    return f"run={arg}" if Path(arg).is_dir() else f"input={arg}"


@dataclass
class Predictor:
    """A trained model with its data description and the encoding of its inputs.

    `Predictor.load(run_dir).predict(inputs)` takes what the run trained on: a DataFrame
    (tables; texts in the text column), a list of texts, or an array of samples.
    """

    model: nn.Module
    info: DataInfo
    inputs: Any  # TableInput, TextInput or ArrayInput (app/predict_inputs.py)
    data_config: dict[str, Any]  # the run's data settings
    checkpoint: Path

    @classmethod
    def load(cls, run_dir: str | Path, checkpoint: str | None = None) -> Predictor:
        """The run's model from `checkpoint`: `best` (default; `last` for a run that has no
        best yet), `last`, or a checkpoint file of this run."""
        run_dir = Path(run_dir)
        info = load_data_info(run_dir)
        path = checkpoint_file(run_dir, checkpoint)
        payload = read_checkpoint(path)
        if checkpoint not in (None, *CHECKPOINTS) and (own := own_config(run_dir, path)):
            check_same_model(payload["config"], own, path)
        note_unfinished(run_dir, path, payload)
        model = build_model_from(payload, info, path)
        inputs = input_for_run(run_dir, info, payload["config"])
        return cls(model, info, inputs, payload["config"].get("data") or {}, path)

    def read(self, path: str | Path) -> Any:
        """The inputs in the file at `path`, as `predict` takes them."""
        return self.inputs.read(Path(path), "input")

    @torch.inference_mode()
    def outputs(self, inputs: Any, where: str = "the input") -> torch.Tensor:
        """The model's raw outputs for `inputs`."""
        encoded = self.inputs.encode(inputs, where)
        return torch.cat([self.model(chunk) for chunk in encoded.split(ROWS_PER_CHUNK)])

    def predict(self, inputs: Any, where: str = "the input") -> pd.DataFrame:
        """One row per input: `prediction` (a class name or a value in the target's
        units) and, for classification, `probability_<class>` for each class."""
        outputs = self.outputs(inputs, where)
        index = inputs.index if isinstance(inputs, pd.DataFrame) else None
        if self.info.task == "regression":
            values = self.values(outputs).numpy()
            names = (
                ["prediction"]
                if values.shape[1] == 1
                else [f"prediction_{i}" for i in range(values.shape[1])]
            )
            return pd.DataFrame(values, columns=names, index=index)
        probabilities = self.probabilities(outputs)
        names = self.info.class_names
        table = {"prediction": [names[i] for i in probabilities.argmax(dim=1).tolist()]}
        for position, name in enumerate(names):
            table[f"probability_{name}"] = probabilities[:, position].numpy()
        return pd.DataFrame(table, index=index)

    def values(self, outputs: torch.Tensor) -> torch.Tensor:
        """A regression's outputs in the target's units (training standardised them)."""
        mean = torch.tensor(self.info.target_mean or [0.0] * outputs.shape[1])
        std = torch.tensor(self.info.target_std or [1.0] * outputs.shape[1])
        return outputs * std + mean

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """Each class's probability, one row per input, in `info.class_names` order."""
        if outputs.shape[-1] == 1:  # one logit (loss=bce): the positive class's probability
            positive = outputs[:, 0].sigmoid()
            return torch.stack([1 - positive, positive], dim=1)
        return outputs.softmax(dim=-1)


def check_output(output: Path, source: Path) -> None:
    """Refuse, before any work, an output that cannot or must not be written."""
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise TrainlabError(f"output={output}: write .csv or .parquet, e.g. output=predictions.csv")
    if output.resolve() == source.resolve():
        raise TrainlabError(f"output={output} is the input file; choose another output path")
    if output.is_dir():
        raise TrainlabError(f"output={output} is a folder; name a file, e.g. {output}/p.csv")
    folder = output.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise TrainlabError(
            f"output={output}: cannot write into {folder} (not a writable folder); "
            "choose another path, e.g. output=predictions.csv"
        )


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write CSV or Parquet through a temporary file renamed into place."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except OSError as ex:
        raise TrainlabError(
            f"output={path}: cannot write it ({ex.strerror or type(ex).__name__}); "
            "choose a writable path, e.g. output=predictions.csv"
        ) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def predict_command(argv: list[str]) -> Path:
    """What `predict.py` does; returns the path of the predictions written."""
    options = parse_args(argv)
    source, output = Path(options["input"]), Path(options["output"])
    check_output(output, source)
    if not (source.is_file() or source.is_dir()):  # before the model is loaded: fail early
        check_file(source, "input")
    predictor = Predictor.load(options["run"], options.get("checkpoint"))
    inputs = predictor.read(source)
    predictions = predictor.predict(inputs, f"input={source}")
    predictions.insert(0, "row", range(1, len(predictions) + 1))
    image_files = isinstance(inputs, pd.DataFrame) and list(inputs.columns) == ["file"]
    if predictor.info.input_kind == "image" and image_files:  # say which row is which
        predictions.insert(1, "file", inputs["file"].to_numpy())
    if output.exists():
        log.info(f"note: replacing the existing {output}")
    write_table(predictions, output)
    log.info(f"wrote {len(predictions)} predictions to {output} (model: {predictor.checkpoint})")
    return output


def predict_main(argv: list[str]) -> None:
    """`trainlab predict ...` (and `python predict.py ...`)."""
    import sys

    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip() + "\n\n" + USAGE)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    predict_command(argv)
