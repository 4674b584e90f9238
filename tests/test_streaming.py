"""Tables bigger than memory (data.streaming): the streamed preprocessing equals the
in-memory fit on the same rows, batches are a function of (seed, epoch) whatever the
workers, bad files get one line, and (slow) a table over a process's memory limit trains
to the in-memory metric, a SIGKILL mid-epoch resumes bit for bit, SIGTERM exits 143."""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import pets_table, read_metrics, train_cli, train_command, train_env, train_in_process
from stream_parts import memory_limit

from trainlab.app.predict import Predictor
from trainlab.app.predict_inputs import TableInput
from trainlab.components.data import streaming_batches
from trainlab.components.data.preprocessing import TablePreprocessor, build_transformer
from trainlab.components.data.streaming_batches import StreamingTable
from trainlab.components.data.streaming_source import TRAIN, choose_streaming, row_splits
from trainlab.components.data.tabular import load_table
from trainlab.errors import ConfigError, TrainlabError

SEED = 7


def streamed(path: Path, tmp_path: Path, **settings) -> StreamingTable:
    options = {"target": "label", "streaming": True, "cache_dir": str(tmp_path / "cache")}
    return load_table(SEED, str(path), **(options | settings))


# --- preprocessing: the same fit as in memory, on the same training rows ---------------------
@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"impute": "mean", "scaling": "minmax", "missing_indicator": True},
        pytest.param(
            {"impute": "most_frequent", "categorical_impute": "constant"},
            marks=pytest.mark.slow,
        ),
        pytest.param({"impute": "drop"}, marks=pytest.mark.slow),
    ],
    ids=["median-standard", "mean-minmax-indicator", "most_frequent-constant", "drop"],
)
def test_streamed_preprocessing_is_the_in_memory_fit_on_the_training_rows(
    tmp_path, settings
) -> None:
    table = pets_table(rows=300)
    table.loc[[5, 77, 150], "label"] = np.nan  # left out, keeping their row numbers
    path = tmp_path / "pets.csv"
    table.to_csv(path, index=False)
    data = streamed(path, tmp_path, chunk_rows=37, **settings)  # 9 chunks

    pre: TablePreprocessor = data.preprocessor
    features = pre.features(table, "t")
    keep = table["label"].notna().to_numpy()
    if settings.get("impute") == "drop":
        keep = keep & features.notna().all(axis=1).to_numpy()
    train = keep & (row_splits(SEED, np.arange(len(table)), 0.15, 0.15) == TRAIN)
    reference = build_transformer(
        ["id", "weight", "height"],
        ["color"],
        impute=settings.get("impute", "median"),
        knn_neighbors=5,
        missing_indicator=settings.get("missing_indicator", False),
        categorical_impute=settings.get("categorical_impute", "most_frequent"),
        scaling=settings.get("scaling", "standard"),
    ).fit(features[train])
    assert pre.feature_names == [str(n) for n in reference.get_feature_names_out()]
    # Medians are exact below SAMPLE_ROWS training rows; means and scales up to rounding.
    expected = reference.transform(features[keep]).astype(np.float32)
    assert np.abs(pre.transform(table[keep], "t") - expected).max() < 1e-5
    assert len(data.train) == train.sum()
    assert len(data.train) + len(data.val) + len(data.test) == keep.sum()
    cached = data.train.read(0, len(data.train))[0]
    assert np.abs(cached - expected[train[keep]]).max() < 1e-5
    # The run folder gets the same files as an in-memory run: predict reads them.
    data.save(tmp_path / "run")
    loaded = TablePreprocessor.load(tmp_path / "run")
    assert np.array_equal(loaded.transform(table[keep], "t"), pre.transform(table[keep], "t"))
    assert json.loads((tmp_path / "run" / "data_info.json").read_text())["class_names"] == [
        "cat",
        "dog",
    ]


