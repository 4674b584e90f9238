"""Reading a table from a CSV, Parquet or NumPy `.npz` file, with errors a user can act on."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainlab.components.data.file_checks import check_file
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

# File types by name ending; pandas also reads compressed CSV by its extension.
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
NPZ_SUFFIXES = (".npz",)
SUPPORTED = ", ".join((*CSV_SUFFIXES, *PARQUET_SUFFIXES, *NPZ_SUFFIXES))
# A file read as one column whose header holds one of these was written with that separator.
OTHER_SEPARATORS = (";", "\t", "|")
RAGGED = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def read_table(
    path: str | Path, *, what: str = "data.path", npz_features: str = "X", npz_target: str = "y"
) -> pd.DataFrame:
    """The file at `path` as a DataFrame with string column names.

    A `.npz` file gives the columns `x0, x1, ...` from its 2-D array `npz_features` and,
    when the file has it, a column named `npz_target` from that 1-D array (the names of all
    its arrays are in `frame.attrs["npz_arrays"]`). `what` names the setting the path came
    from, for error messages.
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((*CSV_SUFFIXES, *PARQUET_SUFFIXES, *NPZ_SUFFIXES)):
        kind = "".join(path.suffixes) or "no extension"
        raise TrainlabError(
            f"{what}={path}: unsupported file type ({kind}); use one of: {SUPPORTED}"
        )
    check_file(path, what)
    try:
        if name.endswith(NPZ_SUFFIXES):
            frame = _read_npz(path, what, npz_features, npz_target)
        elif name.endswith(PARQUET_SUFFIXES):
            frame = pd.read_parquet(path)
        else:
            frame = read_csv(path, what, sep="\t" if name.endswith(".tsv") else ",")
    except TrainlabError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile) as ex:
        raise TrainlabError(f"{what}={path}: cannot read the file ({first_line(ex)})") from None
    check_columns(frame, path, what)
    frame.columns = [str(column) for column in frame.columns]
    return frame


def first_line(ex: BaseException) -> str:
    return str(ex).strip().splitlines()[0][:160] if str(ex).strip() else type(ex).__name__


# What pandas raises for a CSV file it cannot read; `csv_error` says it in one line.
CSV_ERRORS = (pd.errors.EmptyDataError, UnicodeDecodeError, pd.errors.ParserError)


def csv_error(ex: BaseException, path: Path, what: str) -> TrainlabError:
    """One of `CSV_ERRORS` as the line for the user: what is wrong and how to fix it."""
    if isinstance(ex, pd.errors.EmptyDataError):
        return TrainlabError(f"{what}={path}: the file holds no columns (is it empty?)")
    if isinstance(ex, UnicodeDecodeError):
        return TrainlabError(
            f"{what}={path} is not UTF-8 text (byte {ex.object[ex.start]:#04x} at offset "
            f"{ex.start}); save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)"
        )
    if found := RAGGED.search(str(ex)):
        expected, line, saw = found.groups()
        return TrainlabError(
            f"{what}={path}: line {line} has {saw} fields but the header has {expected}; "
            "fix that row (a value holding the separator needs quotes)"
        )
    return TrainlabError(f"{what}={path}: cannot read the file ({first_line(ex)})")


def read_csv(path: Path, what: str, sep: str = ",", **options: Any) -> pd.DataFrame:
    """A CSV file as UTF-8 text (a byte-order mark is fine), refusing what pandas would
    guess at: repeated column names (it renames them `a.1`), rows with extra fields, bytes
    that are not UTF-8. A file that reads as one column separated by `;`, tab or `|` is
    read again with that separator, with a note."""
    try:
        frame = _read_csv(path, sep, options)
        header = frame.columns[0] if len(frame.columns) == 1 else ""
        other = [s for s in OTHER_SEPARATORS if s in str(header)]
        if sep == "," and len(other) == 1:
            log.info(f"note: {what}={path} is separated by {other[0]!r}, not commas; read so")
            sep = other[0]
            frame = _read_csv(path, sep, options)
    except CSV_ERRORS as ex:
        raise csv_error(ex, path, what) from None
    # Empty names are left to pandas ("Unnamed: 0", e.g. a saved index): only the user's
    # own names must not repeat.
    named = [name for name in _header(path, sep) if name]
    duplicated = [name for name, count in Counter(named).items() if count > 1]
    if duplicated:
        raise TrainlabError(
            f"{what}={path}: the header names column(s) {', '.join(map(repr, duplicated))} "
            "more than once; give every column its own name"
        )
    return frame


def _read_csv(path: Path, sep: str, options: dict[str, Any]) -> pd.DataFrame:
    return pd.read_csv(path, sep=sep, encoding="utf-8-sig", **options)


def _header(path: Path, sep: str) -> list[str]:
    """The column names as the file writes them (pandas renames repeated ones)."""
    frame = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, encoding="utf-8-sig")
    return ["" if pd.isna(name) else str(name) for name in frame.iloc[0]] if len(frame) else []


def check_columns(frame: pd.DataFrame, path: Path, what: str) -> None:
    """Column names given once each (Parquet allows repeats), and at least one row."""
    names = [str(column) for column in frame.columns]
    duplicated = [name for name, count in Counter(names).items() if count > 1]
    if duplicated:
        raise TrainlabError(
            f"{what}={path}: the column name(s) {', '.join(map(repr, duplicated))} appear more "
            "than once; give every column its own name"
        )
    if len(frame) == 0:
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise TrainlabError(f"{what}={path}: the file has columns ({shown}) but no rows")


def _read_npz(path: Path, what: str, features_key: str, target_key: str) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as arrays:
        names = list(arrays.keys())
        if not names:
            raise TrainlabError(f"{what}={path}: the .npz file holds no arrays")
        if features_key not in names:
            raise TrainlabError(
                f"{what}={path}: no array named '{features_key}' (arrays: {', '.join(names)}); "
                "name the feature array with data.npz_features=..."
            )
        features = arrays[features_key]
        target = arrays[target_key] if target_key in names else None
    if features.ndim != 2:
        raise TrainlabError(
            f"{what}={path}: array '{features_key}' has shape {features.shape}; "
            "a table needs 2 dimensions (rows x features)"
        )
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(features.shape[1])])
    if target is not None:
        if target.ndim == 2 and target.shape[1] == 1:
            target = target[:, 0]
        if target.shape != (len(frame),):
            raise TrainlabError(
                f"{what}={path}: array '{target_key}' has shape {target.shape} but "
                f"'{features_key}' has {len(frame)} rows; the target needs one value per row"
            )
        frame[target_key] = target
    frame.attrs["npz_arrays"] = names
    return frame


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Have `write(temporary path)` write a file, then rename it to `path` in one step, so a
    reader sees the old file or the new one, never half of one.

    The temporary name is unique to this writer and only this writer removes it: two
    processes saving one run's files at once never delete each other's file in progress.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """`write_atomic` for a text (UTF-8)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
