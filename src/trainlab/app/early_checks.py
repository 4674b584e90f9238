"""Mistakes found without torch, scikit-learn or pandas, before any of them is imported: a
data file that is not there, a column its header lacks, a GPU this machine does not have.

Each check repeats, sooner, one the loader or torch makes later with the same words; what
needs more than a file's first line is left to them. Paths are taken as the loaders take
them: relative to the folder the command runs in.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Any

from trainlab.components.data.file_checks import TEXT_FIX, TEXT_NEEDS, check_file
from trainlab.components.data.image_files import list_image_folder
from trainlab.components.data.schemas import ImageFolderSchema, TableFileSchema, TextSchema
from trainlab.errors import ConfigError, TrainlabError, did_you_mean, listing

# What a GPU driver leaves on Linux: NVIDIA's, WSL's and ROCm's device nodes.
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")
# Files whose header the csv module can read as is (compressed ones are left to pandas).
PLAIN_TEXT = {".csv": ",", ".tsv": "\t"}


def check_early(checked: dict[str, Any]) -> None:
    """The checks of `validate(cfg)`'s settings that look at the machine and the files."""
    data = checked.get("data")
    if isinstance(data, TableFileSchema):
        check_table_file(data)
    elif isinstance(data, TextSchema):
        check_text_file(data)
    elif isinstance(data, ImageFolderSchema):
        list_image_folder(data.path)  # the folder's layout; the images when loading
    check_device(checked["trainer"].device)


def check_table_file(data: TableFileSchema) -> None:
    path = Path(data.path)
    check_file(path, "data.path")
    columns = header(path)
    if columns is None:
        return
    where = f"data.path={path}"
    if data.target is None:
        raise ConfigError(
            f"data.target is not set: name the column to predict, e.g. "
            f"data.target={columns[-1]}; columns: {listing(columns)}"
        )
    named = [("data.target", [data.target]), ("data.categorical", data.categorical)]
    named += [("data.numeric", data.numeric), ("data.drop_columns", data.drop_columns)]
    for setting, names in named:
        for name in names:
            if name not in columns:
                raise TrainlabError(
                    f"{setting}: no column '{name}' in {where}{did_you_mean(name, columns)}; "
                    f"columns: {listing(columns)}"
                )


def check_text_file(data: TextSchema) -> None:
    path = Path(data.path)
    check_file(path, "data.path", TEXT_FIX, TEXT_NEEDS)
    columns = header(path)
    if columns is None:
        return
    for key, column in (("text_column", data.text_column), ("label_column", data.label_column)):
        if column not in columns:
            raise TrainlabError(
                f"data.{key}={column!r} is not a column of data.path={path}"
                f"{did_you_mean(column, columns)}; columns: {listing(columns)}"
            )


def header(path: Path) -> list[str] | None:
    """The column names on a CSV or TSV file's first line; None where only the loader can
    tell (a compressed or binary file, another encoding)."""
    delimiter = PLAIN_TEXT.get(path.suffix.lower())
    if delimiter is None:
        return None
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            first = next(csv.reader(handle, delimiter=delimiter), None)
    except (UnicodeDecodeError, csv.Error, OSError):
        return None
    if not first or "" in first or len(set(first)) < len(first):
        return None  # names pandas makes up or changes (Unnamed: 0, a.1): the loader's call
    return first


def check_device(name: str) -> None:
    """A CUDA device on a Linux machine without any GPU driver, or MPS off a Mac: refused
    without asking torch. Where a driver is there, torch decides (it may still find no
    usable GPU)."""
    if name.startswith("cuda") and sys.platform.startswith("linux"):
        if not any(os.path.exists(f) for f in GPU_DRIVER_FILES):
            raise ConfigError(
                f"trainer.device={name} but this machine has no CUDA GPU (no GPU driver "
                "found); use trainer.device=auto or trainer.device=cpu"
            )
        if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
            raise ConfigError(
                f"trainer.device={name} but CUDA_VISIBLE_DEVICES hides every GPU; unset it, "
                "or use trainer.device=auto or trainer.device=cpu"
            )
    if name == "mps" and sys.platform != "darwin":
        raise ConfigError(
            "trainer.device=mps needs a Mac with Apple silicon; use trainer.device=auto"
        )
