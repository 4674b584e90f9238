"""Prediction for every kind of run (tables, text, images, built-in feature sets) and its
bad inputs: each ends in one line, writes nothing and leaves the run folder as it was."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import cli_env, compose_config, read_metrics, script_cli
from sklearn import datasets

from trainlab.app.experiment import run
from trainlab.app.predict import Predictor, predict_command
from trainlab.components.data.datasets import split_rows
from trainlab.components.data.text_datasets import demo_reviews
from trainlab.engine.checkpoint import load_checkpoint, save_checkpoint
from trainlab.errors import TrainlabError, one_line

SEED = 42  # train.yaml's default seed


def train(folder: Path, *overrides: str) -> Path:
    run(compose_config(*overrides, "debug=fast", output_dir=folder))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One quick run of each kind (one short epoch each)."""
    folder = tmp_path_factory.mktemp("runs")
    wine = datasets.load_wine(as_frame=True).frame
    wine["target"] = wine["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    wine.to_csv(folder / "wine.csv", index=False)
    return {
        "text": train(folder / "text", "experiment=text_rnn", "data.n_samples=600"),
        "digits": train(folder / "digits", "model=cnn"),  # pixels scaled (data.scaling=standard)
        "diabetes": train(folder / "diabetes", "experiment=diabetes_mlp"),
        "binary": train(folder / "binary", "experiment=breast_cancer_mlp"),  # one logit (bce)
        "cv": train(folder / "cv", "cv.folds=2"),  # one run folder per fold: fold_0, fold_1
        "table": train(
            folder / "table", "data=csv", f"data.path={folder / 'wine.csv'}", "data.target=target"
        ),
    }


def held_out_rows(targets: np.ndarray, stratify: bool) -> np.ndarray:
    """The test split of a built-in dataset run with the default fractions and seed."""
    return split_rows(targets, val_fraction=0.15, test_fraction=0.15, seed=SEED, stratify=stratify)[
        2
    ]


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


# --- every kind of run ----------------------------------------------------------------------
def test_text_run_predicts_its_test_rows_with_the_test_accuracy_of_training(runs, tmp_path):
    reviews = demo_reviews(SEED, n_samples=600)
    classes = sorted(set(reviews["label"]))
    test = reviews.iloc[held_out_rows(reviews["label"].map(classes.index).to_numpy(), True)]
    predictor = Predictor.load(runs["text"])
    predicted = predictor.predict(test[["text"]])
    accuracy = (predicted["prediction"] == test["label"]).mean()
    assert accuracy == pytest.approx(read_metrics(runs["text"])["test"]["test/acc"], abs=1e-6)
    assert list(predicted.columns) == ["prediction"] + [f"probability_{c}" for c in classes]
    assert np.allclose(predicted.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-5)

    # A .txt file (one text per line) and a CSV with more columns give the same rows.
    (tmp_path / "new.txt").write_text("\n".join(test["text"][:20]) + "\n")
    test[:20].assign(id=range(20)).to_csv(tmp_path / "new.csv", index=False)
    for name in ("new.txt", "new.csv"):
        out = predict_command(
            [f"run={runs['text']}", f"input={tmp_path / name}", f"output={tmp_path / name}.out.csv"]
        )
        written = pd.read_csv(out)
        assert written["row"].tolist() == list(range(1, 21))
        assert written["prediction"].tolist() == predicted["prediction"][:20].tolist()
        assert np.allclose(written.iloc[:, 2:], predicted.iloc[:20, 1:], atol=1e-6)


def test_text_predictions_from_a_list_and_empty_lines(runs, tmp_path, caplog) -> None:
    predictor = Predictor.load(runs["text"])
    texts = ["The battery is great.", "", "the screen is not good"]
    with caplog.at_level(logging.INFO, logger="trainlab"):
        listed = predictor.predict(texts)
    assert len(listed) == 3 and "1 row(s) of the input are empty" in caplog.text
    single = predictor.predict("the screen is not good")
    assert single["prediction"][0] == listed["prediction"][2]


def test_digits_run_takes_images_arrays_and_pixel_columns(runs, tmp_path) -> None:
    digits = datasets.load_digits(as_frame=True)
    test = held_out_rows(digits.target.to_numpy(), True)
    predictor = Predictor.load(runs["digits"])
    images = digits.images[test]  # (N, 8, 8), raw pixels 0..16: scaled as in training
    predicted = predictor.predict(images)
    accuracy = (predicted["prediction"].astype(int) == digits.target[test].to_numpy()).mean()
    assert accuracy == pytest.approx(read_metrics(runs["digits"])["test"]["test/acc"], abs=1e-6)

    np.save(tmp_path / "x.npy", images[:, None])  # (N, 1, 8, 8)
    np.savez(tmp_path / "x.npz", X=images.reshape(len(test), 64))  # (N, 64)
    digits.frame.iloc[test].to_csv(tmp_path / "x.csv", index=False)  # pixel_0_0, ..., target
    for name in ("x.npy", "x.npz", "x.csv"):
        out = predict_command(
            [f"run={runs['digits']}", f"input={tmp_path / name}", f"output={tmp_path / name}.csv"]
        )
        written = pd.read_csv(out)
        assert written["prediction"].tolist() == predicted["prediction"].astype(int).tolist()
        assert np.allclose(written.iloc[:, 2:], predicted.iloc[:, 1:], atol=1e-6)


def test_each_fold_of_a_cross_validation_predicts_with_its_own_scaling(runs, caplog) -> None:
    digits = datasets.load_digits()
    folds = read_metrics(runs["cv"])["cv"]["folds"]
    for k in (0, 1):
        test = split_rows(
            digits.target,
            val_fraction=0.15,
            test_fraction=0.15,
            seed=SEED,
            stratify=True,
            fold=(k, 2),
        )[2]
        with caplog.at_level(logging.INFO, logger="trainlab"):
            predicted = Predictor.load(runs["cv"] / f"fold_{k}").predict(digits.images[test])
        assert "has not finished" not in caplog.text  # the folds' metrics are the parent's
        accuracy = (predicted["prediction"].astype(int) == digits.target[test]).mean()
        assert accuracy == pytest.approx(folds[k]["test/acc"], abs=1e-6)


def test_regression_run_predicts_in_the_targets_units(runs, tmp_path) -> None:
    data = datasets.load_diabetes(as_frame=True)
    test = held_out_rows(data.target.to_numpy(), False)
    predicted = Predictor.load(runs["diabetes"]).predict(data.frame.iloc[test])
    assert list(predicted.columns) == ["prediction"]
    error = (predicted["prediction"] - data.target.iloc[test]).abs().mean()
    assert error == pytest.approx(read_metrics(runs["diabetes"])["test"]["test/mae"], rel=1e-4)


def test_binary_run_with_one_logit_predicts_both_classes_probabilities(runs) -> None:
    data = datasets.load_breast_cancer(as_frame=True)  # columns by scikit-learn's names
    test = held_out_rows(data.target.to_numpy(), True)
    predicted = Predictor.load(runs["binary"]).predict(data.frame.iloc[test])
    assert list(predicted.columns) == ["prediction", "probability_malignant", "probability_benign"]
    truth = data.target_names[data.target.iloc[test]]
    accuracy = (predicted["prediction"].to_numpy() == truth).mean()
    assert accuracy == pytest.approx(read_metrics(runs["binary"])["test"]["test/acc"], abs=1e-6)
    assert np.allclose(predicted.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-6)


def test_table_run_fills_gaps_and_ignores_extra_columns(runs, tmp_path, caplog) -> None:
    rows = pd.read_csv(runs["table"].parent / "wine.csv").head(6)
    rows["note"] = "x"
    rows.loc[2, "alcohol"] = np.nan  # the training table had no gaps: filled as training fills
    rows.to_csv(tmp_path / "rows.csv", index=False)
    with caplog.at_level(logging.INFO, logger="trainlab"):
        out = predict_command(
            [
                f"run={runs['table']}",
                f"input={tmp_path / 'rows.csv'}",
                f"output={tmp_path / 'p.parquet'}",
            ]
        )
    written = pd.read_parquet(out)
    assert list(written.columns) == [
        "row",
        "prediction",
        "probability_barbera",
        "probability_barolo",
        "probability_grignolino",
    ]
    assert written.iloc[:, 2:].notna().all().all() and len(written) == 6
    unused = f"note: column(s) note of input={tmp_path / 'rows.csv'} are not model inputs; ignored"
    assert unused in caplog.messages  # the target column is not mentioned


def test_prediction_leaves_the_run_folder_byte_identical(runs, tmp_path) -> None:
    before = folder_digest(runs["digits"])
    np.save(tmp_path / "ok.npy", np.zeros((2, 8, 8)))
    np.save(tmp_path / "bad.npy", np.zeros((2, 7, 7)))
    predict_command(
        [
            f"run={runs['digits']}",
            f"input={tmp_path / 'ok.npy'}",
            f"output={runs['digits'] / 'p.csv'}",
        ]
    )
    (runs["digits"] / "p.csv").unlink()
    with pytest.raises(TrainlabError):
        predict_command([f"run={runs['digits']}", f"input={tmp_path / 'bad.npy'}"])
    assert folder_digest(runs["digits"]) == before


# --- bad input: one line each, nothing written ----------------------------------------------
def bad_inputs(folder: Path, runs: dict[str, Path]) -> None:
    """Input files with faults, and damaged copies of the digits run, in `folder`."""
    pixels = datasets.load_digits(as_frame=True).frame.head(5)
    np.save(folder / "ok.npy", np.zeros((3, 8, 8)))
    np.save(folder / "d77.npy", np.zeros((5, 7, 7)))
    np.save(folder / "nan.npy", np.where(np.arange(192).reshape(3, 8, 8) == 75, np.nan, 1.0))
    np.save(folder / "words.npy", np.array([["a"] * 64]))
    np.save(folder / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(folder / "two.npz", a=np.zeros((2, 64)), b=np.zeros(2))
    pixels.astype({"pixel_0_3": object}).assign(pixel_0_3=[1, 2, "dark", 4, 5]).to_csv(
        folder / "words.csv", index=False
    )
    pixels.iloc[:, :5].to_csv(folder / "few.csv", index=False)
    (folder / "empty.csv").write_text("")
    (folder / "blank.txt").write_text("\n  \n\n")
    (folder / "latin.txt").write_bytes("très bien\n".encode("latin-1"))
    np.save(folder / "none.npy", np.zeros((0, 8, 8)))
    (folder / "header.csv").write_text("text,label\n")
    (folder / "review.csv").write_text("review,stars\ngreat battery,5\n")
    (folder / "notes.xlsx").write_text("not a table")
    (folder / "garbage.pt").write_bytes(b"not a checkpoint")
    (folder / "afile").write_text("")
    (folder / "adir").mkdir()
    (folder / "adir.csv").mkdir()
    (folder / "notrun").mkdir()
    for name in ("unfinished", "nocheckpoints", "badinfo", "otherinfo", "notokenizer"):
        shutil.copytree(runs["text" if name == "notokenizer" else "digits"], folder / name)
    (folder / "unfinished" / "checkpoints" / "best.pt").unlink()
    (folder / "unfinished" / "metrics.json").unlink()
    shutil.rmtree(folder / "nocheckpoints" / "checkpoints")
    (folder / "badinfo" / "data_info.json").write_text("{")
    info = json.loads((folder / "otherinfo" / "data_info.json").read_text())
    info |= {"num_classes": 9, "class_names": info["class_names"][:9]}
    (folder / "otherinfo" / "data_info.json").write_text(json.dumps(info))
    (folder / "notokenizer" / "text_preprocessor.json").unlink()


BAD = [
    (
        ["run=DIGITS", "input=ok.npy", "ouput=p.csv"],
        "unknown option 'ouput' (did you mean 'output'",
    ),
    (["run=DIGITS", "input=ok.npy", "output="], "output= is empty; give a value"),
    (["run=DIGITS", "input=ok.npy", "input=d77.npy"], "input= is given twice (ok.npy, d77.npy)"),
    (["DIGITS", "input=ok.npy"], "cannot parse 'DIGITS': write key=value (e.g. run=DIGITS)"),
    (["run=DIGITS"], "input not given; usage: trainlab predict run=<run folder>"),
    (["run=DIGITS", "input=ok.npy", "output=p.npy"], "output=p.npy: write .csv or .parquet"),
    (["run=DIGITS", "input=few.csv", "output=few.csv"], "output=few.csv is the input file"),
    (["run=DIGITS", "input=ok.npy", "output=adir.csv"], "output=adir.csv is a folder"),
    (["run=DIGITS", "input=ok.npy", "output=afile/p.csv"], "cannot write into afile"),
    (["run=DIGITS", "input=ok.npy", "output=/sys/p.csv"], "output=/sys/p.csv: cannot write"),
    (["run=nowhere", "input=ok.npy"], "run=nowhere: no such run folder"),
    (["run=afile", "input=ok.npy"], "run=afile is a file, not a run folder"),
    (["run=notrun", "input=ok.npy"], "run=notrun is not a trainlab run folder (no data_info.json)"),
    (["run=RUNS", "input=ok.npy"], "(no data_info.json); it holds run folders ("),
    (["run=RUNS/cv", "input=ok.npy"], "it holds run folders (fold_0, fold_1): pick one"),
    (["run=badinfo", "input=ok.npy"], "badinfo/data_info.json cannot be read"),
    (["run=nocheckpoints", "input=ok.npy"], "has no checkpoints/best.pt or last.pt"),
    (
        ["run=unfinished", "input=ok.npy", "checkpoint=best"],
        "no checkpoints/best.pt; use checkpoint=last",
    ),
    (["run=DIGITS", "input=ok.npy", "checkpoint=step_9.pt"], "checkpoint not found: step_9.pt"),
    (["run=DIGITS", "input=ok.npy", "checkpoint=adir"], "checkpoint=adir is a folder"),
    (
        ["run=DIGITS", "input=ok.npy", "checkpoint=garbage.pt"],
        "is not a readable trainlab checkpoint",
    ),
    (
        ["run=TEXT", "input=blank.txt", "checkpoint=DIGITS/checkpoints/best.pt"],
        "best.pt is another run's (model._target_=CNN there, RNN here; model.activation=relu "
        "there, null here; and 25 more): predict with it from its own run folder",
    ),
    (["run=otherinfo", "input=ok.npy"], "needs (9, 64); use this run's checkpoints"),
    (["run=notokenizer", "input=blank.txt"], "cannot read the text preprocessor"),
    (["run=DIGITS", "input=missing.npy"], "input=missing.npy: file not found (looked in "),
    (["run=DIGITS", "input=adir"], "input=adir: is a folder, not a file"),
    (["run=DIGITS", "input=empty.csv"], "input=empty.csv: the file is empty; it needs a .npy"),
    (["run=DIGITS", "input=notes.xlsx"], "unsupported file type (.xlsx); it needs a .npy / .npz"),
    (
        ["run=DIGITS", "input=d77.npy"],
        "input=d77.npy has shape (N, 7, 7) (N=5); this run (digits) expects (N, 1, 8, 8) or "
        "(N, 8, 8) or (N, 64)",
    ),
    (["run=DIGITS", "input=nan.npy"], "input=nan.npy: sample 2 has nan at pixel_1_3"),
    (
        ["run=DIGITS", "input=words.npy"],
        "input=words.npy holds <U1 values; the model takes numbers",
    ),
    (
        ["run=DIGITS", "input=objects.npy"],
        "input=objects.npy: cannot read the array (Object arrays",
    ),
    (["run=DIGITS", "input=two.npz"], "no array named 'X' (arrays: a, b); save the inputs as 'X'"),
    (
        ["run=DIGITS", "input=words.csv"],
        "column 'pixel_0_3' of input=words.csv should hold numbers but holds text such as "
        "'dark' (data row 3)",
    ),
    (["run=DIGITS", "input=few.csv"], "lacks the column(s) pixel_0_5, pixel_0_6, pixel_0_7,"),
    (["run=TEXT", "input=blank.txt"], "input=blank.txt holds no text: all 3 rows are empty"),
    (["run=TEXT", "input=latin.txt"], "input=latin.txt: cannot read it as UTF-8 text"),
    (["run=DIGITS", "input=none.npy"], "input=none.npy holds no samples"),
    (["run=TEXT", "input=header.csv"], "input=header.csv has no rows; it needs a .txt file"),
    (["run=TEXT", "input=review.csv"], "has no column 'text' (columns: review, stars); name the"),
    (["run=TEXT", "input=empty.csv"], "input=empty.csv: the file is empty; it needs a .txt file"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, monkeypatch, args, message):
    bad_inputs(tmp_path, runs)
    monkeypatch.chdir(tmp_path)
    names = {"DIGITS": runs["digits"], "TEXT": runs["text"], "RUNS": runs["digits"].parent}

    def place(text: str) -> str:
        for name, path in names.items():
            text = text.replace(name, str(path))
        return text

    with pytest.raises(TrainlabError) as caught:
        predict_command([place(arg) for arg in args])
    line = one_line(caught.value)
    assert place(message) in line and "\n" not in line and len(line) < 300
    assert not list(tmp_path.glob("*predictions*")) and not (tmp_path / "p.csv").exists()


def test_a_crafted_checkpoint_runs_no_code(runs, tmp_path) -> None:
    crafted = shutil.copytree(runs["digits"], tmp_path / "crafted")
    payload = load_checkpoint(crafted / "checkpoints" / "best.pt")
    marker = tmp_path / "marker"
    payload["config"]["model"] = {"_target_": "subprocess.Popen", "args": ["touch", str(marker)]}
    save_checkpoint(
        {k: v for k, v in payload.items() if k not in ("format", "version")},
        crafted / "checkpoints" / "best.pt",
    )
    np.save(tmp_path / "ok.npy", np.zeros((2, 8, 8)))
    with pytest.raises(
        TrainlabError, match=r"model\._target_=subprocess\.Popen is not a torch\.nn"
    ):
        predict_command([f"run={crafted}", f"input={tmp_path / 'ok.npy'}"])
    assert not marker.exists()


def test_an_unfinished_run_predicts_with_its_last_checkpoint_and_says_so(runs, tmp_path, caplog):
    unfinished = shutil.copytree(runs["digits"], tmp_path / "unfinished")
    (unfinished / "checkpoints" / "best.pt").unlink()
    (unfinished / "metrics.json").unlink()
    with caplog.at_level(logging.INFO, logger="trainlab"):
        predictor = Predictor.load(unfinished)
    assert predictor.checkpoint == unfinished / "checkpoints" / "last.pt"
    assert f"note: run={unfinished} has not finished (no metrics.json); predicting with " in (
        caplog.text
    )
    assert len(predictor.predict(np.zeros((4, 64)))) == 4


def test_a_checkpoint_file_of_the_same_run_is_taken(runs, tmp_path) -> None:
    last = runs["digits"] / "checkpoints" / "last.pt"
    predictor = Predictor.load(runs["digits"], checkpoint="last.pt")  # found in checkpoints/
    assert predictor.checkpoint == last
    assert len(Predictor.load(runs["digits"], checkpoint=str(last)).predict(np.ones((1, 64)))) == 1


def test_predict_py_bad_input_exits_2_with_one_line(runs, tmp_path) -> None:
    np.save(tmp_path / "d77.npy", np.zeros((5, 7, 7)))
    result = script_cli("predict.py", f"run={runs['digits']}", "input=d77.npy", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: input=d77.npy has shape (N, 7, 7) (N=5); this run (digits) expects "
        "(N, 1, 8, 8) or (N, 8, 8) or (N, 64)"
    ]
    assert "Traceback" not in result.stdout and not (tmp_path / "predictions.csv").exists()


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_python_entry_point_reads_a_run_without_the_training_loop(runs) -> None:
    """`trainlab.Predictor` (README, docs) imports none of the loop or its callbacks."""
    code = (
        "import sys, numpy, trainlab\n"
        f"predictor = trainlab.Predictor.load({str(runs['digits'])!r})\n"
        "print(len(predictor.predict(numpy.zeros((2, 8, 8)))))\n"
        "print([m for m in sys.modules if m.startswith(('trainlab.components.callbacks', "
        "'trainlab.engine.trainer'))])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert result.stdout.split() == ["2", "[]"], result.stderr
