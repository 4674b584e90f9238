"""The preprocessing of a streamed table, fitted on its training rows in one pass.

`TrainTally` sees the file a chunk at a time and keeps what fitting needs, in memory that
does not grow with the file: per numeric column the count, mean, sum of squared deviations
(Chan et al.'s pairwise update), minimum and maximum, and a seeded sample of training rows
(`SAMPLE_ROWS`, for the median and the most frequent number); per categorical column the
count of each level; the target's classes or its mean and deviation.

`fit_preprocessor` then builds the same `TablePreprocessor` the in-memory path fits
(`build_transformer`), so `preprocessing.json` and `trainlab predict` are the same for
both: scikit-learn fits its imputers and one-hot encoder on a few summary rows that hold
exactly the fitted statistics, and its scaler on two weighted rows with the mean and
deviation of the imputed training values.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trainlab.components.data.preprocessing import (
    TablePreprocessor,
    categorical_column,
    category_text,
    numeric_column,
    shown,
)
from trainlab.components.data.streaming_source import TEST, TRAIN, VAL, row_uniform
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

# Training rows kept (a seeded sample, the same for any chunk size) for the median and the
# most frequent number: exact up to this many training rows, approximate beyond.
SAMPLE_ROWS = 65536
MAX_CLASSES = 10000  # a target with more distinct texts is not a class label
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of each column, merged chunk by chunk."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, width: int) -> Moments:
        return cls(np.zeros(width), np.zeros(width), np.zeros(width))

    def add(self, values: np.ndarray) -> None:
        """Merge the non-missing values of `values` (rows x columns)."""
        present = ~np.isnan(values)
        count = present.sum(axis=0).astype(np.float64)
        filled = np.where(present, values, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, filled.sum(axis=0) / count, 0.0)
        m2 = np.where(present, (values - mean) ** 2, 0.0).sum(axis=0)
        self.merge(count, mean, m2)

    def merge(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self.count + count
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mean - self.mean
            share = np.where(total > 0, count / total, 0.0)
            self.mean = self.mean + delta * share
            self.m2 = self.m2 + m2 + delta**2 * self.count * share
        self.count = total


@dataclass
class TrainTally:
    """What one pass over a table's chunks learns for fitting (see the module)."""

    seed: int
    numeric: list[str]  # typed numeric inputs (date parts included), in transformer order
    categorical: list[str]
    detected: list[str]  # categorical columns detected as text: their levels are bounded
    max_categories: int
    want_sample: bool
    where: str
    split_rows: list[int] = field(default_factory=lambda: [0, 0, 0])
    left_out: int = 0
    moments: Moments | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    sample_keys: np.ndarray | None = None
    sample: np.ndarray | None = None
    levels: dict[str, Counter] = field(default_factory=dict)
    gaps: dict[str, bool] = field(default_factory=dict)
    all_levels: dict[str, set] = field(default_factory=dict)

    def __post_init__(self) -> None:
        width = len(self.numeric)
        self.moments = Moments.empty(width)
        self.low, self.high = np.full(width, np.inf), np.full(width, -np.inf)
        self.sample_keys, self.sample = np.empty(0), np.empty((0, width))
        self.levels = {name: Counter() for name in self.categorical}
        self.gaps = {name: False for name in self.categorical}
        self.all_levels = {name: set() for name in self.detected}

    def add(self, features: pd.DataFrame, splits: np.ndarray) -> None:
        """Count one chunk's kept rows (typed features, each row's split)."""
        for split in (TRAIN, VAL, TEST):
            self.split_rows[split] += int((splits == split).sum())
        for name in self.detected:  # like the in-memory check: distinct texts of all rows
            seen = self.all_levels[name]
            seen.update(features[name].dropna().unique().tolist())
            if len(seen) > self.max_categories:
                kind = "an ID or free text?"
                raise TrainlabError(
                    f"column '{name}' of {self.where} has over {self.max_categories} distinct "
                    f"texts ({kind}), over data.max_categories={self.max_categories}: leave it "
                    f"out with data.drop_columns=[{name}] or raise data.max_categories"
                )
        train = features[splits == TRAIN]
        if not len(train):
            return
        values = train[self.numeric].to_numpy(dtype=np.float64)
        if values.shape[1]:
            self.moments.add(values)
            with np.errstate(invalid="ignore"):
                self.low = np.fmin(self.low, np.nanmin(values, axis=0, initial=np.inf))
                self.high = np.fmax(self.high, np.nanmax(values, axis=0, initial=-np.inf))
            if self.want_sample:
                self._add_sample(train.index.to_numpy(), values)
        for name in self.categorical:
            column = train[name]
            self.levels[name].update(column.dropna().tolist())
            self.gaps[name] |= bool(column.isna().any())

    def _add_sample(self, rows: np.ndarray, values: np.ndarray) -> None:
        # The training rows with the smallest hash keys: a sample fixed by (seed, rows).
        keys = np.concatenate([self.sample_keys, row_uniform(self.seed, rows, salt=1)])
        kept = np.concatenate([self.sample, values])
        if len(keys) > SAMPLE_ROWS:
            chosen = np.argpartition(keys, SAMPLE_ROWS)[:SAMPLE_ROWS]
            keys, kept = keys[chosen], kept[chosen]
        self.sample_keys, self.sample = keys, kept

    def fill_value(self, column: int, impute: str) -> float:
        """The value that imputes gaps in numeric column `column` of the training rows."""
        if impute == "mean":
            return float(self.moments.mean[column])
        values = self.sample[:, column]
        values = values[~np.isnan(values)]
        if impute == "median":
            return float(np.median(values))
        found, counts = np.unique(values, return_counts=True)
        return float(found[np.argmax(counts)])  # ties: the smallest, as scikit-learn's

    def check_constant(self) -> None:
        """Refuse training rows whose every feature is constant; note constant columns."""
        constant = [
            name for j, name in enumerate(self.numeric) if not self.low[j] < self.high[j]
        ] + [name for name in self.categorical if len(self.levels[name]) <= 1]
        if constant and len(constant) == len(self.numeric) + len(self.categorical):
            raise TrainlabError(
                f"every feature column of {self.where} holds one value in the training rows "
                f"({shown(constant)}): there is nothing to learn from; check the file"
            )
        if constant:
            log.info(f"note: column(s) {shown(constant)} of {self.where} are constant")


