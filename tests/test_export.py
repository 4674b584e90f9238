"""`trainlab export`: every format verified when made, a table's ONNX file on raw columns
with gaps, a text run's tokenizer.json, and one-line refusals that leave nothing behind.

The exported files are run here the way a user outside trainlab runs them: onnxruntime,
`torch.jit.load`, `torch.export.load`, the `safetensors` and `tokenizers` packages.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
from conftest import compose_config, script_cli
from torch import nn

from trainlab.app.export import export_command, parse_args
from trainlab.app.export_formats import export_model
from trainlab.app.export_table import check_convertible, onnx_feeds, preprocessing_model
from trainlab.app.export_text import checked_tokenizer
from trainlab.components.data.datasets import DataInfo
from trainlab.components.data.tabular import load_table
from trainlab.components.data.text import TextPreprocessor
from trainlab.components.data.text_datasets import demo_reviews
from trainlab.errors import TrainlabError

INFO = DataInfo("toy", "multiclass", "features", (4,), num_classes=3, class_names=["a", "b", "c"])


def session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def gaps_table(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """Numbers and categories with gaps, a category written 'NA', and a yes/no target."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 12, rows).round(1),
            "income": rng.lognormal(10, 1, rows).round(2),
            "color": rng.choice(["red", "green", "blue"], rows),
            "size": rng.choice(["S", "M", "L"], rows),
        }
    )
    frame["label"] = np.where((frame.age > 40) ^ (frame.color == "red"), "yes", "no")
    for column, share in (("age", 0.1), ("income", 0.05), ("color", 0.1), ("size", 0.1)):
        frame.loc[rng.random(rows) < share, column] = np.nan
    return frame


# --- fast checks, in process ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run=r"], "format not given"),
        (["format=onnx"], "run not given"),
        (["run=r", "format=onx"], "format=onx is unknown (did you mean 'onnx'?)"),
        (["run=r", "format=tflite"], "choose one of: onnx, torchscript, exported_program"),
        (["run=r", "format=onnx", "tolerance=-1"], "tolerance=-1 is not a number >= 0"),
        (["run=r", "format=onnx", "tolerance=abc"], "tolerance=abc is not a number >= 0"),
        (["run=r", "format=onnx", "fromat=x"], "unknown option 'fromat' (did you mean 'format'?)"),
        (["run=r", "run=s", "format=onnx"], "run= is given twice (r, s)"),
        (["r"], "cannot parse 'r': write key=value"),
    ],
)
def test_bad_arguments_are_one_line(args, message) -> None:
    with pytest.raises(TrainlabError, match=None) as caught:
        parse_args(args)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_or_wrong_run_folder_is_named(tmp_path) -> None:
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "nope": "no such run folder",
        tmp_path / "file.txt": "is a file, not a run folder",
        tmp_path / "empty": "is not a trainlab run folder (no data_info.json)",
    }
    for run_dir, message in cases.items():
        with pytest.raises(TrainlabError, match="run=") as caught:
            export_command([f"run={run_dir}", "format=onnx"])
        assert message in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file.txt"]  # nothing new


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_torchscript_and_safetensors_load_outside_trainlab(tmp_path) -> None:
    from safetensors.torch import load_file

    model, rows = tiny_model(), torch.randn(300, 4)
    script = export_model(model, rows, INFO, "torchscript", tmp_path)
    weights = export_model(model, rows, INFO, "safetensors", tmp_path)
    assert script["inputs"] == [{"name": "inputs", "shape": ["batch", 4], "dtype": "float32"}]
    assert script["outputs"] == ["logits", "probabilities"]
    assert script["verification"]["rows"] == 300
    assert script["verification"]["batch_sizes"] == [1, 256]
    assert max(script["verification"]["max_abs_diff"].values()) <= 1e-5
    loaded = torch.jit.load(str(tmp_path / script["file"]))
    logits, probabilities = loaded(rows[:5])
    assert torch.allclose(logits, model(rows[:5]), atol=1e-6)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(5))
    state = load_file(str(tmp_path / weights["file"]))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.safetensors",
        "model.torchscript.pt",
    ]  # no temporary file left


