"""A run's fitted preprocessing is stored as data and rebuilt exactly; nothing in it runs.

`preprocessing.json` holds the columns and the fitted scikit-learn state (numbers, texts,
arrays as bytes). Loading rebuilds only known transformer classes from it: the rebuilt
transform gives bit-identical inputs, and a pickle, an unknown class or a value of an
unexpected type is refused before anything from the file could run (marker-file tests).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainlab.app.predict import Predictor
from trainlab.components.data.datasets import DataInfo
from trainlab.components.data.preprocessing import PREPROCESSING_FILE, TablePreprocessor
from trainlab.components.data.tabular import load_table
from trainlab.components.data.text import TextPreprocessor
from trainlab.errors import TrainlabError, one_line


def table(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """Numbers with gaps, a category with gaps, booleans, dates and a label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "weight": rng.normal(size=rows),
            "count": rng.integers(0, 9, size=rows).astype(float),
            "color": rng.choice(["red", "green", "blue"], size=rows).astype(object),
            "indoor": rng.choice([True, False], size=rows),
            "born": pd.date_range("2019-01-01", periods=rows, freq="37h").strftime("%Y-%m-%d"),
            "label": rng.choice(["cat", "dog"], size=rows),
        }
    )
    frame.loc[rng.random(rows) < 0.15, "weight"] = np.nan
    frame.loc[rng.random(rows) < 0.1, "color"] = None
    return frame


# Held-out rows: gaps everywhere, an unseen category, a huge number, an unparsable date.
HELD_OUT = pd.DataFrame(
    {
        "weight": [np.nan, 1e9, -0.25, 0.5],
        "count": [3.0, np.nan, 0.0, 8.0],
        "color": ["purple", None, "red", "blue"],
        "indoor": [True, False, True, False],
        "born": ["2030-02-28", None, "not a date", "2019-05-01"],
    }
)


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "pets.csv"
    table().to_csv(path, index=False)
    return path


SETTINGS = [
    {"impute": "median", "scaling": "standard"},
    {"impute": "mean", "scaling": "minmax", "missing_indicator": True},
    {"impute": "most_frequent", "scaling": "none", "categorical_impute": "constant"},
    {"impute": "knn", "knn_neighbors": 3, "scaling": "standard", "missing_indicator": True},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s['impute']}-{s['scaling']}")
def test_rebuilt_preprocessing_transforms_held_out_rows_bit_for_bit(
    csv_file: Path, tmp_path: Path, settings: dict
) -> None:
    bundle = load_table(seed=0, path=str(csv_file), target="label", **settings)
    fitted = bundle.preprocessor
    assert fitted.dates == {"born": "%Y-%m-%d"}
    bundle.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "data_info.json",
        PREPROCESSING_FILE,
    ]
    rebuilt = TablePreprocessor.load(tmp_path / "run")
    for rows in (HELD_OUT, table(seed=1).drop(columns="label")):
        expected = fitted.transform(rows, "rows")
        got = rebuilt.transform(rows, "rows")
        assert got.dtype == expected.dtype == np.float32
        assert got.tobytes() == expected.tobytes()
    assert rebuilt.feature_names == fitted.feature_names
    assert "categorical__color_red" in rebuilt.feature_names
    assert "numeric__born_weekday" in rebuilt.feature_names
    # The inputs the model trained on come out of the rebuilt transform unchanged.
    train_rows = table().drop(columns="label")
    assert (
        rebuilt.transform(train_rows, "t").tobytes() == fitted.transform(train_rows, "t").tobytes()
    )


def test_drop_impute_round_trips(csv_file: Path, tmp_path: Path) -> None:
    bundle = load_table(seed=3, path=str(csv_file), target="label", impute="drop")
    bundle.save(tmp_path)
    rows = HELD_OUT.iloc[[3]]  # the one complete row
    expected = bundle.preprocessor.transform(rows, "r")
    assert TablePreprocessor.load(tmp_path).transform(rows, "r").tobytes() == expected.tobytes()


def test_the_file_is_plain_json_with_the_columns(csv_file: Path, tmp_path: Path) -> None:
    load_table(seed=0, path=str(csv_file), target="label").save(tmp_path)
    payload = json.loads((tmp_path / PREPROCESSING_FILE).read_text())
    assert payload["format"] == "trainlab-preprocessing" and payload["version"] == 3
    assert payload["numeric"] == ["weight", "count"]
    assert payload["categorical"] == ["color", "indoor"]
    assert payload["target"] == "label" and payload["dates"] == {"born": "%Y-%m-%d"}