def fit_preprocessor(preprocessor: TablePreprocessor, tally: TrainTally, scaling: str) -> None:
    """Fit `preprocessor`'s transformer to the statistics of `tally` (see the module)."""
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    impute = preprocessor.impute
    rows = tally.split_rows[TRAIN]
    observed = tally.moments.count
    fills = [
        tally.fill_value(j, impute) if impute != "drop" and 0 < observed[j] < rows else np.nan
        for j in range(len(tally.numeric))
    ]
    columns: dict[str, list[Any]] = {}
    for j, name in enumerate(tally.numeric):
        # Every row holds the statistic, so any imputer strategy fits exactly it; a gap in
        # the second row marks a column with gaps (for missing_indicator).
        value = fills[j] if not np.isnan(fills[j]) else float(tally.moments.mean[j])
        columns[name] = [value, np.nan if observed[j] < rows else value]
    for name in tally.categorical:
        counts = tally.levels[name]
        most = max(counts.values())
        mode = min(level for level, count in counts.items() if count == most)
        levels = [mode, mode, *sorted(counts)] + ([np.nan] if tally.gaps[name] else [])
        columns[name] = levels
    height = max(len(values) for values in columns.values())
    frame = pd.DataFrame(
        {name: values + [values[0]] * (height - len(values)) for name, values in columns.items()}
    )
    for name in tally.categorical:
        frame[name] = frame[name].astype(object)
    preprocessor.transformer.fit(frame[[*tally.numeric, *tally.categorical]])
    if not tally.numeric or scaling == "none":
        return
    # The imputed training values of each column: observed values plus (rows - observed)
    # copies of the fill value; then one 0/1 column per column with gaps (missing_indicator).
    n = float(rows)
    mean, m2 = tally.moments.mean.copy(), tally.moments.m2.copy()
    low, high = tally.low.copy(), tally.high.copy()
    missing = rows - observed
    for j, fill in enumerate(fills):
        if missing[j] > 0 and not np.isnan(fill):
            delta = fill - mean[j]
            m2[j] += delta**2 * observed[j] * missing[j] / n
            mean[j] += delta * missing[j] / n
            low[j], high[j] = min(low[j], fill), max(high[j], fill)
    pipeline = preprocessor.transformer.named_transformers_["numeric"]
    imputer = pipeline.named_steps.get("impute")
    indicator = getattr(imputer, "indicator_", None)
    if indicator is not None:
        share = missing[indicator.features_] / n
        mean = np.concatenate([mean, share])
        m2 = np.concatenate([m2, share * (1 - share) * n])
        low = np.concatenate([low, (share >= 1).astype(float)])
        high = np.concatenate([high, (share > 0).astype(float)])
    names = getattr(pipeline.named_steps["scale"], "feature_names_in_", None)
    if scaling == "standard":
        deviation = np.sqrt(np.maximum(m2 / n, 0.0))
        rows = np.stack([mean - deviation, mean + deviation])
        scaler = StandardScaler().fit(_named(rows, names), sample_weight=[n / 2, n / 2])
    else:
        scaler = MinMaxScaler().fit(_named(np.stack([low, high]), names))
    pipeline.steps[-1] = ("scale", scaler)


