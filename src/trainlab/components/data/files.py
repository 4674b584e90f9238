"""Reading a table from a CSV, Parquet or NumPy `.npz` file, with errors a user can act on."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from trainlab.errors import TrainlabError

# File types by name ending; pandas also reads compressed CSV by its extension.
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
NPZ_SUFFIXES = (".npz",)
SUPPORTED = ", ".join((*CSV_SUFFIXES, *PARQUET_SUFFIXES, *NPZ_SUFFIXES))


def read_table(
    path: str | Path, *, what: str = "data.path", npz_features: str = "X", npz_target: str = "y"
) -> pd.DataFrame:
    """The file at `path` as a DataFrame with string column names.

    A `.npz` file gives the columns `x0, x1, ...` from its 2-D array `npz_features` and,
    when the file has it, a column named `npz_target` from that 1-D array. `what` names the
    setting the path came from, for error messages.
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((*CSV_SUFFIXES, *PARQUET_SUFFIXES, *NPZ_SUFFIXES)):
        kind = "".join(path.suffixes) or "no extension"
        raise TrainlabError(
            f"{what}={path}: unsupported file type ({kind}); use one of: {SUPPORTED}"
        )
    if not path.is_file():
        where = f" (looked in {path.resolve()})" if not path.is_absolute() else ""
        problem = "is a folder, not a file" if path.is_dir() else f"file not found{where}"
        raise TrainlabError(f"{what}={path}: {problem}; check the path")
    if path.stat().st_size == 0:
        raise TrainlabError(f"{what}={path}: the file is empty")
    try:
        if name.endswith(NPZ_SUFFIXES):
            frame = _read_npz(path, what, npz_features, npz_target)
        elif name.endswith(PARQUET_SUFFIXES):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    except TrainlabError:
        raise
    except pd.errors.EmptyDataError:
        raise TrainlabError(f"{what}={path}: the file holds no columns (is it empty?)") from None
    except (ValueError, OSError, zipfile.BadZipFile, pd.errors.ParserError) as ex:
        detail = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise TrainlabError(f"{what}={path}: cannot read the file ({detail})") from None
    frame.columns = [str(column) for column in frame.columns]
    if len(frame) == 0:
        raise TrainlabError(
            f"{what}={path}: the file has columns ({', '.join(frame.columns)}) but no rows"
        )
    return frame


def _read_npz(path: Path, what: str, features_key: str, target_key: str) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as arrays:
        names = list(arrays.keys())
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
    return frame
