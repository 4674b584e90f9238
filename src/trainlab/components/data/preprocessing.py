"""Preprocessing of a table's rows into model inputs, fitted once and saved with the run.

`TablePreprocessor` types the feature columns (numbers as floats, categories as text) the
same way for training and prediction files, and wraps a scikit-learn `ColumnTransformer`:
numbers are imputed and scaled, categories imputed and one-hot encoded.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from pandas.api import types
from sklearn.compose import ColumnTransformer
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from trainlab.components.data.datasets import SCALERS
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

PREPROCESSING_FILE = "preprocessing.pkl"
TRAINED_ON_NUMBERS = "the model was trained on numbers in this column: fix the file"
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
