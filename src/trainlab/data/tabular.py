"""Your own table (`data=csv`): column kinds, the task, and preprocessing fitted on train rows.

`load_table` reads a CSV, Parquet or `.npz` file, decides which columns are numbers and
which are categories and whether the task is classification or regression, splits the
rows, and fits a scikit-learn `ColumnTransformer` (imputation, scaling, one-hot encoding)
on the training split only. The returned bundle's `preprocessor` is a `TablePreprocessor`:
it applies exactly that transform to new rows (`predict.py`) and saves itself with the run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
import torch
from pandas.api import types
from sklearn.compose import ColumnTransformer
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from trainlab.data.datasets import SCALERS, DataBundle, DataInfo, Split, split_rows
from trainlab.data.files import read_table
from trainlab.errors import ConfigError, TrainlabError, did_you_mean

log = logging.getLogger("trainlab")

# task=auto: an integer target with at most this many distinct values is a class label.
MAX_AUTO_CLASSES = 20
PREPROCESSING_FILE = "preprocessing.pkl"
TRAINED_ON_NUMBERS = "the model was trained on numbers in this column: fix the file"
DECLARED_NUMERIC = "fix the file, or list the column in data.categorical instead of data.numeric"
FORMAT = "trainlab-preprocessing"
VERSION = 1


def category_text(value: Any) -> Any:
    """A category as text, the same whichever dtype the file gave its column (NaN stays NaN).

    A column of whole numbers reads as floats when it has a gap (3.0); writing it as "3"
    keeps the categories of training and prediction files equal.
    """
    if pd.isna(value):
        return np.nan
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def categorical_column(series: pd.Series) -> pd.Series:
    return pd.Series([category_text(v) for v in series], index=series.index, dtype=object)


def numeric_column(series: pd.Series, name: str, where: str, hint: str) -> pd.Series:
    """`series` as float64; text that is not a number is an error naming its first row."""
    if types.is_numeric_dtype(series):
        return series.astype("float64")
    values = pd.to_numeric(series, errors="coerce")
    bad = (values.isna() & series.notna()).to_numpy()
    if bad.any():
        first = int(bad.nonzero()[0][0])
        raise TrainlabError(
            f"column '{name}' of {where} should hold numbers but holds text such as "
            f"{series.iloc[first]!r} (data row {_row_number(series.index, first)}); {hint}"
        )
    return values.astype("float64")


def _row_number(index: pd.Index, position: int) -> Any:
    """The 1-based data row of the file (rows left out before keep their numbers)."""
    label = index[position]
    return label + 1 if isinstance(label, (int, np.integer)) else label


def unknown_column(name: str, setting: str, columns: list[str], where: str) -> TrainlabError:
    return TrainlabError(
        f"{setting}: no column '{name}' in {where}{did_you_mean(name, columns)}; "
        f"columns: {', '.join(columns)}"
    )


@dataclass
class TablePreprocessor:
    """The fitted transform from a table's feature columns to model inputs.

    Numeric columns are imputed (unless `impute` is "drop") and scaled; categorical columns
    are imputed and one-hot encoded, an unseen category giving all zeros.
    """

    transformer: ColumnTransformer
    numeric: list[str]  # feature columns, in the order the transformer takes them
    categorical: list[str]
    target: str  # the column the model predicts (new rows need not have it)
    impute: str

    @property
    def feature_names(self) -> list[str]:
        """The model's inputs, e.g. `numeric__age`, `categorical__color_red`."""
        return [str(name) for name in self.transformer.get_feature_names_out()]

    def features(
        self, frame: pd.DataFrame, where: str, hint: str = TRAINED_ON_NUMBERS
    ) -> pd.DataFrame:
        """The feature columns of `frame`, typed as in training: floats and category texts.

        `hint` ends the message for text in a numeric column.
        """
        needed = [*self.numeric, *self.categorical]
        if missing := [c for c in needed if c not in frame.columns]:
            raise TrainlabError(
                f"{where} lacks the column(s) {', '.join(missing)} that the model was trained "
                f"on; it needs: {', '.join(needed)}"
            )
        typed = {c: numeric_column(frame[c], c, where, hint) for c in self.numeric}
        typed |= {c: categorical_column(frame[c]) for c in self.categorical}
        return pd.DataFrame(typed, index=frame.index)[needed]

    def transform(self, frame: pd.DataFrame, where: str) -> np.ndarray:
        """Model inputs (float32, one row per row of `frame`)."""
        return self.encode(self.features(frame, where), where)

    def encode(self, features: pd.DataFrame, where: str) -> np.ndarray:
        """Model inputs from feature columns already typed by `features`."""
        if self.impute == "drop" and (gaps := features.isna().any(axis=1).to_numpy()).any():
            rows = [str(_row_number(features.index, p)) for p in gaps.nonzero()[0][:5]]
            more = ", ..." if gaps.sum() > 5 else ""
            raise TrainlabError(
                f"{where} has missing values (data rows {', '.join(rows)}{more}) but the run "
                "was trained with data.impute=drop, which cannot fill them: "
                "fill them in, or train with data.impute=median (or mean, most_frequent, knn)"
            )
        self._note_unseen_categories(features, where)
        with warnings.catch_warnings():
            # Noted above in one line per column; an unseen category is encoded as zeros.
            warnings.filterwarnings("ignore", message="Found unknown categories")
            return self.transformer.transform(features).astype(np.float32)

    def _note_unseen_categories(self, features: pd.DataFrame, where: str) -> None:
        if not self.categorical:
            return
        encoder = self.transformer.named_transformers_["categorical"].named_steps["one_hot"]
        for column, known in zip(self.categorical, encoder.categories_, strict=True):
            values = features[column].dropna()
            unseen = values[~values.isin(list(known))]
            if len(unseen):
                examples = ", ".join(repr(v) for v in unseen.unique()[:3])
                log.info(
                    f"note: {len(unseen)} row(s) of {where} have a '{column}' category not seen "
                    f"in training ({examples}); they are encoded as all zeros"
                )

    def save(self, run_dir: str | Path) -> Path:
        """Write `preprocessing.pkl` into the run folder (a temporary file renamed into place)."""
        path = Path(run_dir) / PREPROCESSING_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "scikit_learn": sklearn.__version__,
            "fields": {f.name: getattr(self, f.name) for f in fields(self)},
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            joblib.dump(payload, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> TablePreprocessor:
        """Read a run's preprocessing. It is a pickle: load only run folders you trust."""
        path = Path(run_dir) / PREPROCESSING_FILE
        if not path.is_file():
            raise TrainlabError(
                f"{run_dir} has no {PREPROCESSING_FILE}: prediction from a file needs a run "
                "trained on your own table (data=csv)"
            )
        try:
            payload = joblib.load(path)
        except Exception as ex:
            raise TrainlabError(f"{path} cannot be read ({type(ex).__name__}: {ex})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise TrainlabError(f"{path} is not trainlab preprocessing (no '{FORMAT}' marker)")
        if payload["scikit_learn"] != sklearn.__version__:
            log.warning(
                f"warning: {path} was fitted with scikit-learn {payload['scikit_learn']}, "
                f"this is {sklearn.__version__}; predictions may differ slightly"
            )
        return cls(**payload["fields"])


def build_transformer(
    numeric: list[str],
    categorical: list[str],
    *,
    impute: str,
    knn_neighbors: int,
    missing_indicator: bool,
    categorical_impute: str,
    scaling: str,
) -> ColumnTransformer:
    """Numbers: impute, then scale (indicator columns too). Categories: impute, one-hot."""
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        steps: list[tuple[str, Any]] = []
        if impute == "knn":
            imputer = KNNImputer(n_neighbors=knn_neighbors, add_indicator=missing_indicator)
            steps.append(("impute", imputer))
        elif impute != "drop":
            imputer = SimpleImputer(strategy=impute, add_indicator=missing_indicator)
            steps.append(("impute", imputer))
        if scaling != "none":
            steps.append(("scale", SCALERS[scaling]()))
        parts.append(("numeric", Pipeline(steps) if steps else "passthrough", numeric))
    if categorical:
        one_hot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        fill = SimpleImputer(strategy=categorical_impute, fill_value="missing")
        encode = Pipeline([("impute", fill), ("one_hot", one_hot)])
        parts.append(("categorical", encode, categorical))
    return ColumnTransformer(parts, sparse_threshold=0.0)


def column_kinds(
    frame: pd.DataFrame,
    target: str,
    categorical: list[str],
    numeric: list[str],
    drop_columns: list[str],
    where: str,
) -> tuple[list[str], list[str]]:
    """The numeric and the categorical feature columns, declared or detected by dtype."""
    columns = list(frame.columns)
    for setting, names in (
        ("data.categorical", categorical),
        ("data.numeric", numeric),
        ("data.drop_columns", drop_columns),
    ):
        for name in names:
            if name not in columns:
                raise unknown_column(name, setting, columns, where)
    numbers, categories = [], []
    for name in columns:
        column = frame[name]
        if name == target or name in drop_columns:
            continue
        if column.isna().all():
            log.info(f"note: column '{name}' of {where} is empty; it is left out")
        elif name in categorical:
            categories.append(name)
        elif name in numeric:
            numbers.append(name)
        elif types.is_bool_dtype(column) or not types.is_numeric_dtype(column):
            if types.is_datetime64_any_dtype(column) or types.is_timedelta64_dtype(column):
                raise TrainlabError(
                    f"column '{name}' of {where} holds {column.dtype} values, which the model "
                    f"cannot take; leave it out with data.drop_columns=[{name}] or convert it"
                )
            categories.append(name)
        else:
            numbers.append(name)
    if not numbers and not categories:
        raise TrainlabError(
            f"{where} has no feature columns besides the target '{target}'; "
            "check data.target and data.drop_columns"
        )
    return numbers, categories


def encode_target(series: pd.Series, task: str, where: str) -> tuple[np.ndarray, list[str] | None]:
    """Class indices and class names (sorted), or float values and None for regression."""
    name = str(series.name)
    integers = types.is_integer_dtype(series) and not types.is_bool_dtype(series)
    if task == "auto":
        distinct = series.nunique()
        if types.is_bool_dtype(series) or not types.is_numeric_dtype(series):
            task, why = "classification", "it is not numeric"
        elif integers:
            task = "classification" if distinct <= MAX_AUTO_CLASSES else "regression"
            why = f"{distinct} distinct whole numbers; classes up to {MAX_AUTO_CLASSES}"
        else:
            task, why = "regression", "it holds floats"
            if (series % 1 == 0).all():
                # A column of class codes with a blank reads as floats (1.0, 2.0, NaN).
                why += "; if they are class codes, set data.task=classification"
        log.info(f"data.task=auto: target '{name}' is {task} ({why}); set data.task to change")
    if task == "regression":
        hint = "regression needs numbers: use data.task=classification (or auto)"
        return numeric_column(series, name, where, hint).to_numpy(), None
    if types.is_numeric_dtype(series):
        # Sort numerically (2 before 10), then name each class as text.
        classes, indices = np.unique(series.to_numpy(), return_inverse=True)
        names = [category_text(value) for value in classes]
    else:
        names_of_rows = categorical_column(series).to_numpy()
        names, indices = np.unique(names_of_rows.astype(str), return_inverse=True)
        names = [str(n) for n in names]
    if len(names) < 2:
        raise TrainlabError(
            f"target '{name}' of {where} has a single class ({names[0]!r}) in all "
            f"{len(series)} rows; a classifier needs at least two: check data.target"
        )
    return indices.astype(np.int64), names


def load_table(
    seed: int,
    path: str,
    target: str | None = None,
    task: str = "auto",
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    drop_columns: Sequence[str] = (),
    impute: str = "median",
    knn_neighbors: int = 5,
    missing_indicator: bool = False,
    categorical_impute: str = "most_frequent",
    npz_features: str = "X",
    npz_target: str = "y",
    scaling: str = "standard",
    target_scaling: str = "standard",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    **batching: Any,
) -> DataBundle:
    """A table from a file, split (stratified for classes) and preprocessed (see the module)."""
    where = f"data.path={path}"
    frame = read_table(path, npz_features=npz_features, npz_target=npz_target)
    columns = list(frame.columns)
    if target is None and str(path).lower().endswith(".npz") and npz_target in columns:
        target = npz_target
    if target is None:
        raise ConfigError(
            f"data.target is not set: name the column to predict, e.g. "
            f"data.target={columns[-1]}; columns: {', '.join(columns)}"
        )
    if target not in columns:
        raise unknown_column(target, "data.target", columns, where)
    numbers, categories = column_kinds(
        frame, target, list(categorical), list(numeric), list(drop_columns), where
    )

    rows = len(frame)
    frame = frame[frame[target].notna()]
    if len(frame) < rows:
        log.info(f"note: {rows - len(frame)} row(s) without a '{target}' value are left out")
    if impute == "drop":
        complete = frame[[*numbers, *categories]].notna().all(axis=1)
        if not complete.any():
            raise TrainlabError(
                f"every row of {where} has a missing value, so data.impute=drop leaves none; "
                "use data.impute=median (or mean, most_frequent, knn)"
            )
        if not complete.all():
            log.info(f"data.impute=drop: {int((~complete).sum())} row(s) with gaps are left out")
        frame = frame[complete]
    targets, class_names = encode_target(frame[target], task, where)
    classification = class_names is not None
    train, val, test = split_rows(
        targets,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify=classification,
    )

    transformer = build_transformer(
        numbers,
        categories,
        impute=impute,
        knn_neighbors=knn_neighbors,
        missing_indicator=missing_indicator,
        categorical_impute=categorical_impute,
        scaling=scaling,
    )
    preprocessor = TablePreprocessor(transformer, numbers, categories, target, impute)
    features = preprocessor.features(
        frame, where, hint=DECLARED_NUMERIC
    )  # every row, not just train
    transformer.fit(features.iloc[train])
    inputs = torch.as_tensor(preprocessor.encode(features, where))
    values = targets.reshape(len(targets), 1).astype(np.float64)
    mean, std = np.zeros(1), np.ones(1)
    if not classification and target_scaling == "standard":
        # As for the built-in regression sets: train on standardised targets, report in units.
        mean, std = values[train].mean(axis=0), values[train].std(axis=0) + 1e-12

    def split(indices: np.ndarray) -> Split:
        if classification:
            return Split(inputs[indices], torch.as_tensor(targets[indices]))
        scaled = (values[indices] - mean) / std
        return Split(inputs[indices], torch.as_tensor(scaled, dtype=torch.float32))

    kind = "regression"
    if classification:
        kind = "binary" if len(class_names) == 2 else "multiclass"
    info = DataInfo(
        name=Path(path).name.split(".")[0],
        task=kind,
        input_kind="features",
        input_shape=(inputs.shape[1],),
        num_classes=len(class_names) if classification else 0,
        class_names=class_names or [],
        target_mean=None if classification else mean.tolist(),
        target_std=None if classification else std.tolist(),
    )
    log.info(
        f"table {where}: {len(frame)} rows; numeric: {', '.join(numbers) or '-'}; "
        f"categorical: {', '.join(categories) or '-'}; {inputs.shape[1]} model inputs; "
        f"target '{target}': {kind}" + (f" ({', '.join(class_names)})" if classification else "")
    )
    return DataBundle(
        train=split(train),
        val=split(val),
        test=split(test),
        info=info,
        preprocessor=preprocessor,
        **batching,
    )
