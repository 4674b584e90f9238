"""Bad data files end in one line naming the column (or the file) and the fix.

Most cases are checked in-process on the loaders (`load_table`, `load_text`); a few run
through the command's own error path for the contract itself: exit status 2, one line,
no traceback, no run folder left behind.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import train_in_process

from trainlab.components.data.tabular import load_table
from trainlab.components.data.text_datasets import load_text
from trainlab.errors import TrainlabError, one_line

ROWS = 80


def base(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(size=rows).round(3),
            "b": rng.normal(size=rows).round(3),
            "color": rng.choice(["red", "blue"], size=rows),
            "y": rng.choice(["cat", "dog"], size=rows),
        }
    )


def csv(tmp_path: Path, frame: pd.DataFrame, name: str = "t.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def raw(tmp_path: Path, content: bytes | str, name: str = "t.csv") -> str:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def refused(words: str, **options) -> str:
    """The one line `load_table(**options)` raises; it must contain `words`."""
    options.setdefault("target", "y")
    with pytest.raises(TrainlabError) as caught:
        load_table(seed=0, **options)
    line = one_line(caught.value)
    assert words in line, line
    assert "\n" not in line and len(line.replace(str(options.get("path")), "P")) < 220, line
    return line


# --- the file itself --------------------------------------------------------------------------
def test_repeated_column_names_are_refused_not_renamed(tmp_path: Path) -> None:
    path = raw(tmp_path, "a,b,a,y\n1,2,3,cat\n4,5,6,dog\n")
    refused("the header names column(s) 'a' more than once; give every column", path=path)
    path = raw(tmp_path, "a,b,a,b,y\n1,2,3,4,cat\n", name="two.csv")
    refused("column(s) 'a', 'b' more than once", path=path)


def test_a_column_named_like_a_renamed_one_is_fine(tmp_path: Path) -> None:
    frame = base().rename(columns={"b": "a.1"})
    bundle = load_table(seed=0, path=csv(tmp_path, frame), target="y")
    assert bundle.preprocessor.numeric == ["a", "a.1"]


def test_ragged_rows_name_the_line(tmp_path: Path) -> None:
    path = raw(tmp_path, "a,b,y\n1,2,cat\n3,4,dog,extra\n5,6,cat\n")
    refused("line 3 has 4 fields but the header has 3; fix that row", path=path)


def test_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = raw(tmp_path, b"a,b,y\n1,caf\xe9,cat\n2,tea,dog\n")
    refused("is not UTF-8 text (byte 0xe9 at offset 11); save it as UTF-8", path=path)


@pytest.mark.parametrize(
    ("content", "name"),
    [
        ("", "empty.csv"),
        ("a,b,y\n", "header.csv"),
        ("\n\n", "blank.csv"),
    ],
)
def test_empty_files(tmp_path: Path, content: str, name: str) -> None:
    words = {
        "empty.csv": "the file is empty",
        "header.csv": "the file has columns (a, b, y) but no rows",
        "blank.csv": "the file holds no columns",
    }[name]
    refused(words, path=raw(tmp_path, content, name))


def test_a_folder_or_an_unknown_type(tmp_path: Path) -> None:
    (tmp_path / "data.csv").mkdir()
    refused("is a folder, not a file; check the path", path=str(tmp_path / "data.csv"))
    refused("unsupported file type (.xlsx)", path=raw(tmp_path, "x", "t.xlsx"))


def test_byte_order_mark_and_other_separators(tmp_path: Path, caplog) -> None:
    frame = base()
    text = frame.to_csv(index=False)
    expected = load_table(seed=0, path=csv(tmp_path, frame), target="y")
    for name, content in [
        ("bom.csv", "\ufeff" + text),
        ("semicolon.csv", text.replace(",", ";")),
        ("tabs.csv", text.replace(",", "\t")),
        ("pipes.csv", text.replace(",", "|")),
    ]:
        with caplog.at_level(logging.INFO, logger="trainlab"):
            bundle = load_table(seed=0, path=raw(tmp_path, content, name), target="y")
        assert bundle.preprocessor.numeric == ["a", "b"]
        assert bundle.train.inputs.numpy().tobytes() == expected.train.inputs.numpy().tobytes()
    assert "is separated by ';', not commas; read so" in caplog.text


def test_many_columns_keep_the_line_short(tmp_path: Path) -> None:
    frame = pd.DataFrame(np.zeros((5, 3000)), columns=[f"feature_{i}" for i in range(3000)])
    path = csv(tmp_path, frame.assign(y=[0, 1, 0, 1, 0]))
    line = refused("no column 'label'", path=path, target="label")
    assert "(3001 in all)" in line


# --- the target -------------------------------------------------------------------------------
@pytest.mark.parametrize("fill", [np.nan, "", "   "])
def test_an_empty_target_column(tmp_path: Path, fill) -> None:
    path = csv(tmp_path, base().assign(y=fill))
    refused(f"data.target='y' has no values in data.path={path} (all {ROWS} rows", path=path)


def test_a_target_with_some_gaps_leaves_those_rows_out(tmp_path: Path, caplog) -> None:
    frame = base()
    frame.loc[[3, 9, 20], "y"] = np.nan
    frame.loc[30, "y"] = "  "
    with caplog.at_level(logging.INFO, logger="trainlab"):
        bundle = load_table(seed=0, path=csv(tmp_path, frame), target="y")
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == ROWS - 4
    assert "4 row(s) without a 'y' value are left out" in caplog.text
    assert bundle.info.class_names == ["cat", "dog"]


def test_one_row_per_class_is_a_short_line_with_counts(tmp_path: Path) -> None:
    frame = base(400).assign(y=[f"user-{i}" for i in range(400)])
    line = refused(
        "data.target='y' has 400 classes, 400 of them with a single row (e.g. 'user-0',",
        path=csv(tmp_path, frame),
    )
    assert "is it an ID column?" in line and "data.task=regression" in line


def test_a_few_single_row_classes_are_counted(tmp_path: Path) -> None:
    frame = base(200)
    frame.loc[:11, "y"] = [f"rare-{i}" for i in range(12)]
    refused("has 14 classes, 12 of them with a single row", path=csv(tmp_path, frame))


def test_text_labels_with_stray_spaces_are_one_class(tmp_path: Path) -> None:
    frame = base()
    frame["y"] = [f" {label}" if i % 3 else f"{label}  " for i, label in enumerate(frame["y"])]
    bundle = load_table(seed=0, path=csv(tmp_path, frame), target="y")
    assert bundle.info.class_names == ["cat", "dog"]


@pytest.mark.parametrize(
    ("values", "task", "classes"),
    [
        ([0.0, 1.0], "binary", ["0", "1"]),
        ([1.0, 2.0, 3.0, 4.0, 5.0], "multiclass", ["1", "2", "3", "4", "5"]),
        ([0.5, 1.0, 7.25], "regression", []),
    ],
)
def test_whole_number_floats_are_classes(tmp_path: Path, caplog, values, task, classes) -> None:
    frame = base()
    frame["y"] = [values[i % len(values)] for i in range(ROWS)]
    with caplog.at_level(logging.INFO, logger="trainlab"):
        bundle = load_table(seed=0, path=csv(tmp_path, frame), target="y")
    assert bundle.info.task == task and bundle.info.class_names == classes
    assert "set data.task=classification|regression to change" in caplog.text


def test_npz_without_the_target_array_lists_its_arrays(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    np.savez(path, X=np.zeros((10, 3)), labels=np.arange(10) % 2)
    line = refused(
        "has no target array 'y' (arrays: X, labels); name it with data.npz_target=",
        path=str(path),
        target=None,
    )
    assert "x2" not in line  # no feature column suggested as the target
    np.savez(tmp_path / "none.npz")
    refused("the .npz file holds no arrays", path=str(tmp_path / "none.npz"), target=None)


# --- feature values ---------------------------------------------------------------------------
@pytest.mark.parametrize(("cell", "shown"), [("inf", "inf"), ("-inf", "-inf")])
def test_infinite_numbers_name_the_column(tmp_path: Path, cell: str, shown: str) -> None:
    frame = base().astype({"b": object})
    frame.loc[[4, 10], "b"] = cell
    path = csv(tmp_path, frame)
    refused(
        f"column 'b' of data.path={path} holds 2 infinite value(s) ({shown} in data row 5); "
        "replace them with numbers, or empty the cells",
        path=path,
    )


def test_an_infinite_regression_target(tmp_path: Path) -> None:
    frame = base().assign(y=np.linspace(0.5, 9.5, ROWS))
    frame.loc[7, "y"] = np.inf
    refused("column 'y' of data.path=", path=csv(tmp_path, frame), task="regression")


def test_infinite_values_in_new_rows_are_refused_too(tmp_path: Path) -> None:
    bundle = load_table(seed=0, path=csv(tmp_path, base()), target="y")
    rows = base(3).drop(columns="y").assign(a=[1.0, -np.inf, 0.0])
    with pytest.raises(TrainlabError, match=r"column 'a' of input=new\.csv holds 1 infinite"):
        bundle.preprocessor.transform(rows, "input=new.csv")


def test_constant_features(tmp_path: Path, caplog) -> None:
    frame = base().assign(a=1.0, b=2.0, color="red")
    refused("every feature column of data.path=", path=csv(tmp_path, frame))
    with caplog.at_level(logging.INFO, logger="trainlab"):
        load_table(seed=0, path=csv(tmp_path, base().assign(b=0.0), "one.csv"), target="y")
    assert "column(s) b of data.path=" in caplog.text and "are constant" in caplog.text


@pytest.mark.parametrize(
    ("dates", "first"),
    [
        (pd.date_range("2020-01-01", periods=ROWS, freq="D").strftime("%Y-%m-%d"), 2020),
        (pd.date_range("2021-03-14", periods=ROWS, freq="5h").strftime("%Y-%m-%dT%H:%M:%S"), 2021),
        (pd.date_range("2019-12-25", periods=ROWS, freq="D").strftime("%d/%m/%Y"), 2019),
    ],
)
def test_dates_become_numbers(tmp_path: Path, caplog, dates, first: int) -> None:
    frame = base().assign(when=dates)
    with caplog.at_level(logging.INFO, logger="trainlab"):
        bundle = load_table(
            seed=0, path=csv(tmp_path, frame), target="y", scaling="none", val_fraction=0.2
        )
    assert "date column(s) when of data.path=" in caplog.text
    names = bundle.preprocessor.feature_names
    parts = ["year", "month", "day", "weekday", "days", "month_sin", "month_cos"]
    parts += ["weekday_sin", "weekday_cos"] + (["hour", "hour_sin", "hour_cos"] * (first == 2021))
    assert [n for n in names if "when" in n] == [f"numeric__when_{p}" for p in parts]
    assert len(names) == 2 + len(parts) + 2  # a, b, the date's numbers, color's two categories
    typed = bundle.preprocessor.features(frame, "t")
    stamp = pd.Timestamp(pd.to_datetime(frame["when"].iloc[0], dayfirst=first == 2019))
    assert typed["when_year"].iloc[0] == first == stamp.year
    assert typed["when_weekday"].iloc[0] == stamp.weekday()
    assert (
        typed["when_days"].iloc[0] == (stamp - pd.Timestamp("1970-01-01")).total_seconds() / 86400
    )


def test_a_declared_category_stays_text_and_a_parquet_datetime_is_a_date(tmp_path: Path) -> None:
    dates = pd.date_range("2020-01-01", periods=ROWS, freq="W")
    frame = base().assign(when=dates.strftime("%Y-%m-%d"))
    bundle = load_table(
        seed=0, path=csv(tmp_path, frame), target="y", categorical=["when"], max_categories=500
    )
    assert "when" in bundle.preprocessor.categorical
    path = tmp_path / "t.parquet"
    base().assign(when=dates).to_parquet(path)
    assert load_table(seed=0, path=str(path), target="y").preprocessor.dates == {"when": ""}


def test_an_id_column_is_left_out_and_many_repeated_texts_are_refused(
    tmp_path: Path, caplog
) -> None:
    frame = base(300).assign(user=[f"u{i:04d}" for i in range(300)])
    path = csv(tmp_path, frame)
    with caplog.at_level(logging.INFO, logger="trainlab"):
        left_out = load_table(seed=0, path=path, target="y")
    assert left_out.info.input_shape == (4,) and "user" not in left_out.preprocessor.categorical
    assert (
        f"note: column 'user' of data.path={path} has 300 distinct texts in 300 rows (an ID or "
        "a name?); it is left out: list it in data.categorical=[user] to one-hot encode it anyway"
    ) in caplog.text
    kept = load_table(seed=0, path=path, target="y", categorical=["user"])
    assert kept.info.input_shape[0] > 200
    free_text = base(300).assign(note=[f"note {i % 120}" for i in range(300)])
    path = csv(tmp_path, free_text, "f.csv")
    refused(
        f"column 'note' of data.path={path} has 120 distinct texts (free text?), over "
        "data.max_categories=100: leave it out with data.drop_columns=[note], raise "
        "data.max_categories, or list it in data.categorical=[note]",
        path=path,
    )


def test_mixed_dates_and_words_are_not_dates(tmp_path: Path) -> None:
    frame = base().assign(when=["2020-01-01" if i % 2 else "unknown" for i in range(ROWS)])
    bundle = load_table(seed=0, path=csv(tmp_path, frame), target="y")
    assert bundle.preprocessor.dates == {} and "when" in bundle.preprocessor.categorical


# --- text files (data=text) -------------------------------------------------------------------
def texts(rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    label = rng.choice(["good", "bad"], size=rows)
    return pd.DataFrame({"text": [f"this is {w} stuff" for w in label], "label": label})


def text_refused(words: str, path: str, **options) -> str:
    with pytest.raises(TrainlabError) as caught:
        load_text(seed=0, path=path, **options)
    line = one_line(caught.value)
    assert words in line and "\n" not in line and len(line.replace(path, "P")) < 220, line
    return line


@pytest.mark.parametrize("fill", ["", "   ", "\t"])
def test_an_empty_text_column_is_refused(tmp_path: Path, fill: str) -> None:
    path = csv(tmp_path, texts().assign(text=fill))
    text_refused(
        "data.text_column='text' of data.path=" + path + " holds no text (all 60 rows are "
        "empty or spaces); point data.text_column at the column of texts",
        path,
    )


def test_a_few_empty_texts_are_fine(tmp_path: Path, caplog) -> None:
    frame = texts()
    frame.loc[[2, 5], "text"] = ""
    with caplog.at_level(logging.INFO, logger="trainlab"):
        bundle = load_text(seed=0, path=csv(tmp_path, frame))
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 60
    assert "note: 2 of 60 rows of data.path=" in caplog.text


def test_text_files_with_bad_bytes_or_headers(tmp_path: Path) -> None:
    text_refused("is not UTF-8 text", raw(tmp_path, b"text,label\ncaf\xe9,good\n"))
    text_refused("'text' more than once", raw(tmp_path, "text,text,label\na,b,c\n", "d.csv"))
    text_refused("line 3 has 3 fields", raw(tmp_path, "text,label\na,b\nc,d,e\n", "r.csv"))
    frame = texts().assign(label=[f"id{i}" for i in range(60)])
    line = text_refused(
        "data.label_column='label' has 60 classes, 60 of them with a single row",
        csv(tmp_path, frame, "ids.csv"),
    )
    assert "check data.label_column" in line


# --- the contract, through the command's own error path ---------------------------------------
CONTRACT = [
    ("a,a,y\n1,2,cat\n3,4,dog\n", "the header names column(s) 'a' more than once"),
    ("a,b,y\n" + "1,inf,cat\n3,4,dog\n" * 10, "column 'b' of data.path="),
    ("a,b,y\n1,2,\n3,4,\n", "data.target='y' has no values"),
]


@pytest.mark.parametrize(("content", "words"), CONTRACT, ids=["duplicate", "inf", "no-target"])
def test_one_line_exit_2_and_no_run_folder(tmp_path: Path, content: str, words: str) -> None:
    path = raw(tmp_path, content)
    result = train_in_process(
        "data=csv", f"data.path={path}", "data.target=y", "trainer.max_epochs=1", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and words in line, line
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "outputs" / "runs").exists() or not any(
        (tmp_path / "outputs" / "runs").iterdir()
    )


def test_an_empty_text_column_through_the_command(tmp_path: Path) -> None:
    path = csv(tmp_path, texts().assign(text=" "))
    result = train_in_process("data=text", f"data.path={path}", "model=mlp", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "holds no text (all 60 rows are empty or spaces)" in line


# --- batch norm and a last training batch of one row ------------------------------------------
def test_a_single_row_last_batch_is_left_out_only_when_asked() -> None:
    import torch

    from trainlab.components.data.loaders import LoaderBatches
    from trainlab.engine.batches import TensorBatches

    inputs, targets = torch.arange(17.0).reshape(17, 1), torch.arange(17)
    options = {"shuffle": True, "seed": 5}
    kept = TensorBatches(inputs, targets, 8, **options)
    dropped = TensorBatches(inputs, targets, 8, drop_last_single=True, **options)
    assert (len(kept), len(dropped), dropped.drops_single) == (3, 2, True)
    streamed = LoaderBatches(
        inputs, targets, 8, device=torch.device("cpu"), drop_last_single=True, **options
    )
    for epoch in range(3):
        full = [t.tolist() for _, t in kept.epoch(epoch)]
        got = [t.tolist() for _, t in dropped.epoch(epoch)]
        assert got == full[:2] and [len(b) for b in full] == [8, 8, 1]
        assert [t.tolist() for _, t in streamed.epoch(epoch)] == got
        assert [t.tolist() for _, t in dropped.epoch(epoch, start=1)] == got[1:]  # resumed
    # Two rows left over, or none: nothing is dropped.
    for rows in (18, 16):
        batches = TensorBatches(
            inputs[:0].new_zeros(rows, 1), targets.new_zeros(rows), 8, drop_last_single=True
        )
        assert not batches.drops_single and len(batches) == -(-rows // 8)


def test_batch_norm_trains_when_the_last_batch_has_one_row(run_experiment, caplog) -> None:
    # The digits' training split has 1257 rows: batches of 8 leave one row over.
    with caplog.at_level(logging.INFO, logger="trainlab"):
        _, run_dir = run_experiment(
            "model.batch_norm=true",
            "data.batch_size=8",
            "trainer.max_epochs=1",
            "trainer.device=cpu",
            "model.hidden_sizes=[16]",
        )
    assert (run_dir / "metrics.json").is_file()
    assert caplog.text.count("leave a last batch of one row, which batch norm cannot") == 1


def test_batch_norm_cross_validation_folds(run_experiment, caplog) -> None:
    # 400 rows: 340 outside the test split; 2 folds train on 170, batches of 13 leave 1.
    with caplog.at_level(logging.INFO, logger="trainlab"):
        _, run_dir = run_experiment(
            "data=synthetic",
            "data.n_samples=400",
            "data.test_fraction=0.15",
            "data.batch_size=13",
            "model.batch_norm=true",
            "model.hidden_sizes=[16]",
            "cv.folds=2",
            "trainer.max_epochs=1",
            "trainer.device=cpu",
        )
    assert caplog.text.count("which batch norm cannot train on") == 2  # once per fold
    assert (run_dir / "metrics.json").is_file()


def test_a_loss_for_the_other_task_names_data_task(tmp_path: Path) -> None:
    path = csv(tmp_path, base().assign(y=np.linspace(0.25, 9.75, ROWS)))
    result = train_in_process("data=csv", f"data.path={path}", "data.target=y", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "use loss=mse, loss=mae or loss=huber" in line
    assert "data.task=classification|regression sets the task" in line


def test_empty_header_names_are_left_to_pandas(tmp_path: Path) -> None:
    frame = base()
    path = tmp_path / "indexed.csv"
    frame.to_csv(path)  # a saved index: an empty first header name
    bundle = load_table(seed=0, path=str(path), target="y", drop_columns=["Unnamed: 0"])
    assert bundle.preprocessor.numeric == ["a", "b"]
    refused("'a' more than once", path=raw(tmp_path, ",,a,a,y\n1,2,3,4,cat\n", "e.csv"))


def test_batch_norm_with_a_dropped_row_resumes_bit_for_bit(run_experiment) -> None:
    import torch

    from trainlab.engine.checkpoint import load_checkpoint

    # 1257 rows in batches of 8: 157 steps an epoch, the 158th batch (one row) left out.
    common = (
        "model.batch_norm=true",
        "model.hidden_sizes=[16]",
        "data.batch_size=8",
        "trainer.max_epochs=2",
        "trainer.device=cpu",
        "callbacks.model_checkpoint.every_n_steps=100",
        "callbacks.model_checkpoint.keep_last=10",
    )
    _, reference = run_experiment(*common)
    # A copy of the run as a process killed after step 200 would have left it.
    stopped = Path(shutil.copytree(reference, reference.parent / "stopped"))
    (stopped / "metrics.json").unlink()
    middle = stopped / "checkpoints" / "step_200.pt"  # epoch 2, batch 43
    assert load_checkpoint(middle)["position"]["global_step"] == 200
    _, new_folder = run_experiment(*common, f"resume={middle}")
    resumed = new_folder if (new_folder / "checkpoints").is_dir() else stopped
    a = load_checkpoint(reference / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["position"]["global_step"] == b["position"]["global_step"] == 2 * 157
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
