"""Inputs for prediction, per kind of run, encoded exactly as training encoded its data.

- tables (`data=csv`): the run's fitted `TablePreprocessor` takes the columns by name;
- text (`data=text`, `text_demo`): the run's tokenizer, or its TF-IDF / bag-of-words
  vectorizer; a CSV or Parquet file with the text column, or a `.txt` file with one text
  per line;
- images (`data=image_folder`): image files, decoded and normalised with the run's saved
  settings (`image_folder.json`);
- arrays (`digits`, `breast_cancer`, `diabetes`, `synthetic`, or a dataset of your own):
  `.npy` / `.npz` arrays or a table of the feature (pixel) columns, checked against the
  run's input shape and scaled by the scaler training fitted, rebuilt from the run's data
  settings and seed (the same rows, so the same statistics).
"""

from __future__ import annotations

import logging
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from trainlab.components.data import file_checks
from trainlab.components.data.datasets import DataInfo
from trainlab.components.data.files import CSV_SUFFIXES, PARQUET_SUFFIXES, read_table
from trainlab.components.data.preprocessing import TablePreprocessor, numeric_column
from trainlab.components.data.streaming_source import NPY_SUFFIXES, read_npy
from trainlab.components.data.text import TextPreprocessor
from trainlab.components.data.text_features import TextVectorizer
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

DATA_PACKAGE = "trainlab.components.data."
BUILT_IN = ("load_digits", "load_breast_cancer", "load_diabetes", "load_synthetic")
TEXT_LOADERS = ("load_text", "load_text_demo")
TEXT_SUFFIXES = (".txt",)
ARRAY_SUFFIXES = (".npy", ".npz")
TRAINED_ON_NUMBERS = "the model was trained on numbers in this column: fix the file"


def check_file(path: Path, what: str, suffixes: tuple[str, ...], takes: str) -> None:
    """An existing, non-empty file with one of `suffixes`; else one line saying what to pass."""
    if path.is_dir():  # "is a folder" says more than the folder's missing extension
        file_checks.check_file(path, what, needs=takes)
    if not path.name.lower().endswith(suffixes):
        kind = "".join(path.suffixes) or "no extension"
        raise TrainlabError(f"{what}={path}: unsupported file type ({kind}); it needs {takes}")
    file_checks.check_file(path, what, needs=takes)


def note_unused(columns: list[str], used: list[str], where: str) -> None:
    if unused := [c for c in columns if c not in used]:
        shown = ", ".join(unused[:5]) + (", ..." if len(unused) > 5 else "")
        log.info(f"note: column(s) {shown} of {where} are not model inputs; ignored")


class TableInput:
    """Rows of a table (`data=csv` runs), through the run's fitted preprocessing."""

    def __init__(self, preprocessor: TablePreprocessor, data_config: dict[str, Any]) -> None:
        self.preprocessor = preprocessor
        self.data_config = data_config

    def read(self, path: Path, what: str) -> pd.DataFrame:
        if path.name.lower().endswith(NPY_SUFFIXES):  # columns x0, x1, ... as in training
            return read_npy(path, what)
        return read_table(
            path,
            what=what,
            npz_features=self.data_config.get("npz_features", "X"),
            npz_target=self.data_config.get("npz_target", "y"),
        )

    def encode(self, inputs: Any, where: str) -> torch.Tensor:
        frame = inputs if isinstance(inputs, pd.DataFrame) else pd.DataFrame(inputs)
        frame.columns = [str(c) for c in frame.columns]
        used = [*self.preprocessor.numeric, *self.preprocessor.categorical]
        note_unused(list(frame.columns), [*used, self.preprocessor.target], where)
        return torch.as_tensor(self.preprocessor.transform(frame, where))


