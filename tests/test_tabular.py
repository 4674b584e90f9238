"""Your own tables (data=csv): reading, column kinds, preprocessing, prediction, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config, pets_table, read_metrics, script_cli, train_in_process
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.metrics import r2_score
from sklearn.preprocessing import MinMaxScaler

from trainlab.app.config import validate
from trainlab.app.experiment import build, run
from trainlab.app.predict import Predictor, predict_command
from trainlab.components.data.datasets import DataBundle
from trainlab.components.data.preprocessing import TablePreprocessor, categorical_column
from trainlab.components.data.tabular import encode_target, load_table
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.errors import ConfigError, TrainlabError, one_line

NUMERIC = ["id", "weight", "height"]  # pets_table's number columns, first in the inputs
# Rows the model has never seen: gaps in numbers and category, and an unseen category.
NEW_ROWS = pd.DataFrame(
    {
        "id": [1000, 1001, 1002, 1003],
        "weight": [1.5, np.nan, -1.2, 0.3],
        "height": [0.5, 0.2, np.nan, -0.4],
        "color": ["red", "purple", None, "blue"],
    }
)


def write(table: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)
    return path


def ids(split) -> np.ndarray:
    """The `id` of each row of a split loaded with scaling=none (its first input)."""
    return split.inputs[:, 0].long().numpy()


def splits(bundle: DataBundle):
    return (bundle.train, bundle.val, bundle.test)


# --- training and prediction ---------------------------------------------------------------
def test_mixed_table_trains_and_predict_applies_the_same_preprocessing(
    run_experiment, tmp_path
) -> None:
    overrides = ("data=csv", f"data.path={write(pets_table(), tmp_path / 'pets.csv')}")
    overrides += ("data.target=label",)
    _, run_dir = run_experiment(*overrides)
    metrics = read_metrics(run_dir)
    assert metrics["task"] == "binary"
    assert metrics["test"]["test/acc"] >= 0.85  # 0.917 measured; chance is about 0.5
    assert (run_dir / "preprocessing.json").is_file() and (run_dir / "data_info.json").is_file()

    write(NEW_ROWS, tmp_path / "new.csv")  # no label column: prediction does not need it
    result = script_cli(
        "predict.py", f"run={run_dir}", "input=new.csv", "output=out/predictions.csv", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "'purple'" in result.stdout  # the unseen category is noted, not a crash
    predicted = pd.read_csv(tmp_path / "out" / "predictions.csv")

    # The same rows through preprocessing fitted here, in this process, and the best weights.
    exp = build(compose_config(*overrides, output_dir=tmp_path / "again"))
    preprocessor = exp.data.preprocessor
    inputs = preprocessor.transform(NEW_ROWS, "the new rows")
    colors = [i for i, n in enumerate(preprocessor.feature_names) if "color_" in n]
    assert len(colors) == 3
    assert inputs[1, colors].tolist() == [0, 0, 0]  # purple: all zeros
    assert inputs[2, colors].sum() == 1  # a missing color: the most frequent one
    model = exp.trainer.model.eval()
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"])
    with torch.no_grad():
        probabilities = model(torch.as_tensor(inputs)).softmax(dim=1).numpy()

    assert list(predicted.columns) == ["row", "prediction", "probability_cat", "probability_dog"]
    assert predicted["row"].tolist() == list(range(1, len(NEW_ROWS) + 1))
    np.testing.assert_allclose(predicted.iloc[:, 2:].to_numpy(), probabilities, atol=1e-6)
    assert list(predicted["prediction"]) == [["cat", "dog"][i] for i in probabilities.argmax(1)]
    # Heavy and red is a dog; light-ish and blue a cat (the rule the table was made by).
    assert predicted["prediction"][0] == "dog" and predicted["prediction"][3] == "cat"


def test_one_logit_model_predicts_labels_and_probabilities(run_experiment, tmp_path) -> None:
    table = pets_table()
    path = write(table, tmp_path / "pets.csv")
    _, run_dir = run_experiment(
        "data=csv", f"data.path={path}", "data.target=label", "loss=bce", "trainer.max_epochs=10"
    )
    predicted = Predictor.load(run_dir).predict(table)
    # 0.90 measured; swapped classes would score about 0.1, chance about 0.5.
    assert (predicted["prediction"] == table["label"]).mean() >= 0.85
    total = predicted["probability_cat"] + predicted["probability_dog"]
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert ((predicted["probability_dog"] > 0.5) == (predicted["prediction"] == "dog")).all()


def regression_table(rows: int = 300, seed: int = 1) -> pd.DataFrame:
    """A whole-number target (few distinct values) that is really a quantity."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    y = np.round(5 + 2 * x1 - x2 + rng.normal(scale=0.3, size=rows)).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "y": y})