def test_split_is_a_function_of_seed_and_row_number_with_the_asked_fractions() -> None:
    rows = np.arange(200_000)
    splits = row_splits(SEED, rows, 0.1, 0.2)
    assert abs((splits == 1).mean() - 0.1) < 0.005 and abs((splits == 2).mean() - 0.2) < 0.005
    assert np.array_equal(row_splits(SEED, rows[5000:6000], 0.1, 0.2), splits[5000:6000])
    assert not np.array_equal(row_splits(SEED + 1, rows, 0.1, 0.2), splits)
    folds = [row_splits(SEED, rows, 0.1, 0.2, fold=(k, 4)) for k in range(4)]
    assert all(np.array_equal(f == 2, splits == 2) for f in folds)  # one test split
    validated = np.sum([f == 1 for f in folds], axis=0)
    assert np.array_equal(validated, (splits != 2).astype(int))  # each row validates once


def test_regression_targets_and_npy_columns(tmp_path) -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(size=(500, 4))
    array[:, 3] = array[:, 0] * 3 + 10
    np.save(tmp_path / "table.npy", array)
    data = streamed(tmp_path / "table.npy", tmp_path, target="x3", chunk_rows=100)
    assert data.info.task == "regression" and data.info.input_shape == (3,)
    train = row_splits(SEED, np.arange(500), 0.15, 0.15) == TRAIN
    assert np.isclose(data.info.target_mean[0], array[train, 3].mean())
    assert np.isclose(data.info.target_std[0], array[train, 3].std())
    in_memory = load_table(SEED, str(tmp_path / "table.npy"), target="x3", streaming=False)
    assert in_memory.info.input_shape == (3,)
    # `trainlab predict input=new.npy` reads the same columns (the target may be there).
    rows = TableInput(data.preprocessor, {}).read(tmp_path / "table.npy", "input")
    assert data.preprocessor.transform(rows, "input").shape == (500, 3)


def test_auto_reads_a_small_file_whole_and_says_why(tmp_path, caplog) -> None:
    path = tmp_path / "pets.csv"
    pets_table(rows=50).to_csv(path, index=False)
    caplog.set_level("INFO", logger="trainlab")
    assert choose_streaming("auto", path) is False
    assert "data.streaming=auto reads it into memory: about 0 MiB decoded, x4 is under" in (
        caplog.text
    )
    assert choose_streaming(True, path) is True and choose_streaming(False, path) is False
    assert choose_streaming("auto", tmp_path / "missing.csv") is False  # the reader says why


# --- batches -------------------------------------------------------------------------------
@pytest.fixture
def numbered(tmp_path, monkeypatch) -> StreamingTable:
    """1000 rows whose first input is the row's id; blocks of 16 rows, buffers of 4 blocks."""
    monkeypatch.setattr(streaming_batches, "BLOCK_BYTES", 16 * 8)
    monkeypatch.setattr(streaming_batches, "BUFFER_BYTES", 4 * 16 * 8)
    rows = 1000
    table = pd.DataFrame({"id": np.arange(rows), "x": np.arange(rows) % 7})
    table["label"] = (table["x"] > 3).astype(int)
    table.to_parquet(tmp_path / "numbered.parquet")
    return streamed(tmp_path / "numbered.parquet", tmp_path, scaling="none", batch_size=30)


def ids_of(batches, epoch: int, start: int = 0) -> list[np.ndarray]:
    return [inputs[:, 0].long().numpy() for inputs, _ in batches.epoch(epoch, start)]