class TextInput:
    """Texts (text runs), tokenized and padded by the run's own fitted tokenizer, or turned
    into TF-IDF / count rows by its fitted vectorizer."""

    def __init__(self, preprocessor: TextPreprocessor | TextVectorizer, text_column: str) -> None:
        self.preprocessor = preprocessor
        self.text_column = text_column

    @property
    def takes(self) -> str:
        return f"a .txt file (one text per line) or a CSV with the column '{self.text_column}'"

    def read(self, path: Path, what: str) -> pd.DataFrame:
        check_file(path, what, (*TEXT_SUFFIXES, *CSV_SUFFIXES, *PARQUET_SUFFIXES), self.takes)
        name = path.name.lower()
        try:
            if name.endswith(TEXT_SUFFIXES):
                lines = path.read_text(encoding="utf-8").splitlines()
                return pd.DataFrame({self.text_column: lines})
            if name.endswith(PARQUET_SUFFIXES):
                return read_table(path, what=what)
            # As training read its CSV: every cell the string it is (an empty cell is "").
            sep = "\t" if name.endswith(".tsv") else ","
            return pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep)
        except pd.errors.EmptyDataError:
            raise TrainlabError(
                f"{what}={path}: the file holds no columns; it needs {self.takes}"
            ) from None
        except (UnicodeDecodeError, ValueError, OSError, pd.errors.ParserError) as ex:
            detail = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
            raise TrainlabError(f"{what}={path}: cannot read it as UTF-8 text ({detail})") from None

    def encode(self, inputs: Any, where: str) -> torch.Tensor:
        if isinstance(inputs, str):
            inputs = [inputs]
        if isinstance(inputs, pd.DataFrame):
            columns = [str(c) for c in inputs.columns]
            if self.text_column not in columns:
                raise TrainlabError(
                    f"{where} has no column '{self.text_column}' (columns: "
                    f"{', '.join(columns[:10])}); name the texts' column '{self.text_column}', "
                    "or pass a .txt file with one text per line"
                )
            note_unused(columns, [self.text_column], where)
            inputs = inputs[inputs.columns[columns.index(self.text_column)]]
        texts = ["" if _missing(t) else str(t) for t in inputs]
        if not texts:
            raise TrainlabError(f"{where} has no rows; it needs {self.takes}")
        empty = sum(1 for t in texts if not t.strip())
        if empty == len(texts):
            raise TrainlabError(f"{where} holds no text: all {empty} rows are empty")
        if empty:
            log.info(f"note: {empty} row(s) of {where} are empty; predicted from no words")
        return self.preprocessor.encode(texts)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class ArrayInput:
    """Numeric samples of the run's input shape (images, feature vectors), scaled as in
    training (`scaler` is the one training fitted, or None where it scaled nothing)."""

    def __init__(
        self,
        info: DataInfo,
        scaler: Any,
        feature_names: list[str],
        npz_features: str = "X",
    ) -> None:
        self.shape = tuple(info.input_shape)
        self.name = info.name
        self.scaler = scaler
        self.feature_names = feature_names
        self.npz_features = npz_features

    @property
    def accepted(self) -> list[tuple[Any, ...]]:
        """The input shapes taken, N standing for the number of samples."""
        shapes = [("N", *self.shape)]
        if len(self.shape) == 3 and self.shape[0] == 1:
            shapes.append(("N", *self.shape[1:]))  # one-channel images without the channel
        if len(self.shape) > 1:
            shapes.append(("N", math.prod(self.shape)))  # flat rows
        return shapes

    @property
    def takes(self) -> str:
        shapes = " or ".join(_shape(s) for s in self.accepted)
        return f"a .npy / .npz array {shapes}, or a CSV of {math.prod(self.shape)} number columns"

    def read(self, path: Path, what: str) -> Any:
        suffixes = (*ARRAY_SUFFIXES, *CSV_SUFFIXES, *PARQUET_SUFFIXES)
        check_file(path, what, suffixes, self.takes)
        name = path.name.lower()
        if not name.endswith(ARRAY_SUFFIXES):
            return read_table(path, what=what)
        try:
            if name.endswith(".npy"):
                return np.load(path, allow_pickle=False)
            with np.load(path, allow_pickle=False) as arrays:
                names = list(arrays.keys())
                key = next((k for k in (self.npz_features, "X") if k in names), None)
                if key is None and len(names) == 1:
                    key = names[0]
                if key is None:
                    raise TrainlabError(
                        f"{what}={path}: no array named '{self.npz_features}' "
                        f"(arrays: {', '.join(names)}); save the inputs as '{self.npz_features}'"
                    )
                return arrays[key]
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as ex:
            detail = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
            raise TrainlabError(f"{what}={path}: cannot read the array ({detail})") from None

    def encode(self, inputs: Any, where: str) -> torch.Tensor:
        if isinstance(inputs, pd.DataFrame):
            inputs = self.columns(inputs, where)
        values = np.asarray(inputs.detach().cpu() if torch.is_tensor(inputs) else inputs)
        if values.dtype.kind not in "biuf":
            raise TrainlabError(f"{where} holds {values.dtype} values; the model takes numbers")
        if values.shape == self.shape:
            values = values[None]  # one sample
        if not any(len(s) == values.ndim and s[1:] == values.shape[1:] for s in self.accepted):
            expected = " or ".join(_shape(s) for s in self.accepted)
            raise TrainlabError(
                f"{where} has shape {_shape(('N', *values.shape[1:]))} (N={len(values)}); "
                f"this run ({self.name}) expects {expected}"
            )
        if len(values) == 0:
            raise TrainlabError(f"{where} holds no samples")
        flat = values.reshape(len(values), -1).astype(np.float64)
        if not (finite := np.isfinite(flat)).all():
            row, column = (int(i) for i in np.argwhere(~finite)[0])
            raise TrainlabError(
                f"{where}: sample {row + 1} has {flat[row, column]} at "
                f"{self.feature_names[column]}; the run's data ({self.name}) had no missing or "
                "infinite values, so none can be filled: fix the input"
            )
        if self.scaler is not None:
            flat = self.scaler.transform(flat)
        return torch.as_tensor(flat, dtype=torch.float32).reshape(len(values), *self.shape)

    def columns(self, frame: pd.DataFrame, where: str) -> np.ndarray:
        """The feature columns by their training names, or all columns in order when there
        are as many as the model takes; text in them is an error naming column and row."""
        names, columns = self.feature_names, [str(c) for c in frame.columns]
        frame = frame.set_axis(columns, axis=1)
        if all(name in columns for name in names):
            note_unused(columns, names, where)
            chosen = frame[names]
        elif len(columns) == len(names):
            chosen = frame
        else:
            listed = ", ".join(names) if len(names) <= 10 else f"{names[0]}, ..., {names[-1]}"
            lacking = [n for n in names if n not in columns]
            shown = ", ".join(lacking[:5]) + (", ..." if len(lacking) > 5 else "")
            raise TrainlabError(
                f"{where} lacks the column(s) {shown} ({len(lacking)} of the {len(names)} "
                f"this run takes: {listed}); give them, or exactly {len(names)} number "
                "columns in that order"
            )
        typed = [
            numeric_column(chosen.iloc[:, i], c, where, TRAINED_ON_NUMBERS)
            for i, c in enumerate(chosen.columns)
        ]
        return np.stack([column.to_numpy() for column in typed], axis=1)


