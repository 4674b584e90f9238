"""Reading a table in chunks, splitting rows by their number, and choosing whether to stream.

A table too big for memory is never read whole: `read_chunks` yields it a chunk of rows at
a time (Parquet row batches, CSV chunks, `.npy` rows read at their file offsets), each
chunk's index holding its rows' 0-based numbers in the file, so a message can name the
data row. `row_splits` puts each row in train, validation or test from (seed, row number)
alone, so no pass needs the whole file. `choose_streaming` decides `data.streaming=auto`.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from trainlab.components.data.file_checks import check_file
from trainlab.components.data.files import (
    CSV_ERRORS,
    CSV_SUFFIXES,
    OTHER_SEPARATORS,
    PARQUET_SUFFIXES,
    csv_error,
    first_line,
)
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

NPY_SUFFIXES = (".npy",)
STREAMABLE = (*CSV_SUFFIXES, *PARQUET_SUFFIXES, *NPY_SUFFIXES)
CHUNK_ROWS = 65536
# data.streaming=auto reads a file whole when its decoded size times this is under the
# memory available: the in-memory path holds the frame, its typed copy, the encoded
# inputs and the tensors at once.
IN_MEMORY_FACTOR = 4
# A CSV's text is about as large as its values decoded as numbers; text columns become
# Python objects, several times larger. Parquet and .npy know their decoded size.
CSV_DECODED_FACTOR = 2
CGROUP_V1 = "/sys/fs/cgroup/memory"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash of each value (wrapping arithmetic)."""
    z = values.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_uniform(seed: int, rows: np.ndarray, salt: int = 0) -> np.ndarray:
    """A number in [0, 1) for each row number, a fixed function of (seed, salt, row)."""
    key = _mix(np.array([seed * 2 + 1, salt], dtype=np.uint64))
    with np.errstate(over="ignore"):
        base = key[0] * _GOLDEN + key[1]
        hashed = _mix(rows.astype(np.uint64) * _GOLDEN + base)
    return (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53


TRAIN, VAL, TEST = 0, 1, 2


def row_splits(
    seed: int,
    rows: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    fold: tuple[int, int] | None = None,
) -> np.ndarray:
    """TRAIN, VAL or TEST for each row number: test when a hash of (seed, row) falls below
    `test_fraction`, validation in the next `val_fraction`. With `fold=(k, folds)` the
    non-test rows are cut into `folds` parts by the same hash and part k validates."""
    u = row_uniform(seed, rows)
    splits = np.full(len(rows), TRAIN, dtype=np.int8)
    if fold is not None:
        index, folds = fold
        part = np.floor((u - test_fraction) / (1.0 - test_fraction) * folds).astype(np.int64)
        splits[part == index] = VAL
    else:
        splits[u < test_fraction + val_fraction] = VAL
    splits[u < test_fraction] = TEST
    return splits


def kind_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(NPY_SUFFIXES):
        return "npy"
    return "csv"


def read_chunks(
    path: str | Path, what: str = "data.path", chunk_rows: int = CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """The file's rows a chunk at a time, as DataFrames with string column names whose
    index is the rows' 0-based numbers in the file."""
    path = Path(path)
    check_file(path, what)
    kind = kind_of(path)
    if kind == "parquet":
        yield from _parquet_chunks(path, what, chunk_rows)
    elif kind == "npy":
        yield from _npy_chunks(path, what, chunk_rows)
    else:
        yield from _csv_chunks(path, what, chunk_rows)


def _parquet_chunks(path: Path, what: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # pre_buffer=False: with it, the reader keeps every column chunk it has read until
        # the pass ends, so memory grew with the file (657 MiB of Arrow's pool after one
        # pass over a 0.6 GB file; 20 MiB without it, and no slower).
        file = pq.ParquetFile(path, pre_buffer=False)
        names = [str(name) for name in file.schema_arrow.names]
        _check_names(names, path, what)
        start = 0
        for batch in file.iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas()
            frame.columns = names
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
    except (pa.ArrowMemoryError, MemoryError) as ex:
        raise TrainlabError(
            f"{what}={path}: out of memory reading a chunk ({first_line(ex)}); give the "
            "process more memory, or read fewer rows at a time: lower data.chunk_rows"
        ) from None
    except (pa.ArrowException, OSError, ValueError) as ex:
        if "malloc" in str(ex) or "memory" in str(ex).lower():
            raise TrainlabError(
                f"{what}={path}: out of memory reading a chunk ({first_line(ex)}); give the "
                "process more memory, or read fewer rows at a time: lower data.chunk_rows"
            ) from None
        raise TrainlabError(
            f"{what}={path}: cannot read the Parquet file ({first_line(ex)}); "
            "is it complete? Write it again"
        ) from None
    if start == 0:
        raise TrainlabError(f"{what}={path}: the file has columns but no rows")


def _csv_chunks(path: Path, what: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    sep = "\t" if path.name.lower().endswith(".tsv") else ","
    try:
        header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, encoding="utf-8-sig")
        names = ["" if pd.isna(n) else str(n) for n in header.iloc[0]] if len(header) else []
        other = [s for s in OTHER_SEPARATORS if len(names) == 1 and s in names[0]]
        if other and sep == ",":
            log.info(f"note: {what}={path} is separated by {other[0]!r}, not commas; read so")
            sep = other[0]
            header = pd.read_csv(
                path, sep=sep, header=None, nrows=1, dtype=str, encoding="utf-8-sig"
            )
            names = ["" if pd.isna(n) else str(n) for n in header.iloc[0]]
        _check_names([n for n in names if n], path, what)
        reader = pd.read_csv(path, sep=sep, encoding="utf-8-sig", chunksize=chunk_rows)
        start = 0
        with reader:
            for frame in reader:
                frame.columns = [str(c) for c in frame.columns]
                frame.index = pd.RangeIndex(start, start + len(frame))
                start += len(frame)
                yield frame
    except CSV_ERRORS as ex:
        raise csv_error(ex, path, what) from None
    except (ValueError, OSError) as ex:
        raise TrainlabError(f"{what}={path}: cannot read the file ({first_line(ex)})") from None
    if start == 0:
        raise TrainlabError(f"{what}={path}: the file has a header but no rows")


def npy_header(path: Path, what: str = "data.path") -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a `.npy` file, read from its header only."""
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(file)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(file)
            offset = file.tell()
    except (ValueError, OSError) as ex:
        raise TrainlabError(f"{what}={path}: not a NumPy .npy file ({first_line(ex)})") from None
    if len(shape) != 2 or fortran or dtype.kind not in "biuf" or shape[0] == 0:
        raise TrainlabError(
            f"{what}={path}: holds a {'x'.join(map(str, shape)) or 'scalar'} "
            f"{'Fortran-ordered ' if fortran else ''}{dtype} array; a table needs a 2-D "
            "C-ordered array of numbers with at least one row (rows x columns)"
        )
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if os.path.getsize(path) < expected:
        raise TrainlabError(
            f"{what}={path}: the file is shorter than its header says "
            f"({os.path.getsize(path)} of {expected} bytes); is it complete? Write it again"
        )
    return tuple(shape), dtype, offset


def npy_columns(count: int) -> list[str]:
    """A `.npy` table's column names: x0, x1, ... (the target is one of them)."""
    return [f"x{i}" for i in range(count)]


def _npy_chunks(path: Path, what: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    # File reads at offsets, like a memory map's, but nothing stays mapped: a map of the
    # whole file would count against the process's address-space limit.
    (rows, columns), dtype, offset = npy_header(path, what)
    names = npy_columns(columns)
    with open(path, "rb") as file:
        for start in range(0, rows, chunk_rows):
            count = min(chunk_rows, rows - start)
            file.seek(offset + start * columns * dtype.itemsize)
            values = np.fromfile(file, dtype=dtype, count=count * columns)
            frame = pd.DataFrame(values.reshape(count, columns), columns=names)
            frame.index = pd.RangeIndex(start, start + count)
            yield frame


def read_npy(path: str | Path, what: str = "data.path") -> pd.DataFrame:
    """A whole `.npy` table in memory (data.streaming=false)."""
    path = Path(path)
    check_file(path, what)
    (_, columns), _, _ = npy_header(path, what)
    array = np.load(path, allow_pickle=False)
    return pd.DataFrame(array, columns=npy_columns(columns))


def _check_names(names: list[str], path: Path, what: str) -> None:
    seen: set[str] = set()
    repeated = sorted({n for n in names if n in seen or seen.add(n)})
    if repeated:
        raise TrainlabError(
            f"{what}={path}: the column name(s) {', '.join(map(repr, repeated))} appear more "
            "than once; give every column its own name"
        )


def decoded_size(path: Path) -> int:
    """About how many bytes the file's values take decoded in memory."""
    kind = kind_of(path)
    if kind == "npy":
        shape, dtype, _ = npy_header(path)
        return int(np.prod(shape)) * max(dtype.itemsize, 8)  # pandas widens to 8 bytes
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path).metadata
        except (pa.ArrowException, OSError):
            return path.stat().st_size * CSV_DECODED_FACTOR  # the loader will say what is wrong
        return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return path.stat().st_size * CSV_DECODED_FACTOR


def cgroup_files() -> list[tuple[str, str]]:
    """(limit, usage) files of this process's memory cgroup and of every group above it
    (each one's limit applies), for cgroup v2 and v1, from /proc/self/cgroup."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    places: list[tuple[Path, str, str]] = []
    for line in lines:
        _, controllers, group = line.split(":", 2)
        if controllers == "":
            places.append((Path("/sys/fs/cgroup"), "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):
            places.append((Path(CGROUP_V1), "memory.limit_in_bytes", "memory.usage_in_bytes"))
        else:
            continue
        root, limit, usage = places.pop()
        folder = root / group.strip("/")
        while True:  # up to the mount point: the root's files are found there too
            places.append((folder, limit, usage))
            if folder == root:
                break
            folder = folder.parent
    return [(str(f / limit), str(f / usage)) for f, limit, usage in places] or [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (f"{CGROUP_V1}/memory.limit_in_bytes", f"{CGROUP_V1}/memory.usage_in_bytes"),
    ]


def available_memory() -> tuple[int, str]:
    """Bytes this process may still use, and which limit sets it: the machine's available
    memory, the cgroup's `memory.max` (v2) or `memory.limit_in_bytes` (v1), `RLIMIT_AS`."""
    limits: list[tuple[int, str]] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append((int(line.split()[1]) * 1024, "available memory"))
    except OSError:
        pass
    for limit_file, usage_file in cgroup_files():
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 2**60:
                used = int(Path(usage_file).read_text().strip())
                limits.append((max(int(limit) - used, 0), f"the cgroup's limit ({limit_file})"))
        except (OSError, ValueError):
            pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            status = Path("/proc/self/status").read_text()
            used = int(status.split("VmSize:")[1].split()[0]) * 1024
        except (OSError, IndexError, ValueError):
            used = 0
        limits.append((max(soft - used, 0), "the address-space limit (RLIMIT_AS)"))
    if not limits:
        return 2**62, "no known limit"
    return min(limits)


def choose_streaming(setting: bool | str, path: str | Path) -> bool:
    """Whether to stream the table at `path` for `data.streaming=setting`; for `auto` it
    logs which and why."""
    path = Path(path)
    if setting != "auto":
        return bool(setting)
    if not path.name.lower().endswith(STREAMABLE) or not path.is_file():
        return False  # .npz, or a missing file: the in-memory reader says what is wrong
    size = decoded_size(path)
    free, which = available_memory()
    stream = size * IN_MEMORY_FACTOR > free
    how = "streams it in chunks" if stream else "reads it into memory"
    relation = "over" if stream else "under"
    log.info(
        f"data.streaming=auto {how}: about {size / 2**20:,.0f} MiB decoded, x{IN_MEMORY_FACTOR} "
        f"is {relation} the {free / 2**20:,.0f} MiB of {which}"
    )
    return stream
