"""A table bigger than memory: trainlab's streaming path against a hand-written
pyarrow-batches loop over the same Parquet file (`python scripts/bench.py --streaming`).

    python scripts/bench.py --streaming                      # a file of 2 GB decoded
    python scripts/bench.py --streaming --streaming-gb 0.05  # a quick check

The bench writes a Parquet file (24 float columns with 2 % gaps, a 3-level text column,
a 0/1 label; `--streaming-gb` of decoded values), then, each in its own process:

    trainlab     `train.py data=csv data.streaming=true`: the streaming preprocessing pass
                 over the whole file (reported apart: fit, then encoding into the cache),
                 then `--streaming-batches` training batches of 512 rows, shuffled across
                 the file (data.val_fraction and test_fraction 0.05)
    pyarrow      a hand-written loop: `ParquetFile.iter_batches` of 512 rows in file order,
                 the same inputs (gaps as 0, one-hot text), the same model (trainlab's MLP),
                 optimizer and number of batches

Reported: rows/s of training (trainlab: timed from the epoch's start to its last
optimizer step by a callback, validation excluded; pyarrow: its loop) and their ratio;
each whole process's peak resident memory (ru_maxrss: preprocessing, training,
validation, test) against the file's decoded size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from trainlab.engine.callback import Callback  # noqa: E402

FEATURES = 24
BATCH_SIZE = 512
HIDDEN = "[64]"


class TrainTimer(Callback):
    """A trainlab callback (added with `+callbacks.bench_timer._target_=...`): prints the
    optimizer steps of the first epoch and the seconds they took, validation excluded."""

    def __init__(self) -> None:
        self.began, self.last, self.steps = 0.0, 0.0, 0

    def on_epoch_start(self, trainer: Any, state: Any) -> None:
        self.began = time.perf_counter()

    def on_train_step_end(self, trainer: Any, state: Any) -> None:
        self.steps += 1
        self.last = time.perf_counter()

    def on_epoch_end(self, trainer: Any, state: Any) -> None:
        if self.steps:
            print(f"bench-train: {self.steps} steps in {self.last - self.began:.3f} s", flush=True)
            self.steps = 0


def write_table(path: Path, decoded_bytes: float, seed: int = 0) -> int:
    """The bench's Parquet file; returns its rows."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    row_bytes = FEATURES * 8 + 8 + 8  # floats, label, and about as much for the text
    rows = int(decoded_bytes // row_bytes)
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=FEATURES)
    schema = pa.schema(
        [
            *(pa.field(f"f{i}", pa.float64()) for i in range(FEATURES)),
            ("kind", pa.string()),
            ("label", pa.int64()),
        ]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 250_000):
            count = min(250_000, rows - start)
            values = rng.normal(size=(count, FEATURES))
            kind = rng.choice(np.array(["a", "b", "c"]), size=count)
            score = values @ weights + np.select([kind == "a", kind == "b"], [1.5, -1.5], 0)
            label = (score + rng.normal(scale=2.0, size=count) > 0).astype(np.int64)
            values[rng.random((count, FEATURES)) < 0.02] = np.nan
            frame = pd.DataFrame({f"f{i}": values[:, i] for i in range(FEATURES)})
            frame["kind"], frame["label"] = kind, label
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
    return rows


def decoded_size(path: Path) -> int:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))


def run_child(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, str]:
    """Run `command`; its wall time, peak resident memory (bytes) and output."""
    began = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed ({process.returncode}):\n{output[-3000:]}")
    return time.perf_counter() - began, usage.ru_maxrss * 1024, output