# --- nothing from the file runs ---------------------------------------------------------------
class Marker:
    """Unpickling this creates the file `path`: proof that loading ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def trained_folder(csv_file: Path, folder: Path) -> Path:
    load_table(seed=0, path=str(csv_file), target="label").save(folder)
    return folder


def test_an_old_pickle_is_refused_unread(csv_file: Path, tmp_path: Path) -> None:
    run = trained_folder(csv_file, tmp_path / "run")
    (run / PREPROCESSING_FILE).unlink()
    marker = tmp_path / "ran"
    (run / "preprocessing.pkl").write_bytes(pickle.dumps(Marker(marker)))
    with pytest.raises(TrainlabError) as caught:
        TablePreprocessor.load(run)
    line = one_line(caught.value)
    assert "holds its preprocessing as a pickle (preprocessing.pkl)" in line
    assert "unpickling can run code: retrain the run" in line and "\n" not in line
    # predict's own entry point refuses the folder too (this one also lacks a checkpoint).
    with pytest.raises(TrainlabError):
        Predictor.load(run)
    assert not marker.exists()


def test_a_pickle_under_the_json_name_is_refused(csv_file: Path, tmp_path: Path) -> None:
    run = trained_folder(csv_file, tmp_path / "run")
    marker = tmp_path / "ran"
    (run / PREPROCESSING_FILE).write_bytes(pickle.dumps(Marker(marker)))
    with pytest.raises(TrainlabError, match="is not trainlab preprocessing data"):
        TablePreprocessor.load(run)
    assert not marker.exists()


def estimator_entries(node):
    """Every `{"estimator": ...}` entry of a stored transformer."""
    if isinstance(node, dict):
        if "estimator" in node:
            yield node
        for value in node.values():
            yield from estimator_entries(value)
    elif isinstance(node, list):
        for value in node:
            yield from estimator_entries(value)


def tamper(run: Path, change) -> None:
    path = run / PREPROCESSING_FILE
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


def set_class(name):
    def change(payload):
        next(iter(estimator_entries(payload["transformer"])))["estimator"] = name

    return change


def add_state(key, value):
    def change(payload):
        next(iter(estimator_entries(payload["transformer"])))["state"][key] = value

    return change


def set_field(key, value):
    def change(payload):
        payload[key] = value

    return change


def first_array(payload) -> dict:
    def find(node):
        if isinstance(node, dict):
            if "array" in node and node["array"] != "object":
                return node
            return next((f for v in node.values() if (f := find(v)) is not None), None)
        if isinstance(node, list):
            return next((f for v in node if (f := find(v)) is not None), None)
        return None

    return find(payload["transformer"])


TAMPERED = [
    ("os.system", set_class("os.system"), "the class 'os.system' is not one trainlab rebuilds"),
    ("builtins.eval", set_class("builtins.eval"), "is not one trainlab rebuilds"),
    ("sklearn.Unknown", set_class("sklearn.FeatureUnion"), "is not one trainlab rebuilds"),
    ("dunder", add_state("__class__", "x"), "names a special attribute"),
    ("callable", add_state("func", {"estimator": "builtins.print", "state": {}}), "not one"),
    ("pickled array", lambda p: first_array(p).update(array="|O"), "an array of dtype"),
    ("short array", lambda p: first_array(p).update(shape=[999]), "values for shape"),
    ("bad base64", lambda p: first_array(p).update(bytes="!!"), "not trainlab preprocessing"),
    ("bare list", add_state("n_features_in_", [1, 2]), "a bare list"),
    ("numeric as dict", set_field("numeric", {"a": 1}), "column names that are not texts"),
    ("numbers as names", set_field("categorical", [1, 2]), "column names that are not texts"),
    ("dates", set_field("dates", ["born"]), "date columns that are not texts"),
    ("impute", set_field("impute", "exec"), "impute='exec'"),
    ("format", set_field("format", "joblib"), "no 'trainlab-preprocessing' marker"),
    ("version", set_field("version", 1), "version 1, this trainlab reads 3"),
    ("no transformer", set_field("transformer", None), "not a ColumnTransformer"),
    ("missing key", lambda p: p.pop("target"), "not trainlab preprocessing"),
    ("not an object", lambda p: p.clear(), "marker"),
]


@pytest.mark.parametrize(
    ("change", "words"), [t[1:] for t in TAMPERED], ids=[t[0] for t in TAMPERED]
)
def test_unexpected_content_is_refused(csv_file: Path, tmp_path: Path, change, words) -> None:
    run = trained_folder(csv_file, tmp_path / "run")
    tamper(run, change)
    with pytest.raises(TrainlabError) as caught:
        TablePreprocessor.load(run)
    line = one_line(caught.value)
    assert words in line and "it was not loaded: retrain the run" in line
    assert "\n" not in line and len(line) < 300


def test_a_json_list_or_garbage_is_refused(csv_file: Path, tmp_path: Path) -> None:
    run = trained_folder(csv_file, tmp_path / "run")
    # A transformer of 400 nested lists, and JSON nested past the recursion limit.
    header = '{"format": "trainlab-preprocessing", "version": 3, "numeric": [], "categorical": '
    header += '[], "dates": {}, "target": "y", "impute": "median", "transformer": '
    deep = header + '{"list": [' * 400 + "]}" * 400 + "}"
    for text in ("[1, 2]", "{not json", "", "null", "[" * 100_000 + "]" * 100_000, deep):
        (run / PREPROCESSING_FILE).write_text(text)
        with pytest.raises(TrainlabError, match="is not trainlab preprocessing data"):
            TablePreprocessor.load(run)


# --- the other files of a run folder --------------------------------------------------------
def test_data_info_of_unexpected_types_is_refused(tmp_path: Path) -> None:
    for text in (
        '{"name": "x"}',
        '{"name": "x", "task": "exec", "input_kind": "features", "input_shape": [3]}',
        "[]",
        '{"name": "x", "task": "binary", "input_kind": "features", "input_shape": ["a"]}',
    ):
        (tmp_path / "data_info.json").write_text(text)
        with pytest.raises(TrainlabError, match="cannot be read as a run's data description"):
            DataInfo.load(tmp_path)


def test_text_preprocessor_settings_are_checked(tmp_path: Path) -> None:
    texts = ["a good phone", "a bad phone", "good and bad"]
    for kind in ("word", "bpe"):
        fitted = TextPreprocessor.fit(texts, tokenizer=kind, vocab_size=30)
        fitted.save(tmp_path / kind)
        loaded = TextPreprocessor.load(tmp_path / kind)
        assert loaded.encode(["good phone x"]).tolist() == fitted.encode(["good phone x"]).tolist()
    path = tmp_path / "bpe" / "text_preprocessor.json"
    settings = json.loads(path.read_text())
    for change in ({"tokenizer_file": "../../secret.json"}, {"length": "9"}, {"tokenizer": "x"}):
        path.write_text(json.dumps(settings | change))
        with pytest.raises(TrainlabError, match="settings of unexpected types; it was not loaded"):
            TextPreprocessor.load(tmp_path / "bpe")
    word = tmp_path / "word" / "text_preprocessor.json"
    word.write_text(json.dumps(json.loads(word.read_text()) | {"vocab": [{"a": 1}]}))
    with pytest.raises(TrainlabError, match="settings of unexpected types"):
        TextPreprocessor.load(tmp_path / "word")


# --- atomic, concurrent writes --------------------------------------------------------------
def test_concurrent_writers_and_a_reader_never_fail(csv_file: Path, tmp_path: Path) -> None:
    """Three writers save one folder's preprocessing while a reader loads it: every load
    sees a whole file, no writer loses its file to another's cleanup, no temp file stays."""
    bundle = load_table(seed=0, path=str(csv_file), target="label")
    run = tmp_path / "run"
    bundle.save(run)
    expected = bundle.preprocessor.transform(HELD_OUT, "r").tobytes()
    errors: list[str] = []

    def write() -> None:
        for _ in range(15):
            try:
                bundle.save(run)
            except Exception as ex:  # collected, asserted empty below
                errors.append(repr(ex))

    def read() -> None:
        for _ in range(30):
            try:
                loaded = TablePreprocessor.load(run).transform(HELD_OUT, "r").tobytes()
                assert loaded == expected
            except Exception as ex:
                errors.append(repr(ex))

    threads = [threading.Thread(target=f) for f in (write, write, write, read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(os.listdir(run)) == ["data_info.json", PREPROCESSING_FILE]


def test_a_copied_run_folder_predicts_the_same(csv_file: Path, tmp_path: Path) -> None:
    """The stored file names no absolute path: a moved folder loads as well."""
    run = trained_folder(csv_file, tmp_path / "run")
    moved = Path(shutil.copytree(run, tmp_path / "elsewhere"))
    shutil.rmtree(run)
    assert TablePreprocessor.load(moved).transform(HELD_OUT, "r").shape[0] == 4


def test_a_checkpoint_config_naming_another_class_builds_nothing(tmp_path: Path) -> None:
    """predict rebuilds the model from the config inside the checkpoint: a crafted config
    naming a class that is not a model must not get that class constructed."""
    from omegaconf import OmegaConf

    from trainlab.components.models import build_model
    from trainlab.errors import ConfigError

    marker = tmp_path / "created"
    info = DataInfo(name="t", task="binary", input_kind="features", input_shape=(3,))
    crafted = {"_target_": "logging.FileHandler", "filename": str(marker), "mode": "w"}
    with pytest.raises(ConfigError, match=r"logging\.FileHandler is not a torch\.nn\.Module"):
        build_model(OmegaConf.create(crafted), info, 2)
    assert not marker.exists()