def test_outputs_are_what_predict_reports_for_regression_and_one_logit(tmp_path) -> None:
    rows = torch.randn(30, 4)
    regression = DataInfo("r", "regression", "features", (4,), target_mean=[10.0], target_std=[2.0])
    model = nn.Linear(4, 1)
    entry = export_model(model, rows, regression, "torchscript", tmp_path / "r")
    assert entry["outputs"] == ["outputs", "prediction"]
    outputs, prediction = torch.jit.load(str(tmp_path / "r" / entry["file"]))(rows)
    assert torch.allclose(prediction, model(rows) * 2 + 10, atol=1e-5)
    assert torch.allclose(outputs, model(rows), atol=1e-6)
    binary = DataInfo("b", "binary", "features", (4,), num_classes=2, class_names=["n", "y"])
    export_model(model, rows, binary, "torchscript", tmp_path / "b")
    _, probabilities = torch.jit.load(str(tmp_path / "b" / entry["file"]))(rows)
    positive = model(rows).sigmoid()[:, 0]
    assert torch.allclose(probabilities[:, 1], positive) and probabilities.shape == (30, 2)


class TracedOtherwise(nn.Module):
    """A model whose traced graph computes something else than it does eagerly."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.linear(inputs)
        return out + 1e-3 if torch.jit.is_tracing() else out


def test_an_export_that_does_not_match_is_refused_and_writes_nothing(tmp_path) -> None:
    old = tmp_path / "model.torchscript.pt"
    old.write_bytes(b"an earlier export")
    with pytest.raises(TrainlabError) as caught:
        export_model(TracedOtherwise(), torch.randn(50, 4), INFO, "torchscript", tmp_path)
    message = str(caught.value)
    assert message.startswith("format=torchscript: the exported file does not match")
    assert "max abs difference 0.001 in 'logits' over 50 test rows > tolerance=1e-05" in message
    assert old.read_bytes() == b"an earlier export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.torchscript.pt"]


def test_a_tolerance_of_zero_refuses_any_difference(tmp_path) -> None:
    model, rows = tiny_model(), torch.randn(40, 4)
    entry = export_model(model, rows, INFO, "torchscript", tmp_path, tolerance=0.0)
    assert max(entry["verification"]["max_abs_diff"].values()) == 0.0  # same kernels: exact


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"missing_indicator": True, "categorical_impute": "constant", "scaling": "minmax"},
        {"impute": "mean", "scaling": "none"},
        {"impute": "most_frequent", "missing_indicator": True},
    ],
)
def test_the_preprocessing_graph_equals_scikit_learn_on_raw_cells(tmp_path, settings) -> None:
    path = tmp_path / "gaps.csv"
    gaps_table().to_csv(path, index=False)
    bundle = load_table(seed=0, path=str(path), target="label", **settings)
    preprocessor = bundle.preprocessor
    # New rows: gaps, pandas' missing spellings, a category unseen in training.
    new = pd.DataFrame(
        {
            "age": [np.nan, 30.0, 55.5, 41.0],
            "income": [1000.0, np.nan, 2.5e5, 0.0],
            "color": ["NA", "purple", "", "red"],
            "size": ["null", "M", "L", None],
        }
    )
    rows = pd.concat([pd.read_csv(path).drop(columns="label"), new], ignore_index=True)
    graph = preprocessing_model(preprocessor, ir_version=10)
    (features,) = session_from(graph).run(None, onnx_feeds(rows, preprocessor))
    expected = preprocessor.transform(pd.read_csv(path).drop(columns="label"), "x")
    expected_new = preprocessor.transform(new.replace({"NA": None, "null": None, "": None}), "x")
    assert np.abs(features - np.vstack([expected, expected_new])).max() <= 1e-6
    one_hot = preprocessor.transformer.named_transformers_["categorical"].named_steps["one_hot"]
    width = sum(len(known) for known in one_hot.categories_)
    assert features[-3, -width:].sum() == 1.0  # color purple is unseen: only its size is set


def session_from(model) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )


def test_dates_and_knn_imputation_are_refused_in_one_line(tmp_path) -> None:
    frame = gaps_table(60)
    frame["day"] = pd.date_range("2024-01-01", periods=60).strftime("%Y-%m-%d")
    frame.to_csv(tmp_path / "dated.csv", index=False)
    dated = load_table(seed=0, path=str(tmp_path / "dated.csv"), target="label").preprocessor
    with pytest.raises(TrainlabError, match=r"date column\(s\) day cannot be parsed inside"):
        check_convertible(dated, tmp_path)
    knn = load_table(
        seed=0, path=str(tmp_path / "dated.csv"), target="label", impute="knn", drop_columns=["day"]
    )
    with pytest.raises(TrainlabError, match=r"data\.impute=knn, which this ONNX export"):
        check_convertible(knn.preprocessor, tmp_path)


@pytest.mark.parametrize("kind", ["word", "char", "bpe", "wordpiece"])
def test_tokenizer_json_gives_the_runs_token_ids(tmp_path, kind) -> None:
    from tokenizers import Tokenizer

    texts = list(demo_reviews(seed=0, n_samples=200)["text"])
    fitted = TextPreprocessor.fit(texts, tokenizer=kind, vocab_size=120, max_length=24)
    fitted.save(tmp_path)
    saved = TextPreprocessor.load(tmp_path)
    text, note = checked_tokenizer(tmp_path, saved, saved.encode(texts[:50]))
    assert note["checked_texts"] >= 50 and note["length"] == saved.length
    tokenizer = Tokenizer.from_str(text)
    new = ["The BATTERY is not bad!!", "screen: great, 10/10", texts[60]]
    ids = np.array([encoding.ids for encoding in tokenizer.encode_batch(new)])
    assert ids.tolist() == saved.encode(new).tolist()


def test_a_run_on_someone_elses_data_loader_is_not_rebuilt(tmp_path) -> None:
    from trainlab.app.export import data_config

    config = {"data": {"_target_": "os.system", "command": "touch pwned"}, "seed": 1}
    with pytest.raises(TrainlabError, match=r"data\._target_=os\.system, not a trainlab dataset"):
        data_config(tmp_path, config, tmp_path / "best.pt")


# --- the bars: real runs, exported through the command ----------------------------


def train(folder: Path, *overrides: str) -> Path:
    from trainlab.app.experiment import run

    run(compose_config(*overrides, output_dir=folder))
    return folder


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("digits") / "mlp", "trainer.max_epochs=3")


def digits_test_split() -> torch.Tensor:
    from trainlab.components.data.datasets import load_digits

    return load_digits(
        seed=42, val_fraction=0.15, test_fraction=0.15, scaling="standard"
    ).test.inputs  # train.yaml's seed and configs/data/digits.yaml


def digits_model(run_dir: Path) -> nn.Module:
    from trainlab.app.predict import Predictor

    return Predictor.load(run_dir).model


@pytest.mark.slow
def test_bar_digits_mlp_onnx_matches_pytorch_on_the_test_split(digits_run) -> None:
    result = script_cli("train.py", "export", f"run={digits_run}", "format=onnx", cwd=digits_run)
    assert result.returncode == 0, result.stderr
    assert "verified on 270 test rows" in result.stdout
    inputs = digits_test_split()
    logits, probabilities = session(digits_run / "export" / "model.onnx").run(
        None, {"inputs": inputs.numpy()}
    )
    with torch.inference_mode():
        expected = digits_model(digits_run)(inputs)
    assert np.abs(logits - expected.numpy()).max() <= 1e-5
    assert np.abs(probabilities - expected.softmax(1).numpy()).max() <= 1e-5
    manifest = json.loads((digits_run / "export" / "manifest.json").read_text())
    entry = manifest["exports"]["onnx"]
    assert entry["inputs"] == [{"name": "inputs", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert manifest["class_names"] == [str(i) for i in range(10)]
    assert manifest["input_scaling"]["kind"] == "StandardScaler"
    assert len(manifest["input_scaling"]["mean"]) == 64
    assert {"trainlab", "torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert entry["verification"]["passed"] and entry["verification"]["rows"] == 270


@pytest.mark.slow
def test_each_format_runs_outside_trainlab_and_joins_the_manifest(digits_run) -> None:
    from safetensors.torch import load_file

    for format in ("torchscript", "exported_program", "safetensors"):
        export_command([f"run={digits_run}", f"format={format}"])
    folder = digits_run / "export"
    inputs = digits_test_split()
    with torch.inference_mode():
        model = digits_model(digits_run)
        expected = model(inputs)
        scripted = torch.jit.load(str(folder / "model.torchscript.pt"))(inputs)[0]
        program = torch.export.load(str(folder / "model.pt2")).module()(inputs)[0]
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        reloaded = model(inputs)
    for got in (scripted, program, reloaded):
        assert (got - expected).abs().max() <= 1e-5
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["exports"]) >= {"torchscript", "exported_program", "safetensors"}


@pytest.mark.slow
def test_a_mismatch_and_bad_input_end_in_one_line_leaving_the_export_as_it_was(
    digits_run, tmp_path
) -> None:
    export_command([f"run={digits_run}", "format=safetensors"])
    folder = digits_run / "export"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    cases = [
        (["format=onnx", "tolerance=0"], "format=onnx: the exported file does not match"),
        (["format=tflite"], "format=tflite is unknown"),
        (["format=onnx", f"output={digits_run / 'metrics.json'}"], "is a file, not a folder"),
    ]
    for args, message in cases:
        result = script_cli("train.py", "export", f"run={digits_run}", *args, cwd=tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    result = script_cli("train.py", "export", "run=missing", "format=onnx", cwd=tmp_path)
    assert result.returncode == 2 and "run=missing: no such run folder" in result.stderr
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert after == before


@pytest.mark.slow
def test_bar_a_table_runs_onnx_takes_raw_csv_columns_with_gaps(tmp_path) -> None:
    from trainlab.app.predict import predict_command

    gaps_table(400).to_csv(tmp_path / "gaps.csv", index=False)
    run_dir = train(
        tmp_path / "table", "data=csv", f"data.path={tmp_path / 'gaps.csv'}",
        "data.target=label", "data.missing_indicator=true", "trainer.max_epochs=3",
    )  # fmt: skip
    export_command([f"run={run_dir}", "format=onnx"])
    new = gaps_table(80, seed=1).drop(columns="label")
    new.loc[3, "color"] = "purple"  # unseen
    new.to_csv(tmp_path / "new.csv", index=False)
    predict_command([f"run={run_dir}", f"input={tmp_path / 'new.csv'}", "output=p.csv"])
    predicted = pd.read_csv("p.csv")
    Path("p.csv").unlink()
    onnx_session = session(run_dir / "export" / "model.onnx")
    with open(tmp_path / "new.csv", newline="") as handle:  # the cells as text, no pandas
        cells = list(csv.DictReader(handle))
    feeds = {}
    for item in onnx_session.get_inputs():
        column = [row[item.name] for row in cells]
        if item.type == "tensor(string)":
            feeds[item.name] = np.array(column, dtype=object).reshape(-1, 1)
        else:
            numbers = [float(cell) if cell else np.nan for cell in column]
            feeds[item.name] = np.array(numbers, dtype=np.float64).reshape(-1, 1)
    _, probabilities = onnx_session.run(None, feeds)
    classes = np.array(["no", "yes"])[probabilities.argmax(axis=1)]
    assert classes.tolist() == predicted["prediction"].tolist()
    expected = predicted[["probability_no", "probability_yes"]].to_numpy()
    assert np.abs(probabilities - expected).max() <= 1e-5
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    inputs = manifest["exports"]["onnx"]["inputs"]
    assert [(i["name"], i["dtype"]) for i in inputs] == [
        ("age", "float64"), ("income", "float64"), ("color", "string"), ("size", "string"),
    ]  # fmt: skip


@pytest.mark.slow
def test_text_run_exports_token_ids_with_its_tokenizer(tmp_path, text_csv) -> None:
    from tokenizers import Tokenizer

    from trainlab.app.predict import Predictor

    run_dir = train(
        tmp_path / "text", "data=text", f"data.path={text_csv}", "model=transformer",
        "trainer.max_epochs=1",
    )  # fmt: skip
    export_command([f"run={run_dir}", "format=onnx"])
    folder = run_dir / "export"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["tokenizer"]["file"] == "tokenizer.json"
    texts = ["the battery is not bad", "the screen is awful and the keyboard is great"]
    encodings = Tokenizer.from_file(str(folder / "tokenizer.json")).encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    _, probabilities = session(folder / "model.onnx").run(None, {"inputs": ids})
    predicted = Predictor.load(run_dir).predict(texts)
    expected = predicted.filter(like="probability_").to_numpy()
    assert np.abs(probabilities - expected).max() <= 1e-5


@pytest.mark.slow
def test_an_rnn_on_tokens_is_refused_for_onnx_and_exported_as_torchscript(tmp_path, text_csv):
    run_dir = train(
        tmp_path / "rnn", "data=text", f"data.path={text_csv}", "model=rnn",
        "trainer.max_epochs=1",
    )  # fmt: skip
    with pytest.raises(TrainlabError, match="packs its sequences by length"):
        export_command([f"run={run_dir}", "format=onnx"])
    assert not (run_dir / "export").exists()
    export_command([f"run={run_dir}", "format=torchscript"])
    assert (run_dir / "export" / "tokenizer.json").is_file()


def test_export_help_is_the_modules_own(capsys) -> None:
    from trainlab.app import export
    from trainlab.app.cli import cli

    cli(["export", "--help"])
    assert capsys.readouterr().out == f"{export.__doc__.strip()}\n\n{export.USAGE}\n"