def test_regression_table_predicts_in_the_targets_units(run_experiment, tmp_path) -> None:
    table = regression_table()
    path = write(table, tmp_path / "amounts.csv")
    assert table["y"].nunique() <= 20  # task=auto would call these classes...
    _, run_dir = run_experiment(
        "data=csv", f"data.path={path}", "data.target=y", "data.task=regression", "loss=mse"
    )
    metrics = read_metrics(run_dir)
    assert metrics["task"] == "regression" and metrics["objective"]["name"] == "val/r2"
    assert metrics["test"]["test/r2"] >= 0.85  # 0.953 measured

    predicted = Predictor.load(run_dir, checkpoint="last").predict(table.drop(columns="y"))
    assert list(predicted.columns) == ["prediction"]
    # Standardised outputs would score far below: these are in the target's units.
    assert r2_score(table["y"], predicted["prediction"]) >= 0.85
    assert abs(predicted["prediction"].mean() - table["y"].mean()) < 0.3


@pytest.mark.parametrize(
    ("values", "task", "names"),
    [
        (["dog", "cat", "dog"], "classification", ["cat", "dog"]),
        ([3, 10, 2, 3], "classification", ["2", "3", "10"]),  # sorted as numbers
        ([True, False, True], "classification", ["False", "True"]),
        ([0.5, 1.5, 2.0], "regression", None),
        ([1.5, 2.0, 1.0], "regression", None),  # fractions (whole floats: test_bad_data.py)
        (list(range(30)), "regression", None),  # more than 20 distinct whole numbers
    ],
)
def test_task_auto(values: list, task: str, names: list[str] | None) -> None:
    targets, class_names = encode_target(pd.Series(values, name="y"), "auto", "a test")
    assert class_names == names
    if task == "classification":
        assert [class_names[i] for i in targets] == [str(v) for v in values]
    else:
        np.testing.assert_array_equal(targets, np.asarray(values, dtype=float))


def test_categories_read_the_same_from_whole_numbers_with_or_without_gaps() -> None:
    # A column of codes reads as floats when it has a gap; its categories must not change.
    assert list(categorical_column(pd.Series([3, 10]))) == ["3", "10"]
    with_gap = categorical_column(pd.Series([3.0, np.nan, 10.0]))
    assert with_gap[0] == "3" and pd.isna(with_gap[1]) and with_gap[2] == "10"


# --- preprocessing -------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "knn"])
def test_imputed_numbers_are_scikit_learns_fitted_on_the_training_split(
    tmp_path, strategy: str
) -> None:
    table = pets_table()
    path = write(table, tmp_path / "pets.csv")
    bundle = load_table(seed=0, path=str(path), target="label", impute=strategy, scaling="none")
    assert bundle.preprocessor.feature_names[:3] == [f"numeric__{c}" for c in NUMERIC]
    train = table.loc[ids(bundle.train), NUMERIC]
    assert train["weight"].isna().sum() > 10  # there is something to fill
    imputer = KNNImputer() if strategy == "knn" else SimpleImputer(strategy=strategy)
    imputer.fit(train)
    for split in splits(bundle):
        expected = imputer.transform(table.loc[ids(split), NUMERIC])
        np.testing.assert_allclose(split.inputs[:, :3].numpy(), expected, rtol=1e-6)
    if strategy in ("mean", "median"):
        # Fitted on the training rows, not all rows: the two fill values differ.
        filled = bundle.train.inputs[:, 1][torch.tensor(train["weight"].isna().to_numpy())]
        assert filled.unique().item() == pytest.approx(getattr(train["weight"], strategy)())
        assert getattr(train["weight"], strategy)() != getattr(table["weight"], strategy)()