def test_epoch_order_is_a_seeded_shuffle_of_every_row_and_resumes_at_any_batch(numbered):
    batches = numbered.train_batches(seed=3)
    rows = len(numbered.train)
    first = ids_of(batches, 0)
    assert sorted(np.concatenate(first).tolist()) == sorted(
        numbered.train.read(0, rows)[0][:, 0].astype(int).tolist()
    )
    assert [len(b) for b in first] == [30] * (rows // 30) + [rows % 30] * (rows % 30 > 0)
    assert np.array_equal(np.concatenate(ids_of(batches, 0)), np.concatenate(first))
    assert not np.array_equal(np.concatenate(ids_of(batches, 1)), np.concatenate(first))
    # Rows of many blocks meet in a batch: the shuffle crosses the file.
    assert len({int(i) // 16 for i in first[0]}) > 4
    assert all(np.array_equal(a, b) for a, b in zip(ids_of(batches, 0, 5), first[5:], strict=True))
    cached_ids = numbered.train.read(0, rows)[0][:, 0].astype(int)
    assert np.array_equal(cached_ids[batches.row_numbers(0, 7)], first[7])
    # Evaluation reads the rows in file order.
    evaluation = numbered.eval_batches("val")
    assert np.all(np.diff(np.concatenate(ids_of(evaluation, 0))) > 0)


def test_worker_processes_do_not_change_the_batches(numbered) -> None:
    alone = numbered.train_batches(seed=3)
    numbered.num_workers = 2
    workers = numbered.train_batches(seed=3)
    for epoch in (0, 1):
        expected = list(alone.epoch(epoch, 2))
        got = list(workers.epoch(epoch, 2))
        assert len(got) == len(expected)
        for (a, b), (c, d) in zip(got, expected, strict=True):
            assert torch.equal(a, c) and torch.equal(b, d)


def test_several_processes_split_every_global_batch_and_evaluate_contiguous_parts(numbered):
    """Rank r of 3 takes rows [r*b, (r+1)*b) of each global batch of 3 x 30 rows (the
    single-process batches of size 90); evaluation gives each rank a contiguous part."""
    train, world = numbered.train, 3
    single = numbered._batches(train, 90, shuffle=True, seed=3)
    ranks = [
        numbered._batches(train, 30, shuffle=True, seed=3, sharding="batches", rank=r, world=3)
        for r in range(world)
    ]
    assert [len(r) for r in ranks] == [len(single)] * world
    parts = [ids_of(r, 1) for r in ranks]
    for index, expected in enumerate(ids_of(single, 1)):
        assert np.array_equal(np.concatenate([p[index] for p in parts]), expected)
    assert [len(p[0]) for p in parts] == [30, 30, 30]
    last = len(train) % 90  # the short last global batch, cut as evenly as it goes
    assert [len(p[-1]) for p in parts] == [-(-(last - r) // world) for r in range(world)]
    assert np.array_equal(ids_of(ranks[2], 1, 4)[0], parts[2][4])  # resumes mid-epoch
    whole = np.concatenate(ids_of(numbered.eval_batches("val"), 0))
    evaluated = [
        np.concatenate(ids_of(numbered._batches(numbered.val, 7, rank=r, world=world), 0))
        for r in range(world)
    ]
    assert np.array_equal(np.concatenate(evaluated), whole)
    assert [len(e) for e in evaluated] == [len(p) for p in np.array_split(whole, world)]


# --- bad input -----------------------------------------------------------------------------
def one_line(error: BaseException) -> str:
    (line,) = str(error).splitlines()
    assert len(line) < 300, line
    return line


def test_bad_files_and_rows_are_one_line_naming_the_file_and_row(tmp_path, caplog) -> None:
    table = pets_table(rows=300)
    good = tmp_path / "pets.parquet"
    table.to_parquet(good)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(TrainlabError) as ex:
        streamed(corrupt, tmp_path)
    assert f"data.path={corrupt}: cannot read the Parquet file" in one_line(ex.value)

    text = tmp_path / "text_in_numbers.csv"
    table.astype({"weight": object}).assign(
        weight=lambda t: t["weight"].where(t.index != 250, "heavy")
    ).to_csv(text, index=False)
    with pytest.raises(TrainlabError) as ex:
        streamed(text, tmp_path, chunk_rows=100)
    assert "'heavy' (data row 251)" in one_line(ex.value)

    ragged = tmp_path / "ragged.csv"
    lines = good.with_suffix(".csv")
    table.to_csv(lines, index=False)
    content = lines.read_text().splitlines()
    content[201] += ",extra"
    ragged.write_text("\n".join(content) + "\n")
    with pytest.raises(TrainlabError) as ex:
        streamed(ragged, tmp_path, chunk_rows=50)
    assert "line 202 has 6 fields but the header has 5" in one_line(ex.value)

    with pytest.raises(TrainlabError) as ex:
        streamed(good, tmp_path, target="lable")
    assert "did you mean 'label'" in one_line(ex.value)
    with pytest.raises(TrainlabError) as ex:
        streamed(good, tmp_path, target="label", impute="knn")
    assert "data.impute=knn needs the whole table" in one_line(ex.value)
    empty = tmp_path / "no_labels.csv"
    table.assign(label=np.nan).to_csv(empty, index=False)
    with pytest.raises(TrainlabError) as ex:
        streamed(empty, tmp_path, chunk_rows=64)
    assert "no row has a 'label' value" in one_line(ex.value)
    ids = tmp_path / "ids.csv"
    table.assign(name=[f"n{i}" for i in range(300)]).to_csv(ids, index=False)
    # An ID column (one text per row) is left out with a note, as in memory.
    caplog.set_level("INFO", logger="trainlab")
    table_with_ids = streamed(ids, tmp_path, chunk_rows=64, max_categories=150)
    assert "column 'name'" in caplog.text and "it is left out" in caplog.text
    assert table_with_ids.info.input_shape == (6,)


def test_bad_npy_files_are_one_line(tmp_path) -> None:
    np.save(tmp_path / "cube.npy", np.zeros((4, 3, 2)))
    with pytest.raises(TrainlabError) as ex:
        streamed(tmp_path / "cube.npy", tmp_path, target="x0")
    assert "4x3x2" in one_line(ex.value) and "2-D" in str(ex.value)
    np.save(tmp_path / "table.npy", np.ones((100, 3)))
    cut = tmp_path / "cut.npy"
    cut.write_bytes((tmp_path / "table.npy").read_bytes()[:-100])
    with pytest.raises(TrainlabError) as ex:
        streamed(cut, tmp_path, target="x2")
    assert "shorter than its header says" in one_line(ex.value)
    with pytest.raises(ConfigError) as ex:
        streamed(tmp_path / "table.npy", tmp_path, target=None)
    assert "data.target=x2" in one_line(ex.value) and "x0, x1" in str(ex.value)


def test_a_bad_streamed_file_exits_2_with_one_line_and_no_run_folder(tmp_path) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    result = train_in_process(
        "data=csv",
        "data.path=broken.parquet",
        "data.target=y",
        "data.streaming=true",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "broken.parquet" in line and "Parquet" in line
    assert not (tmp_path / "outputs" / "runs" / "in-process" / "checkpoints").exists()


# --- a streamed run end to end (in process) -------------------------------------------------
def test_a_streamed_run_trains_predicts_and_reuses_its_cache(
    run_experiment, tmp_path, caplog
) -> None:
    path = tmp_path / "pets.csv"
    table = pets_table(rows=400)
    table.to_csv(path, index=False)
    cache = tmp_path / "cache"
    caplog.set_level("INFO", logger="trainlab")
    objective, run_dir = run_experiment(
        "data=csv",
        f"data.path={path}",
        "data.target=label",
        "data.streaming=true",
        f"data.cache_dir={cache}",
        "trainer.max_epochs=3",
        "logger=none",
    )
    assert objective > 0.75
    assert "trainer.loader=auto: dataloader (a streamed table: its batches are read" in caplog.text
    assert "sliced in place" not in caplog.text
    assert read_metrics(run_dir)["test"]["test/acc"] > 0.75
    predictions = Predictor.load(run_dir).predict(table)
    assert len(predictions) == 400
    (folder,) = cache.iterdir()
    again = load_table(42, str(path), target="label", streaming=True, cache_dir=str(cache))
    assert again.directory == folder and "reusing the preprocessed cache" in caplog.text


# --- slow: the bars ----------------------------------------------------------------
def write_big_table(path: Path, rows: int, seed: int = 0) -> None:
    """A learnable table: 24 numbers (2 % gaps), a category, a 0/1 label; in row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    weights = np.random.default_rng(0).normal(size=24)  # one relation for every file
    fields = [pa.field(f"f{i}", pa.float64()) for i in range(24)]
    schema = pa.schema([*fields, ("kind", pa.string()), ("label", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 200_000):
            count = min(200_000, rows - start)
            values = rng.normal(size=(count, 24))
            kind = rng.choice(np.array(["a", "b", "c"]), size=count)
            score = values @ weights + np.select([kind == "a", kind == "b"], [1.5, -1.5], 0)
            label = (score + rng.normal(scale=2.0, size=count) > 0).astype(np.int64)
            values[rng.random((count, 24)) < 0.02] = np.nan
            frame = pd.DataFrame({f"f{i}": values[:, i] for i in range(24)})
            frame["kind"], frame["label"] = kind, label
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))


COMMON = (
    "data=csv",
    "data.target=label",
    "trainer.max_epochs=1",
    "logger=none",
    "data.batch_size=512",
    "trainer.limit_train_batches=270",
    "trainer.num_threads=1",
    "callbacks.early_stopping=null",
)


@pytest.mark.slow
def test_a_table_over_the_memory_limit_trains_to_the_in_memory_metric(tmp_path) -> None:
    """The bar: a Parquet file whose decoded size is over the memory limit of the training
    process (a cgroup: memory.limit_in_bytes, or memory.max on cgroup v2) trains with
    data.streaming=auto to the test accuracy of the in-memory path on a copy small enough
    to fit, within 0.01. Both train the same number of steps (trainer.limit_train_batches)
    on rows of the same distribution."""
    big, small = tmp_path / "big.parquet", tmp_path / "small.parquet"
    limit = 1_500_000_000
    with memory_limit(limit) as group:
        if group is None:
            pytest.skip("no writable cgroup memory controller here: cannot limit a process")
        write_big_table(big, 10_500_000)  # 26 columns: about 2.18 GB decoded
        write_big_table(small, 200_000, seed=1)
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(big).metadata
        decoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        assert decoded > limit
        env = train_env() | {"MALLOC_ARENA_MAX": "2"}
        command = [*group.prefix, *train_command(*COMMON, f"data.path={big}", cwd=tmp_path)]
        result = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=5400
        )
        child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(
            f"decoded {decoded / 2**20:,.0f} MiB, limit {limit / 2**20:,.0f} MiB, "
            f"peak RSS {child_rss / 2**20:,.0f} MiB, "
            f"group peak {group.peak / 2**20:,.0f} MiB (page cache included), "
            f"OOM kills {group.oom_kills}"
        )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data.streaming=auto streams it in chunks" in result.stdout + result.stderr
    (streamed_run,) = (tmp_path / "outputs" / "runs").iterdir()
    (tmp_path / "small").mkdir()
    in_memory = train_cli(*COMMON, f"data.path={small}", cwd=tmp_path / "small")
    assert in_memory.returncode == 0, in_memory.stderr[-2000:]
    assert "data.streaming=auto reads it into memory" in in_memory.stdout + in_memory.stderr
    (memory_run,) = (tmp_path / "small" / "outputs" / "runs").iterdir()
    streamed_acc = read_metrics(streamed_run)["test"]["test/acc"]
    memory_acc = read_metrics(memory_run)["test"]["test/acc"]
    print(f"test accuracy: streamed {streamed_acc:.4f}, in memory {memory_acc:.4f}")
    assert abs(streamed_acc - memory_acc) <= 0.01, (streamed_acc, memory_acc)


KILL = ("+callbacks.kill._target_=stream_parts.KillAtStep",)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_auto_ends_bitwise_as_an_unstopped_run(tmp_path) -> None:
    path = tmp_path / "pets.parquet"
    pets_table(rows=3000).to_parquet(path)
    command = (
        "data=csv",
        f"data.path={path}",
        "data.target=label",
        "data.streaming=true",
        "data.num_workers=2",
        "data.batch_size=32",
        "trainer.max_epochs=2",
        "logger=none",
        "callbacks.model_checkpoint.every_n_steps=10",
        *KILL,
    )
    (tmp_path / "reference").mkdir()
    reference = train_cli(*command, cwd=tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-2000:]
    env = train_env() | {"TRAINLAB_TEST_KILL_AT_STEP": "85"}  # epoch 2 has 66 steps
    cwd = tmp_path / "killed"
    cwd.mkdir()
    killed = subprocess.run(
        train_command(*command, cwd=cwd),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9
    resumed = train_cli(*command, "resume=auto", cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (done,) = (cwd / "outputs" / "runs").iterdir()
    (ref,) = (tmp_path / "reference" / "outputs" / "runs").iterdir()
    drop = ("wall_time_s", "best_checkpoint")
    assert {k: v for k, v in read_metrics(done).items() if k not in drop} == {
        k: v for k, v in read_metrics(ref).items() if k not in drop
    }
    weights = [
        torch.load(r / "checkpoints" / "last.pt", weights_only=True)["model"] for r in (done, ref)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_sigterm_saves_and_exits_143_then_resumes(tmp_path) -> None:
    path = tmp_path / "pets.csv"
    pets_table(rows=2000).to_csv(path, index=False)
    command = (
        "data=csv",
        f"data.path={path}",
        "data.target=label",
        "data.streaming=true",
        "data.num_workers=2",
        "trainer.max_epochs=2",
        "logger=none",
        "+callbacks.fault._target_=fault_parts.SignalAt",
    )
    env = train_env() | {"TRAINLAB_TEST_SIGNAL_AT": "on_epoch_end:SIGTERM"}
    stopped = subprocess.run(
        train_command(*command, cwd=tmp_path),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    (line,) = stopped.stderr.strip().splitlines()
    assert "resume=auto" in line
    resumed = train_cli(*command, "resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


@pytest.mark.slow
def test_two_processes_train_a_streamed_table_like_one(tmp_path) -> None:
    """trainer.devices=2 on a streamed table: each process takes half of every global batch
    of 2 x 16 rows, so it trains as one process on batches of 32 (gradients averaged over
    the same rows; the weights differ only by float rounding and dropout masks)."""
    path = tmp_path / "pets.parquet"
    pets_table(rows=2000).to_parquet(path)
    common = (
        "data=csv",
        f"data.path={path}",
        "data.target=label",
        "data.streaming=true",
        f"data.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=2",
        "logger=none",
        "callbacks.early_stopping=null",
    )
    (tmp_path / "two").mkdir()
    two = train_cli(*common, "trainer.devices=2", "data.batch_size=16", cwd=tmp_path / "two")
    assert two.returncode == 0, two.stderr[-2000:]
    (tmp_path / "one").mkdir()
    one = train_cli(*common, "data.batch_size=32", cwd=tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    (two_run,) = (tmp_path / "two" / "outputs" / "runs").iterdir()
    (one_run,) = (tmp_path / "one" / "outputs" / "runs").iterdir()
    two_acc = read_metrics(two_run)["test"]["test/acc"]
    one_acc = read_metrics(one_run)["test"]["test/acc"]
    assert two_acc > 0.75 and abs(two_acc - one_acc) <= 0.03, (two_acc, one_acc)
