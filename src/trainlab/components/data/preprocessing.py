"""Preprocessing of a table's rows into model inputs, fitted once and saved with the run.

`TablePreprocessor` types the feature columns (numbers as floats, categories as text,
dates as numbers, see `dates.py`) the same way for training and prediction files, and wraps a
scikit-learn `ColumnTransformer`: numbers are imputed and scaled, categories imputed and
one-hot encoded. It is saved as data (`preprocessing.json`, see `state.py`), never as a
pickle: loading a run folder from someone else runs none of their code.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from pandas.api import types
from sklearn.compose import ColumnTransformer
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from trainlab.components.data.datasets import SCALERS
from trainlab.components.data.dates import date_columns, date_parts
from trainlab.components.data.files import write_text_atomic
from trainlab.components.data.state import UnsafeState, decode, encode
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

PREPROCESSING_FILE = "preprocessing.json"
PICKLED_FILE = "preprocessing.pkl"  # written by trainlab before it stored data only
TRAINED_ON_NUMBERS = "the model was trained on numbers in this column: fix the file"
FORMAT = "trainlab-preprocessing"
VERSION = 3  # 3: date columns gained cyclic parts and, with times of day, the hour
IMPUTE = ("drop", "mean", "median", "most_frequent", "knn")


def shown(names: list[str], most: int = 12) -> str:
    """Column names for a message: the first `most`, then how many in all."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most])}, ... ({len(names)} in all)"


def category_text(value: Any) -> Any:
    """A category as text, the same whichever dtype the file gave its column (NaN stays NaN).

    A column of whole numbers reads as floats when it has a gap (3.0); writing it as "3"
    keeps the categories of training and prediction files equal. Spaces around a text are
    dropped ("cat " is "cat"), and a text of spaces only is a gap.
    """
    if pd.isna(value):
        return np.nan
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    return text if text else np.nan


def categorical_column(series: pd.Series) -> pd.Series:
    # `category_text` once per distinct value, not per row (a streamed table has millions).
    codes, distinct = pd.factorize(series, use_na_sentinel=True)
    if any(isinstance(v, (bool, np.bool_)) for v in distinct):  # True == 1 to factorize
        return pd.Series([category_text(v) for v in series], index=series.index, dtype=object)
    texts = np.array([*(category_text(v) for v in distinct), np.nan], dtype=object)
    return pd.Series(texts[codes], index=series.index, dtype=object)


def numeric_column(series: pd.Series, name: str, where: str, hint: str) -> pd.Series:
    """`series` as float64; text that is not a number, or an infinite value, is an error
    naming its first row."""
    if types.is_numeric_dtype(series):
        return finite(series.astype("float64"), name, where)
    values = pd.to_numeric(series, errors="coerce")
    bad = (values.isna() & series.notna()).to_numpy()
    if bad.any():
        first = int(bad.nonzero()[0][0])
        raise TrainlabError(
            f"column '{name}' of {where} should hold numbers but holds text such as "
            f"{series.iloc[first]!r} (data row {_row_number(series.index, first)}); {hint}"
        )
    return finite(values.astype("float64"), name, where)


def finite(values: pd.Series, name: str, where: str) -> pd.Series:
    """`values`, refused when any is inf or -inf: no scaler or model can use them."""
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        first = int(infinite.nonzero()[0][0])
        raise TrainlabError(
            f"column '{name}' of {where} holds {int(infinite.sum())} infinite value(s) "
            f"({values.iloc[first]} in data row {_row_number(values.index, first)}); "
            "replace them with numbers, or empty the cells to have them imputed"
        )
    return values


def _row_number(index: pd.Index, position: int) -> Any:
    """The 1-based data row of the file (rows left out before keep their numbers)."""
    label = index[position]
    return label + 1 if isinstance(label, (int, np.integer)) else label