def test_impute_drop_leaves_out_rows_with_gaps_before_splitting(tmp_path) -> None:
    table = pets_table()
    path = write(table, tmp_path / "pets.csv")
    bundle = load_table(seed=0, path=str(path), target="label", impute="drop", scaling="none")
    complete = table.dropna().set_index("id")
    assert 200 < len(complete) < 350  # about 27% of rows have a gap
    kept = np.concatenate([ids(split) for split in splits(bundle)])
    assert sorted(kept.tolist()) == complete.index.tolist()
    train_ids = ids(bundle.train)
    expected = complete.loc[train_ids, ["weight", "height"]].to_numpy()
    np.testing.assert_allclose(bundle.train.inputs[:, 1:3].numpy(), expected, rtol=1e-6)

    # Prediction cannot drop rows: a gap is an error that names the rows.
    with pytest.raises(TrainlabError, match=r"new rows has missing values \(data rows 2, 3\)"):
        bundle.preprocessor.transform(NEW_ROWS, "new rows")


def test_missing_categories_take_the_most_frequent_or_their_own_column(tmp_path) -> None:
    table = pets_table()
    path = write(table, tmp_path / "pets.csv")
    frequent = load_table(seed=0, path=str(path), target="label", scaling="none")
    names = frequent.preprocessor.feature_names
    assert names[3:] == [f"categorical__color_{c}" for c in ("blue", "green", "red")]
    train = table.set_index("id").loc[ids(frequent.train)]
    mode = train["color"].mode()[0]
    gaps = torch.tensor(train["color"].isna().to_numpy())
    assert (frequent.train.inputs[gaps, 3:] == frequent.train.inputs[gaps, 3:][0]).all()
    assert names[3 + int(frequent.train.inputs[gaps, 3:][0].argmax())].endswith(mode)

    constant = load_table(
        seed=0, path=str(path), target="label", scaling="none", categorical_impute="constant"
    )
    missing = constant.preprocessor.feature_names.index("categorical__color_missing")
    assert constant.train.inputs[:, missing].sum().item() == gaps.sum().item() > 0


def test_missing_indicator_adds_a_column_per_numeric_column_with_gaps(tmp_path) -> None:
    table = pets_table()
    path = write(table, tmp_path / "pets.csv")
    bundle = load_table(
        seed=0, path=str(path), target="label", scaling="none", missing_indicator=True
    )
    plain = load_table(seed=0, path=str(path), target="label", scaling="none")
    assert bundle.info.input_shape[0] == plain.info.input_shape[0] + 2  # weight, height
    assert bundle.preprocessor.feature_names[3:5] == [
        "numeric__missingindicator_weight",
        "numeric__missingindicator_height",
    ]
    for split in splits(bundle):
        expected = table.loc[ids(split), ["weight", "height"]].isna().to_numpy()
        np.testing.assert_array_equal(split.inputs[:, 3:5].numpy(), expected)


def test_minmax_scaling_maps_training_columns_into_the_unit_interval(tmp_path) -> None:
    table = pets_table()
    path = write(table, tmp_path / "pets.csv")
    bundle = load_table(seed=0, path=str(path), target="label", scaling="minmax")
    numbers = bundle.train.inputs[:, :3]
    assert numbers.min(dim=0).values.tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(numbers.max(dim=0).values.numpy(), 1.0, rtol=1e-6)
    # The same numbers as scikit-learn's scaler fitted on the imputed training rows.
    unscaled = load_table(seed=0, path=str(path), target="label", scaling="none")
    scaler = MinMaxScaler().fit(unscaled.train.inputs[:, :3].numpy())
    expected = scaler.transform(unscaled.test.inputs[:, :3].numpy())
    np.testing.assert_allclose(bundle.test.inputs[:, :3].numpy(), expected, atol=1e-6)


# --- file types ------------------------------------------------------------------------------
def assert_same_data(first: DataBundle, second: DataBundle) -> None:
    for a, b in zip(splits(first), splits(second), strict=True):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert first.info.class_names == second.info.class_names
    assert first.preprocessor.feature_names == second.preprocessor.feature_names


def test_parquet_and_npz_files_load_the_same_data_as_csv(tmp_path) -> None:
    table = pets_table()
    from_csv = load_table(seed=0, path=str(write(table, tmp_path / "t.csv")), target="label")
    from_parquet = load_table(
        seed=0, path=str(write(table, tmp_path / "t.parquet")), target="label"
    )
    assert_same_data(from_csv, from_parquet)

    numbers = table[NUMERIC].to_numpy()
    np.savez(tmp_path / "t.npz", X=numbers, y=table["label"].to_numpy().astype(str))
    columns = pd.DataFrame(numbers, columns=["x0", "x1", "x2"]).assign(y=table["label"])
    csv_path = write(columns, tmp_path / "t2.csv")
    from_npz = load_table(seed=0, path=str(tmp_path / "t.npz"))  # target: the array y
    assert_same_data(load_table(seed=0, path=str(csv_path), target="y"), from_npz)
    assert from_npz.info.class_names == ["cat", "dog"]