def _named(rows: np.ndarray, names: np.ndarray | None) -> np.ndarray | pd.DataFrame:
    """`rows` with the column names the replaced scaler was fitted with (when it had any)."""
    return rows if names is None else pd.DataFrame(rows, columns=list(names))


@dataclass
class TargetTally:
    """The target's classes (text or whole numbers) or its mean and deviation (regression),
    from one pass over the kept rows."""

    name: str
    task: str
    text: bool  # text or true/false values: a class label
    where: str
    counts: Counter = field(default_factory=Counter)
    whole: bool = True
    too_many: bool = False  # more distinct numbers than a class label has
    train: Moments = field(default_factory=lambda: Moments.empty(1))

    def typed(self, series: pd.Series) -> pd.Series:
        if self.text:
            return categorical_column(series)
        hint = (
            "regression needs numbers: use data.task=classification (or auto)"
            if self.task == "regression"
            else "the rows before held numbers: fix the file"
        )
        return numeric_column(series, self.name, self.where, hint)

    def add(self, values: pd.Series, splits: np.ndarray) -> None:
        if not self.text:
            numbers = values.to_numpy(dtype=np.float64)
            self.whole &= bool((numbers % 1 == 0).all())
            self.train.add(numbers[splits == TRAIN].reshape(-1, 1))
        if self.text or not self.too_many:
            self.counts.update(values.tolist())
            limit = MAX_CLASSES if self.text or self.task == "classification" else 20
            if len(self.counts) > limit:
                if self.text or self.task == "classification":
                    raise TrainlabError(
                        f"target '{self.name}' of {self.where} has over {MAX_CLASSES} distinct "
                        "values: is it an ID? Check data.target, or use data.task=regression"
                    )
                self.too_many, self.counts = True, Counter()

    def resolve(self) -> tuple[str, list[str] | None]:
        """The task and the class names (sorted as the in-memory path sorts them)."""
        task = self.task
        if task == "auto":
            if self.text:
                task, why = "classification", "it is not numeric"
            elif not self.whole:
                task, why = "regression", "it holds fractions"
            else:
                distinct = f"{len(self.counts)}" if not self.too_many else "over 20"
                task = "regression" if self.too_many else "classification"
                why = f"{distinct} distinct whole numbers; classes up to 20"
            log.info(
                f"data.task=auto: target '{self.name}' is {task} ({why}); "
                "set data.task=classification|regression to change"
            )
        if task == "regression":
            return task, None
        classes = sorted(self.counts)
        names = [str(c) if self.text else category_text(c) for c in classes]
        if len(names) < 2:
            raise TrainlabError(
                f"target '{self.name}' of {self.where} has a single class ({names[0]!r}) in all "
                f"{sum(self.counts.values())} rows; a classifier needs at least two: "
                "check data.target"
            )
        return task, names

    def encoder(self, class_names: list[str] | None, target_scaling: str) -> Any:
        """A function from typed target values to what the model trains on, and the
        target's (mean, std) for regression."""
        if class_names is None:
            mean, std = np.zeros(1), np.ones(1)
            if target_scaling == "standard":
                mean = self.train.mean.copy()
                std = np.sqrt(self.train.m2 / max(self.train.count[0], 1)) + 1e-12

            def scaled(values: pd.Series) -> np.ndarray:
                numbers = values.to_numpy(dtype=np.float64).reshape(-1, 1)
                return ((numbers - mean) / std).astype(np.float32)

            return scaled, (mean, std)
        index = {(str(c) if self.text else c): i for i, c in enumerate(sorted(self.counts))}

        def classes(values: pd.Series) -> np.ndarray:
            return np.array([index[v] for v in values.tolist()], dtype=np.int64)

        return classes, None