def pyarrow_loop(path: str, threads: int, most: int) -> None:
    """The hand-written contender (run in its own process by `--pyarrow-loop`)."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from omegaconf import OmegaConf

    sys.path.insert(0, str(ROOT / "src"))
    from trainlab.components.data.datasets import DataInfo
    from trainlab.components.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    info = DataInfo("bench", "binary", "features", (FEATURES + 3,), num_classes=2)
    model_cfg = OmegaConf.load(ROOT / "src/trainlab/configs/model/mlp.yaml")
    model_cfg.hidden_sizes = json.loads(HIDDEN)
    model = build_model(model_cfg, info, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    columns = [f"f{i}" for i in range(FEATURES)]
    rows, began = 0, time.perf_counter()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_SIZE):
        values = np.column_stack([batch.column(c).to_numpy(zero_copy_only=False) for c in columns])
        kind = batch.column("kind").to_numpy(zero_copy_only=False)
        one_hot = np.stack([kind == "a", kind == "b", kind == "c"], axis=1)
        inputs = torch.from_numpy(
            np.concatenate([np.nan_to_num(values), one_hot], axis=1).astype(np.float32)
        )
        targets = torch.from_numpy(batch.column("label").to_numpy())
        loss = loss_fn(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rows += len(targets)
        if rows >= most * BATCH_SIZE:
            break
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - began}))


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="trainlab-stream-bench-", dir=args.streaming_dir))
    try:
        return _run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the file is GBs: never leave it


def _run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    path = folder / "table.parquet"
    began = time.perf_counter()
    rows = write_table(path, args.streaming_gb * 1e9)
    decoded = decoded_size(path)
    print(
        f"streaming tables: {rows:,} rows, {decoded / 1e9:.2f} GB decoded, "
        f"{path.stat().st_size / 1e9:.2f} GB on disk "
        f"(written in {time.perf_counter() - began:.0f} s)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "scripts")])}
    batches = str(args.streaming_batches)
    threads = str(args.streaming_threads)
    trainlab = [
        sys.executable,
        str(ROOT / "train.py"),
        "data=csv",
        f"data.path={path}",
        "data.target=label",
        "data.streaming=true",
        f"data.cache_dir={folder / 'cache'}",
        f"data.batch_size={BATCH_SIZE}",
        f"model.hidden_sizes={HIDDEN}",
        "trainer.max_epochs=1",
        f"trainer.num_threads={threads}",
        "logger=none",
        "callbacks.early_stopping=null",
        f"paths.root_dir={folder / 'outputs'}",
        f"trainer.limit_train_batches={batches}",
        "data.val_fraction=0.05",
        "data.test_fraction=0.05",
        "+callbacks.bench_timer._target_=bench_streaming.TrainTimer",
    ]
    wall, trainlab_peak, output = run_child(trainlab, folder, env)
    fit = re.search(r"preprocessing fitted in ([\d.]+) s, cached in ([\d.]+) s", output)
    epoch = re.search(r"bench-train: (\d+) steps in ([\d.]+) s", output)
    split = re.search(r"train/val/test (\d+)/(\d+)/(\d+) rows", output)
    if not (fit and epoch and split):
        raise RuntimeError(f"could not read the figures from trainlab's log:\n{output[-3000:]}")
    train_rows, epoch_seconds = int(epoch.group(1)) * BATCH_SIZE, float(epoch.group(2))
    shutil.rmtree(folder / "cache", ignore_errors=True)
    hand = [sys.executable, __file__, "--pyarrow-loop", str(path), threads, batches]
    _, hand_peak, hand_output = run_child(hand, folder, env)
    loop = json.loads(hand_output.strip().splitlines()[-1])
    trainlab_rate = train_rows / epoch_seconds
    hand_rate = loop["rows"] / loop["seconds"]
    report = {
        "rows": rows,
        "decoded_bytes": decoded,
        "file_bytes": path.stat().st_size,
        "preprocessing_fit_s": float(fit.group(1)),
        "preprocessing_cache_s": float(fit.group(2)),
        "trainlab_epoch_s": epoch_seconds,
        "trainlab_train_rows": train_rows,
        "trainlab_rows_per_s": trainlab_rate,
        "trainlab_process_s": wall,
        "trainlab_peak_rss_bytes": trainlab_peak,
        "pyarrow_rows_per_s": hand_rate,
        "pyarrow_peak_rss_bytes": hand_peak,
        "rows_per_s_ratio": trainlab_rate / hand_rate,
        "peak_over_decoded": trainlab_peak / decoded,
        "threads": args.streaming_threads,
    }
    print(
        f"  preprocessing pass: fit {report['preprocessing_fit_s']:.1f} s, encode + cache "
        f"{report['preprocessing_cache_s']:.1f} s\n"
        f"  training rows/s over {train_rows:,} rows: trainlab {trainlab_rate:,.0f} "
        f"({epoch_seconds:.1f} s), pyarrow loop {hand_rate:,.0f}: "
        f"ratio {report['rows_per_s_ratio']:.2f} "
        "(bar: >= 0.8)\n"
        f"  peak memory: trainlab {trainlab_peak / 2**20:,.0f} MiB = "
        f"{report['peak_over_decoded']:.3f} x the decoded size (bar: < 0.25); pyarrow loop "
        f"{hand_peak / 2**20:,.0f} MiB"
    )
    return {"streaming": report}


if __name__ == "__main__" and sys.argv[1:2] == ["--pyarrow-loop"]:
    pyarrow_loop(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