def test_npz_with_named_arrays_trains_and_predicts(run_experiment, tmp_path, monkeypatch) -> None:
    table = pets_table().dropna()
    features = table[["weight", "height"]].to_numpy()
    labels = table["label"].to_numpy().astype(str)
    np.savez(tmp_path / "pets.npz", features=features, labels=labels)
    _, run_dir = run_experiment(
        "data=csv",
        f"data.path={tmp_path / 'pets.npz'}",
        "data.npz_features=features",
        "data.npz_target=labels",
        "trainer.max_epochs=3",
    )
    np.savez(tmp_path / "new.npz", features=features[:7])  # no labels: not needed
    monkeypatch.chdir(tmp_path)
    predict_command([f"run={run_dir}", "input=new.npz", "output=p.parquet"])
    predicted = pd.read_parquet(tmp_path / "p.parquet")
    assert len(predicted) == 7 and set(predicted["prediction"]) <= {"cat", "dog"}


# --- recipes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("experiment", "metric", "bar"),
    [("breast_cancer_mlp", "test/acc", 0.95), ("diabetes_mlp", "test/r2", 0.40)],
)
def test_recipe_reaches_its_bar(run_experiment, experiment: str, metric: str, bar: float) -> None:
    _, run_dir = run_experiment(f"experiment={experiment}")
    assert read_metrics(run_dir)["test"][metric] >= bar


# --- bad input -------------------------------------------------------------------------------
TWO_CLASSES = "a,label\n" + "".join(f"{i},{'cat' if i % 2 else 'dog'}\n" for i in range(4))
WITH_TEXT = (
    pets_table()
    .astype({"weight": object})
    .assign(weight=lambda t: t.weight.where(t.index != 2, "abc"))
)

BAD_INPUT = {
    "missing file": (
        {},
        ["data.path=missing.csv", "data.target=label"],
        "data.path=missing.csv: file not found",
    ),
    "empty file": (
        {"empty.csv": ""},
        ["data.path=empty.csv", "data.target=label"],
        "data.path=empty.csv: the file is empty",
    ),
    "header only": (
        {"header.csv": "a,label\n"},
        ["data.path=header.csv", "data.target=label"],
        "data.path=header.csv: the file has columns (a, label) but no rows",
    ),
    "unknown target": (
        {"pets.csv": pets_table()},
        ["data.path=pets.csv", "data.target=lable"],
        "data.target: no column 'lable' in data.path=pets.csv (did you mean 'label'?); "
        "columns: id, weight, height, color, label",
    ),
    "text in a numeric column": (
        {"pets.csv": WITH_TEXT},
        ["data.path=pets.csv", "data.target=label", "data.numeric=[weight]"],
        "column 'weight' of data.path=pets.csv should hold numbers but holds text such as "
        "'abc' (data row 3); fix the file, or list the column in data.categorical",
    ),
    "single class": (
        {"one.csv": "a,label\n1,cat\n2,cat\n3,cat\n"},
        ["data.path=one.csv", "data.target=label"],
        "target 'label' of data.path=one.csv has a single class ('cat') in all 3 rows",
    ),
    "too few rows": (
        {"four.csv": TWO_CLASSES},
        ["data.path=four.csv", "data.target=label"],
        "cannot split 4 rows into train/val/test sets",
    ),
    "unsupported extension": (
        {"table.xlsx": "not really"},
        ["data.path=table.xlsx", "data.target=label"],
        "data.path=table.xlsx: unsupported file type (.xlsx); use one of: .csv,",
    ),
    "no path": ({}, ["data.target=label"], "data.path is not set: point it at a CSV, Parquet"),
    "no target": (
        {"pets.csv": pets_table()},
        ["data.path=pets.csv"],
        "data.target is not set: name the column to predict, e.g. data.target=label; columns:",
    ),
}