@dataclass
class TablePreprocessor:
    """The fitted transform from a table's feature columns to model inputs.

    Numeric columns are imputed (unless `impute` is "drop") and scaled; date columns become
    numbers (`dates.date_parts`) treated the same way; categorical columns are imputed and one-hot
    encoded, an unseen category giving all zeros.
    """

    transformer: ColumnTransformer
    numeric: list[str]  # feature columns, in the order the transformer takes them
    categorical: list[str]
    target: str  # the column the model predicts (new rows need not have it)
    impute: str
    dates: dict[str, str] = field(default_factory=dict)  # date column -> its format

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
        needed = [*self.numeric, *self.dates, *self.categorical]
        if missing := [c for c in needed if c not in frame.columns]:
            raise TrainlabError(
                f"{where} lacks the column(s) {shown(missing)} that the model was trained "
                f"on; it needs: {shown(needed)}"
            )
        typed = {c: numeric_column(frame[c], c, where, hint) for c in self.numeric}
        parts = [date_parts(frame[c], c, form) for c, form in self.dates.items()]
        typed |= {c: categorical_column(frame[c]) for c in self.categorical}
        columns = [*self.numeric, *date_columns(self.dates), *self.categorical]
        return pd.concat([pd.DataFrame(typed, index=frame.index), *parts], axis=1)[columns]

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
        """Write `preprocessing.json` into the run folder (atomically): the columns and the
        fitted transformer's state as data."""
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "scikit_learn": sklearn.__version__,
            "numeric": self.numeric,
            "categorical": self.categorical,
            "dates": self.dates,
            "target": self.target,
            "impute": self.impute,
            "transformer": encode(self.transformer),
        }
        text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
        return write_text_atomic(Path(run_dir) / PREPROCESSING_FILE, text)

    @classmethod
    def load(cls, run_dir: str | Path) -> TablePreprocessor:
        """Read a run's preprocessing. It is data only: nothing in the file is executed, and
        anything but the known transformer parts is refused."""
        path = Path(run_dir) / PREPROCESSING_FILE
        if not path.is_file():
            if (Path(run_dir) / PICKLED_FILE).is_file():
                raise TrainlabError(
                    f"{run_dir} holds its preprocessing as a pickle ({PICKLED_FILE}), which "
                    "trainlab no longer loads because unpickling can run code: retrain the "
                    "run with this version to predict from it"
                )
            raise TrainlabError(
                f"{run_dir} has no {PREPROCESSING_FILE}: prediction from a file needs a run "
                "trained on your own table (data=csv)"
            )
        try:
            payload = json.loads(path.read_bytes())
            return cls._from_payload(payload, path)
        except TrainlabError:
            raise
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as ex:
            reason = str(ex).splitlines()[0][:120] if str(ex) else type(ex).__name__
            raise TrainlabError(
                f"{path} is not trainlab preprocessing data ({reason}); it was not loaded: "
                "retrain the run to write it again"
            ) from None

    @classmethod
    def _from_payload(cls, payload: Any, path: Path) -> TablePreprocessor:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise UnsafeState(f"no '{FORMAT}' marker")
        if payload.get("version") != VERSION:
            raise UnsafeState(f"version {payload.get('version')!r}, this trainlab reads {VERSION}")
        names = {key: payload[key] for key in ("numeric", "categorical")}
        dates, target, impute = payload["dates"], payload["target"], payload["impute"]
        if not all(_texts(value) for value in names.values()) or not isinstance(target, str):
            raise UnsafeState("column names that are not texts")
        if not isinstance(dates, dict) or not _texts([*dates, *dates.values()]):
            raise UnsafeState("date columns that are not texts")
        if impute not in IMPUTE:
            raise UnsafeState(f"impute={str(impute)[:20]!r}")
        transformer = decode(payload["transformer"])
        if not isinstance(transformer, ColumnTransformer):
            raise UnsafeState("the transformer is not a ColumnTransformer")
        if payload.get("scikit_learn") != sklearn.__version__:
            log.warning(
                f"warning: {path} was fitted with scikit-learn {payload.get('scikit_learn')}, "
                f"this is {sklearn.__version__}; predictions may differ slightly"
            )
        return cls(transformer, names["numeric"], names["categorical"], target, impute, dates)


def _texts(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(value, str) for value in values)


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