def _shape(shape: tuple[Any, ...]) -> str:
    return f"({', '.join(str(s) for s in shape)})"


def built_in_loader(data_config: dict[str, Any]) -> str | None:
    """The name of the trainlab dataset loader the run trained on, if it is a built-in one."""
    target = str(data_config.get("_target_", ""))
    name = target.rsplit(".", 1)[-1]
    return name if target.startswith(DATA_PACKAGE) and name in BUILT_IN else None


def feature_names(loader: str | None, count: int) -> list[str]:
    """The training columns' names: scikit-learn's for its datasets, else x0, x1, ..."""
    from sklearn import datasets

    if loader == "load_digits":
        return [f"pixel_{row}_{column}" for row in range(8) for column in range(8)]
    if loader in ("load_breast_cancer", "load_diabetes"):
        names = [str(n) for n in getattr(datasets, loader)().feature_names]
        if len(names) == count:
            return names
    return [f"x{i}" for i in range(count)]


def fitted_scaler(loader: str, config: dict[str, Any], run_dir: Path) -> Any:
    """The scaler training fitted: the same loader, settings, seed (and cross-validation
    fold, for a `fold_<k>` folder) split the same rows."""
    data = config.get("data") or {}
    if data.get("scaling", "standard") == "none":
        return None
    from trainlab.components.data import datasets

    options = {k: v for k, v in data.items() if not k.startswith("_")}
    folds = (config.get("cv") or {}).get("folds")
    if folds and (match := re.fullmatch(r"fold_(\d+)", run_dir.name)):
        options["fold"] = (int(match.group(1)), int(folds))
    return getattr(datasets, loader)(seed=int(config["seed"]), **options).preprocessor


def input_for_run(run_dir: Path, info: DataInfo, config: dict[str, Any]) -> Any:
    """How this run's inputs are read and encoded (see the module's docstring)."""
    data = config.get("data") or {}
    target = str(data.get("_target_", ""))
    text_column = str(data.get("text_column", "text"))
    if info.input_kind == "tokens":
        return TextInput(TextPreprocessor.load(run_dir), text_column)
    if target.startswith(DATA_PACKAGE) and target.rsplit(".", 1)[-1] in TEXT_LOADERS:
        return TextInput(TextVectorizer.load(run_dir), text_column)
    if target.startswith(DATA_PACKAGE) and target.endswith(".load_table"):
        return TableInput(TablePreprocessor.load(run_dir), data)
    if target == f"{DATA_PACKAGE}image_folder.load_image_folder":
        from trainlab.components.data.image_folder import ImageInput

        return ImageInput(run_dir)
    loader = built_in_loader(data)
    names = feature_names(loader, math.prod(info.input_shape))
    if loader is None:
        log.info(
            f"note: data._target_={target} is not a trainlab dataset: inputs go to the "
            "model as they are (no scaling)"
        )
        return ArrayInput(info, None, names)
    return ArrayInput(info, fitted_scaler(loader, config, run_dir), names)