@pytest.mark.parametrize(("files", "args", "message"), BAD_INPUT.values(), ids=BAD_INPUT)
def test_bad_input_is_one_line_from_the_command(tmp_path, files, args, message) -> None:
    for name, content in files.items():
        if isinstance(content, pd.DataFrame):
            write(content, tmp_path / name)
        else:
            (tmp_path / name).write_text(content)
    result = train_in_process("data=csv", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.impute=mode"], "data.impute='mode' is not allowed; choose one of: drop, mean,"),
        (["data.task=classify"], "data.task='classify' is not allowed (did you mean"),
        (
            ["data.categorical=[color]", "data.numeric=[color]"],
            "column(s) color are in both data.categorical and data.numeric",
        ),
        (["data.drop_columns=[label]"], "the target 'label' is also in data.drop_columns"),
        (
            ["data.impute=drop", "data.missing_indicator=true"],
            "data.missing_indicator=true needs an imputing data.impute",
        ),
        (["data.knn_neighbors=0"], "data.knn_neighbors=0 is out of range: it must be >= 1"),
    ],
)
def test_bad_csv_settings_are_refused_before_reading(overrides, message) -> None:
    cfg = compose_config("data=csv", "data.path=never-read.csv", "data.target=label", *overrides)
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert message in str(caught.value)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A quick run (two epochs) on the pets table, for prediction's error cases."""
    folder = tmp_path_factory.mktemp("trained")
    path = write(pets_table(), folder / "pets.csv")
    cfg = compose_config(
        "data=csv",
        f"data.path={path}",
        "data.target=label",
        "trainer.max_epochs=2",
        output_dir=folder / "run",
    )
    run(cfg)
    return folder / "run"


PREDICT_ERRORS = [
    (["run=nowhere", "input=new.csv"], "run=nowhere: no such run folder"),
    (["run=RUN"], "input not given; usage: trainlab predict run=<run folder>"),
    (
        ["run=RUN", "input=new.csv", "ouput=p.csv"],
        "unknown option 'ouput' (did you mean 'output'?)",
    ),
    (["run=RUN", "input=new.csv", "output=p.xlsx"], "output=p.xlsx: write .csv or .parquet"),
    (
        ["run=RUN", "input=lacking.csv"],
        "input=lacking.csv lacks the column(s) height that the model was trained on",
    ),
    (
        ["run=RUN", "input=text.csv"],
        "column 'weight' of input=text.csv should hold numbers but holds text such as 'heavy' "
        "(data row 2); the model was trained on numbers in this column",
    ),
    (["run=RUN", "input=new.csv", "checkpoint=middle.pt"], "checkpoint not found: middle.pt"),
    (["run=BARE", "input=new.csv"], "BARE has no preprocessing.json: prediction from a file needs"),
]


def prediction_inputs(folder: Path, trained_run: Path) -> None:
    """New rows as they should be, and with faults; a copy of the run without preprocessing."""
    write(NEW_ROWS, folder / "new.csv")
    write(NEW_ROWS.drop(columns="height"), folder / "lacking.csv")
    text = NEW_ROWS.astype({"weight": object}).assign(weight=[1.0, "heavy", 2.0, 3.0])
    write(text, folder / "text.csv")
    bare = shutil.copytree(trained_run, folder / "BARE")
    (bare / "preprocessing.json").unlink()


@pytest.mark.parametrize(("args", "message"), PREDICT_ERRORS)
def test_predict_errors_say_what_is_wrong(tmp_path, monkeypatch, trained_run, args, message):
    prediction_inputs(tmp_path, trained_run)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainlabError) as caught:
        predict_command([a.replace("RUN", str(trained_run)) for a in args])
    assert message in one_line(caught.value) and "\n" not in one_line(caught.value)
    assert not (tmp_path / "predictions.csv").exists()


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_predict_py_reports_one_line_and_exit_status_2(tmp_path, trained_run) -> None:
    prediction_inputs(tmp_path, trained_run)
    result = script_cli("predict.py", f"run={trained_run}", "input=lacking.csv", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: input=lacking.csv lacks the column(s) height that the model was trained on; "
        "it needs: id, weight, height, color"
    ]
    assert "Traceback" not in result.stdout and not (tmp_path / "predictions.csv").exists()


def test_preprocessing_file_round_trips_and_foreign_data_is_refused(tmp_path) -> None:
    bundle = load_table(seed=0, path=str(write(pets_table(), tmp_path / "p.csv")), target="label")
    bundle.save(tmp_path / "run")
    loaded = TablePreprocessor.load(tmp_path / "run")
    np.testing.assert_array_equal(
        loaded.transform(NEW_ROWS, "rows"), bundle.preprocessor.transform(NEW_ROWS, "rows")
    )
    (tmp_path / "run" / "preprocessing.json").write_text('{"weights": [1, 2]}')
    with pytest.raises(TrainlabError, match="is not trainlab preprocessing"):
        TablePreprocessor.load(tmp_path / "run")
