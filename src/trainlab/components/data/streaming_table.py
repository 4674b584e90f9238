"""A table bigger than memory (`data=csv data.streaming=true`, or `auto` on a big file).

Two passes over the file, a chunk at a time (`streaming_source.read_chunks`):

1. types every chunk as the in-memory path does (`TablePreprocessor.features`, column
   kinds detected on the first chunk), puts each row in a split by (seed, row number)
   (`row_splits`) and tallies the training rows (`streaming_fit.TrainTally`); then fits
   the preprocessing from the tally;
2. encodes every row and appends it to its split's float32 `.npy` cache.

The cache lives under `data.cache_dir`, in a folder named by a hash of the file (path,
size, time of change) and of every setting that changes its contents, so a resumed or
repeated run reuses it; it is written under a temporary name and renamed when complete.
Batches are read from it (`streaming_batches.StreamBatches`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from trainlab.components.data.datasets import DataInfo
from trainlab.components.data.preprocessing import (
    TablePreprocessor,
    build_transformer,
    date_columns,
    shown,
)
from trainlab.components.data.streaming_batches import StreamingTable, write_header
from trainlab.components.data.streaming_fit import (
    SPLIT_NAMES,
    TargetTally,
    TrainTally,
    fit_preprocessor,
)
from trainlab.components.data.streaming_source import kind_of, read_chunks, row_splits
from trainlab.errors import ConfigError, TrainlabError

log = logging.getLogger("trainlab")

CACHE_VERSION = 1
INFO_FILE = "info.json"


def load_streaming_table(
    seed: int,
    path: str,
    *,
    target: str | None,
    task: str,
    categorical: list[str],
    numeric: list[str],
    drop_columns: list[str],
    impute: str,
    missing_indicator: bool,
    categorical_impute: str,
    max_categories: int,
    scaling: str,
    target_scaling: str,
    val_fraction: float,
    test_fraction: float,
    fold: tuple[int, int] | None,
    cache_dir: str,
    num_workers: int,
    chunk_rows: int,
    **batching: Any,
) -> StreamingTable:
    """The table at `path` streamed (see the module); the settings are `data=csv`'s."""
    from trainlab.components.data.tabular import DECLARED_NUMERIC, column_kinds, unknown_column

    where = f"data.path={path}"
    if impute == "knn":
        raise ConfigError(
            "data.impute=knn needs the whole table in memory, which data.streaming does not "
            "hold: use data.impute=median (or mean, most_frequent, drop), or data.streaming=false"
        )
    settings = {
        "target": target,
        "task": task,
        "categorical": categorical,
        "numeric": numeric,
        "drop_columns": drop_columns,
        "impute": impute,
        "missing_indicator": missing_indicator,
        "categorical_impute": categorical_impute,
        "max_categories": max_categories,
        "scaling": scaling,
        "target_scaling": target_scaling,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "fold": fold,
        "chunk_rows": chunk_rows,
    }
    stat = Path(path).stat() if Path(path).is_file() else None
    key = hashlib.sha256(
        json.dumps(
            [
                CACHE_VERSION,
                str(Path(path).resolve()),
                stat and stat.st_size,
                stat and stat.st_mtime_ns,
                seed,
                settings,
            ],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:20]
    directory = Path(cache_dir) / f"{Path(path).name.split('.')[0]}-{key}"
    options = {"num_workers": num_workers, **batching}
    if (directory / INFO_FILE).is_file():
        info = DataInfo(**json.loads((directory / INFO_FILE).read_text())["info"])
        log.info(f"data.streaming: reusing the preprocessed cache {directory}")
        return StreamingTable(directory, info, TablePreprocessor.load(directory), **options)

    began = time.perf_counter()
    chunks = read_chunks(path, chunk_rows=chunk_rows)
    first = next(chunks)
    columns = list(first.columns)
    if target is None:
        example = columns[-1]
        raise ConfigError(
            f"data.target is not set: name the column to predict, e.g. data.target={example}; "
            f"columns: {shown(columns)}"
            + (" (a .npy file's columns are x0, x1, ...)" if kind_of(Path(path)) == "npy" else "")
        )
    if target not in columns:
        raise unknown_column(target, "data.target", columns, where)
    from pandas.api import types

    text_target = types.is_bool_dtype(first[target]) or not types.is_numeric_dtype(first[target])
    targets = TargetTally(target, task, text_target, where)
    numbers, categories, dates = column_kinds(
        first, target, categorical, numeric, drop_columns, where, max_categories
    )
    detected = [c for c in categories if c not in categorical]
    transformer = build_transformer(
        [*numbers, *date_columns(dates)],
        categories,
        impute=impute,
        knn_neighbors=1,
        missing_indicator=missing_indicator,
        categorical_impute=categorical_impute,
        scaling=scaling,
    )
    preprocessor = TablePreprocessor(transformer, numbers, categories, target, impute, dates)
    tally = TrainTally(
        seed,
        [*numbers, *date_columns(dates)],
        categories,
        detected,
        max_categories,
        want_sample=impute in ("median", "most_frequent"),
        where=where,
    )

    def kept_rows(chunk: Any) -> tuple[Any, Any, np.ndarray]:
        if target not in chunk.columns:
            raise TrainlabError(f"{where}: the rows from {chunk.index[0] + 1} lack '{target}'")
        values = targets.typed(chunk[target])
        features = preprocessor.features(chunk, where, hint=DECLARED_NUMERIC)
        keep = values.notna().to_numpy()
        if impute == "drop":
            keep = keep & features.notna().all(axis=1).to_numpy()
        splits = row_splits(seed, chunk.index.to_numpy(), val_fraction, test_fraction, fold)
        return features[keep], values[keep], splits[keep]

    total = 0
    for chunk in _chain(first, chunks):
        features, values, splits = kept_rows(chunk)
        total += len(chunk)
        tally.left_out += len(chunk) - len(features)
        tally.add(features, splits)
        targets.add(values, splits)
    kept = sum(tally.split_rows)
    if kept == 0:
        why = (
            "every row has a missing value (data.impute=drop)"
            if impute == "drop"
            else (f"no row has a '{target}' value")
        )
        raise TrainlabError(f"{where}: {why}; check data.target, or fill the column in")
    if tally.left_out:
        log.info(
            f"note: {tally.left_out} row(s) without a '{target}' value or with gaps "
            "(data.impute=drop) are left out"
        )
    if min(tally.split_rows) == 0:
        raise TrainlabError(
            f"cannot split {kept} rows into train/val/test sets (train {tally.split_rows[0]}, "
            f"val {tally.split_rows[1]}, test {tally.split_rows[2]}); use more rows or larger "
            "data.val_fraction / data.test_fraction"
        )
    _, class_names = targets.resolve()
    tally.check_constant()
    fit_preprocessor(preprocessor, tally, scaling)
    width = len(preprocessor.feature_names)
    fitted = time.perf_counter() - began
    encode, moments = targets.encoder(class_names, target_scaling)

    kind = "regression"
    if class_names is not None:
        kind = "binary" if len(class_names) == 2 else "multiclass"
    info = DataInfo(
        name=Path(path).name.split(".")[0],
        task=kind,
        input_kind="features",
        input_shape=(width,),
        num_classes=len(class_names) if class_names else 0,
        class_names=class_names or [],
        target_mean=None if class_names else moments[0].tolist(),
        target_std=None if class_names else moments[1].tolist(),
    )
    temporary = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        with ExitStack() as stack:
            files = []
            for name, rows in zip(SPLIT_NAMES, tally.split_rows, strict=True):
                inputs = stack.enter_context(open(temporary / f"{name}_inputs.npy", "wb"))
                labels = stack.enter_context(open(temporary / f"{name}_targets.npy", "wb"))
                write_header(inputs, rows, (width,), np.dtype(np.float32))
                if class_names is not None:
                    write_header(labels, rows, (), np.dtype(np.int64))
                else:
                    write_header(labels, rows, (1,), np.dtype(np.float32))
                files.append((inputs, labels))
            for chunk in read_chunks(path, chunk_rows=chunk_rows):
                features, values, splits = kept_rows(chunk)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Found unknown categories")
                    encoded = preprocessor.transformer.transform(features).astype(np.float32)
                labels_of = encode(values)
                for split, (inputs, labels) in enumerate(files):
                    chosen = splits == split
                    inputs.write(np.ascontiguousarray(encoded[chosen]).tobytes())
                    labels.write(np.ascontiguousarray(labels_of[chosen]).tobytes())
        preprocessor.save(temporary)
        summary = {"info": asdict(info), "rows": total, "splits": tally.split_rows}
        (temporary / INFO_FILE).write_text(json.dumps(summary, indent=2))
        try:
            os.replace(temporary, directory)
        except OSError:  # another run wrote the same cache first: use theirs
            shutil.rmtree(temporary, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    log.info(
        f"table {where} (streamed): {total} rows in chunks of {chunk_rows}; train/val/test "
        f"{'/'.join(map(str, tally.split_rows))} rows; numeric: {shown(numbers) or '-'}; "
        + (f"dates: {shown(list(dates))}; " if dates else "")
        + f"categorical: {shown(categories) or '-'}; {width} model inputs; target '{target}': "
        f"{kind}; preprocessing fitted in {fitted:.1f} s, cached in "
        f"{time.perf_counter() - began - fitted:.1f} s at {directory}"
    )
    return StreamingTable(directory, info, TablePreprocessor.load(directory), **options)


def _chain(first: Any, rest: Any) -> Any:
    yield first
    yield from rest
