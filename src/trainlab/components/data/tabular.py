"""Your own table (`data=csv`): column kinds, the task, and preprocessing fitted on train rows.

`load_table` reads a CSV, Parquet or `.npz` file, decides which columns are numbers and
which are categories and whether the task is classification or regression, splits the
rows, and fits a `TablePreprocessor` (imputation, scaling, one-hot encoding; see
`trainlab.components.data.preprocessing`) on the training split only. It applies exactly that
transform to new rows (`predict.py`) and saves itself with the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pandas.api import types

from trainlab.components.data.datasets import DataBundle, DataInfo, Split, split_rows
from trainlab.components.data.dates import date_columns, date_format, has_time
from trainlab.components.data.files import read_table
from trainlab.components.data.preprocessing import (
    TablePreprocessor,
    build_transformer,
    categorical_column,
    category_text,
    numeric_column,
    shown,
)
from trainlab.components.data.streaming_source import (
    CHUNK_ROWS,
    NPY_SUFFIXES,
    choose_streaming,
    read_npy,
)
from trainlab.errors import ConfigError, TrainlabError, did_you_mean

log = logging.getLogger("trainlab")

# task=auto: a target of whole numbers with at most this many distinct values is a class label.
MAX_AUTO_CLASSES = 20
# A detected text column with more distinct values than this share of its filled rows (and
# at least ID_MIN_LEVELS of them) is an ID or a name: left out, with a note.
ID_SHARE = 0.5
ID_MIN_LEVELS = 20
DECLARED_NUMERIC = "fix the file, or list the column in data.categorical instead of data.numeric"


def unknown_column(name: str, setting: str, columns: list[str], where: str) -> TrainlabError:
    return TrainlabError(
        f"{setting}: no column '{name}' in {where}{did_you_mean(name, columns)}; "
        f"columns: {shown(columns)}"
    )


def column_kinds(
    frame: pd.DataFrame,
    target: str,
    categorical: list[str],
    numeric: list[str],
    drop_columns: list[str],
    where: str,
    max_categories: int = 100,
) -> tuple[list[str], list[str], dict[str, str]]:
    """The numeric, the categorical and the date feature columns (with each date column's
    format), declared or detected by dtype and content.

    A detected text column is never one-hot encoded into a flood of inputs: one with nearly
    a value per row (an ID, a name: see `ID_SHARE`) is left out with a note; one with more
    than `max_categories` distinct values otherwise (free text) is refused. A column listed
    in `data.categorical` is one-hot encoded whatever its number of values."""
    columns = list(frame.columns)
    for setting, names in (
        ("data.categorical", categorical),
        ("data.numeric", numeric),
        ("data.drop_columns", drop_columns),
    ):
        for name in names:
            if name not in columns:
                raise unknown_column(name, setting, columns, where)
    numbers, categories, dates, identifiers = [], [], {}, []
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
        elif types.is_timedelta64_dtype(column):
            raise TrainlabError(
                f"column '{name}' of {where} holds {column.dtype} values, which the model "
                f"cannot take; leave it out with data.drop_columns=[{name}] or convert it"
            )
        elif (form := date_format(column, name, where)) is not None:
            dates[name] = form
        elif types.is_bool_dtype(column) or not types.is_numeric_dtype(column):
            if looks_like_identifier(column):
                identifiers.append(name)
                continue
            check_categories(column, name, where, max_categories)
            categories.append(name)
        else:
            numbers.append(name)
    if dates:
        timed = (
            " (and hour, with its sin/cos, where they hold times)"
            if any(has_time(form) for form in dates.values())
            else ""
        )
        log.info(
            f"note: date column(s) {shown(list(dates))} of {where} become numbers: year, month, "
            f"day, weekday, days since 1970, sin/cos of month and weekday{timed} "
            "(list a column in data.categorical to keep it as text)"
        )
    for name in identifiers:
        distinct = categorical_column(frame[name]).nunique()
        log.info(
            f"note: column '{name}' of {where} has {distinct} distinct texts in "
            f"{int(frame[name].notna().sum())} rows (an ID or a name?); it is left out: "
            f"list it in data.categorical=[{name}] to one-hot encode it anyway"
        )
    if not numbers and not categories and not dates:
        raise TrainlabError(
            f"{where} has no feature columns besides the target '{target}'; "
            "check data.target and data.drop_columns"
        )
    return numbers, categories, dates


def looks_like_identifier(column: pd.Series) -> bool:
    """Nearly one distinct text per filled row: an ID, a name, a free-text note."""
    distinct = categorical_column(column).nunique()
    return distinct >= ID_MIN_LEVELS and distinct > ID_SHARE * column.notna().sum()


def check_categories(column: pd.Series, name: str, where: str, most: int) -> None:
    """Refuse a text column with more distinct values than one-hot encoding should take."""
    distinct = categorical_column(column).nunique()
    if distinct > most:
        raise TrainlabError(
            f"column '{name}' of {where} has {distinct} distinct texts (free text?), over "
            f"data.max_categories={most}: leave it out with data.drop_columns=[{name}], "
            f"raise data.max_categories, or list it in data.categorical=[{name}]"
        )


def encode_target(series: pd.Series, task: str, where: str) -> tuple[np.ndarray, list[str] | None]:
    """Class indices and class names (sorted), or float values and None for regression."""
    name = str(series.name)
    if task == "auto":
        task, why = auto_task(series)
        log.info(
            f"data.task=auto: target '{name}' is {task} ({why}); "
            "set data.task=classification|regression to change"
        )
    if task == "regression":
        hint = "regression needs numbers: use data.task=classification (or auto)"
        return numeric_column(series, name, where, hint).to_numpy(), None
    if types.is_numeric_dtype(series) and not types.is_bool_dtype(series):
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


def auto_task(series: pd.Series) -> tuple[str, str]:
    """classification or regression for the target `series`, and why (task=auto)."""
    if types.is_bool_dtype(series) or not types.is_numeric_dtype(series):
        return "classification", "it is not numeric"
    distinct = series.nunique()
    whole = bool((series % 1 == 0).all())  # 0.0 / 1.0 are class codes as much as 0 / 1
    if not whole:
        return "regression", "it holds fractions"
    why = f"{distinct} distinct whole numbers; classes up to {MAX_AUTO_CLASSES}"
    return ("classification" if distinct <= MAX_AUTO_CLASSES else "regression"), why


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
    max_categories: int = 100,
    scaling: str = "standard",
    target_scaling: str = "standard",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    fold: tuple[int, int] | None = None,
    streaming: bool | str = "auto",
    cache_dir: str = "outputs/cache",
    chunk_rows: int = CHUNK_ROWS,
    num_workers: int = 0,
    **batching: Any,
) -> DataBundle:
    """A table from a file, split (stratified for classes) and preprocessed (see the module).

    `fold=(k, folds)`: fold k of a cross-validation (see `split_rows`). `streaming`: read
    the file in chunks instead (`streaming_table.py`); `auto` streams a file that would
    not comfortably fit in memory."""
    if choose_streaming(streaming, path):
        from trainlab.components.data.streaming_table import load_streaming_table

        return load_streaming_table(
            seed, path, target=target, task=task, categorical=list(categorical),
            numeric=list(numeric), drop_columns=list(drop_columns), impute=impute,
            missing_indicator=missing_indicator, categorical_impute=categorical_impute,
            max_categories=max_categories, scaling=scaling, target_scaling=target_scaling,
            val_fraction=val_fraction, test_fraction=test_fraction, fold=fold,
            cache_dir=cache_dir, num_workers=num_workers, chunk_rows=chunk_rows, **batching,
        )  # fmt: skip
    where = f"data.path={path}"
    if str(path).lower().endswith(NPY_SUFFIXES):
        frame = read_npy(path)
    else:
        frame = read_table(path, npz_features=npz_features, npz_target=npz_target)
    columns = list(frame.columns)
    arrays = frame.attrs.get("npz_arrays")
    if target is None and arrays is not None:
        if npz_target not in columns:
            raise ConfigError(
                f"{where} has no target array '{npz_target}' (arrays: {shown(arrays)}); "
                f"name it with data.npz_target=..."
            )
        target = npz_target
    if target is None:
        raise ConfigError(
            f"data.target is not set: name the column to predict, e.g. "
            f"data.target={columns[-1]}; columns: {shown(columns)}"
        )
    if target not in columns:
        raise unknown_column(target, "data.target", columns, where)
    if not types.is_numeric_dtype(frame[target]):
        # "cat " is "cat", and a label of spaces only is missing.
        frame[target] = categorical_column(frame[target])
    if frame[target].isna().all():
        raise TrainlabError(
            f"data.target='{target}' has no values in {where} (all {len(frame)} rows are "
            "empty): check data.target, or fill the column in"
        )
    numbers, categories, dates = column_kinds(
        frame,
        target,
        list(categorical),
        list(numeric),
        list(drop_columns),
        where,
        max_categories,
    )

    rows = len(frame)
    frame = frame[frame[target].notna()]
    if len(frame) < rows:
        log.info(f"note: {rows - len(frame)} row(s) without a '{target}' value are left out")
    if impute == "drop":
        complete = frame[[*numbers, *dates, *categories]].notna().all(axis=1)
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
        fold=fold,
        class_names=class_names,
        target=f"data.target='{target}'",
    )

    transformer = build_transformer(
        [*numbers, *date_columns(dates)],
        categories,
        impute=impute,
        knn_neighbors=knn_neighbors,
        missing_indicator=missing_indicator,
        categorical_impute=categorical_impute,
        scaling=scaling,
    )
    preprocessor = TablePreprocessor(transformer, numbers, categories, target, impute, dates)
    # Every row is typed (text in a numeric column is an error wherever it is); only the
    # training rows fit the transform.
    features = preprocessor.features(frame, where, hint=DECLARED_NUMERIC)
    check_constant(features.iloc[train], where)
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
        f"table {where}: {len(frame)} rows; numeric: {shown(numbers) or '-'}; "
        + (f"dates: {shown(list(dates))}; " if dates else "")
        + f"categorical: {shown(categories) or '-'}; {inputs.shape[1]} model inputs; "
        f"target '{target}': {kind}" + (f" ({shown(class_names)})" if classification else "")
    )
    return DataBundle(
        train=split(train),
        val=split(val),
        test=split(test),
        info=info,
        preprocessor=preprocessor,
        **batching,
    )


def check_constant(features: pd.DataFrame, where: str) -> None:
    """Refuse training rows whose every feature is constant; note the constant columns."""
    constant = [str(c) for c in features.columns if features[c].nunique(dropna=True) <= 1]
    if len(constant) == len(features.columns):
        raise TrainlabError(
            f"every feature column of {where} holds one value in the training rows "
            f"({shown(constant)}): there is nothing to learn from; check the file"
        )
    if constant:
        log.info(f"note: column(s) {shown(constant)} of {where} are constant; they add nothing")
