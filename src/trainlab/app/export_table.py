"""A table run's ONNX file: the raw columns in, the run's preprocessing and model inside.

Each feature column is one named input of shape (batch, 1): a numeric column as float64
(NaN is a missing value), a categorical column as text, exactly as the CSV cell reads ("",
and pandas' spellings of a missing value such as "NA" or "null", are missing). The
preprocessing training fitted is written as a small ONNX graph from the fitted scikit-learn
state (imputation, missing-value indicators, scaling, one-hot encoding with unseen
categories as zeros) and joined in front of the model's graph with `onnx.compose`, so the
file needs neither trainlab nor scikit-learn. It is verified on the run's test rows, read
from the training file and fed as a user would, against the PyTorch model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch
from onnx import TensorProto, helper, numpy_helper

from trainlab.components.data.datasets import DataInfo
from trainlab.components.data.preprocessing import TablePreprocessor, category_text
from trainlab.errors import TrainlabError

FEATURES = "features"
# What pandas reads as a missing value in a CSV cell (its default na_values), plus "".
MISSING_TEXTS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip


def cell_text(value: Any) -> str:
    """A categorical cell as the text the ONNX file takes ("" for a missing one)."""
    text = category_text(value)
    return "" if isinstance(text, float) else str(text)


def onnx_feeds(rows: pd.DataFrame, preprocessor: TablePreprocessor) -> dict[str, np.ndarray]:
    """The ONNX file's inputs for the rows of a DataFrame, as the docs show a user."""
    feeds = {}
    for column in preprocessor.numeric:
        values = pd.to_numeric(rows[column], errors="coerce").to_numpy(np.float64)
        feeds[column] = values.reshape(-1, 1)
    for column in preprocessor.categorical:
        feeds[column] = np.array([cell_text(v) for v in rows[column]], dtype=object).reshape(-1, 1)
    return feeds


class GraphBuilder:
    """Nodes and constants of a small ONNX graph, with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def constant(self, value: np.ndarray, stem: str = "const") -> str:
        name = self.name(stem)
        self.constants.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, inputs: list[str], domain: str = "", **attributes: Any) -> str:
        output = self.name(kind.lower())
        node = helper.make_node(kind, inputs, [output], name=output, domain=domain, **attributes)
        self.nodes.append(node)
        return output


def check_convertible(preprocessor: TablePreprocessor, run_dir: Path) -> None:
    """Refuse in one line the preprocessing this graph cannot hold."""
    if preprocessor.dates:
        raise TrainlabError(
            f"run={run_dir}: its date column(s) {', '.join(preprocessor.dates)} cannot be parsed "
            "inside an ONNX graph; export format=torchscript, exported_program or safetensors "
            "(they take the preprocessed inputs), or train with the dates in data.drop_columns"
        )
    if preprocessor.impute == "knn":
        raise TrainlabError(
            f"run={run_dir} imputes with data.impute=knn, which this ONNX export does not "
            "hold; train with data.impute=median (or mean, most_frequent), or export "
            "format=torchscript, exported_program or safetensors (preprocessed inputs)"
        )
    names = [name for name, _, _ in preprocessor.transformer.transformers_]
    if any(name not in ("numeric", "categorical", "remainder") for name in names):
        raise TrainlabError(
            f"run={run_dir}: its preprocessing has parts ({', '.join(names)}) this ONNX export "
            "does not know; export format=torchscript, exported_program or safetensors"
        )


def numeric_block(graph: GraphBuilder, preprocessor: TablePreprocessor) -> str:
    """Concatenated numeric inputs -> imputed (+ indicators) -> scaled, float64."""
    values = graph.op("Concat", list(preprocessor.numeric), axis=1)
    pipeline = preprocessor.transformer.named_transformers_["numeric"]
    steps = dict(getattr(pipeline, "steps", []))
    if (imputer := steps.get("impute")) is not None:
        fill = np.asarray(imputer.statistics_, dtype=np.float64)
        gaps = graph.op("IsNaN", [values])
        filled = graph.op("Where", [gaps, graph.constant(fill.reshape(1, -1)), values])
        kept = np.flatnonzero(~np.isnan(fill))  # sklearn drops columns empty in training
        if len(kept) < len(fill):
            filled = graph.op("Gather", [filled, graph.constant(kept.astype(np.int64))], axis=1)
        if imputer.indicator_ is not None:
            where = np.asarray(imputer.indicator_.features_, dtype=np.int64)
            picked = graph.op("Gather", [gaps, graph.constant(where)], axis=1)
            flags = graph.op("Cast", [picked], to=TensorProto.DOUBLE)
            filled = graph.op("Concat", [filled, flags], axis=1)
        values = filled
    if (scaler := steps.get("scale")) is not None:
        if type(scaler).__name__ == "StandardScaler":
            if scaler.mean_ is not None:
                values = graph.op("Sub", [values, graph.constant(scaler.mean_.reshape(1, -1))])
            if scaler.scale_ is not None:
                values = graph.op("Div", [values, graph.constant(scaler.scale_.reshape(1, -1))])
        else:  # MinMaxScaler: x * scale_ + min_
            values = graph.op("Mul", [values, graph.constant(scaler.scale_.reshape(1, -1))])
            values = graph.op("Add", [values, graph.constant(scaler.min_.reshape(1, -1))])
    return values


def categorical_block(graph: GraphBuilder, preprocessor: TablePreprocessor) -> list[str]:
    """Each categorical input -> its category's index (missing -> the imputed category,
    unseen -> -1) -> one-hot columns (all zeros for -1), float64."""
    pipeline = preprocessor.transformer.named_transformers_["categorical"]
    imputer, one_hot = pipeline.named_steps["impute"], pipeline.named_steps["one_hot"]
    if one_hot.drop_idx_ is not None:
        raise TrainlabError("one-hot encoding with drop= is not supported by the ONNX export")
    blocks = []
    for column, fill, known in zip(
        preprocessor.categorical, imputer.statistics_, one_hot.categories_, strict=True
    ):
        categories = [str(c) for c in known]
        fill_index = categories.index(str(fill)) if str(fill) in categories else -1
        missing = [text for text in MISSING_TEXTS if text not in categories]
        keys = [*categories, *missing]
        indices = [*range(len(categories)), *[fill_index] * len(missing)]
        index = graph.op(
            "LabelEncoder",
            [column],
            domain="ai.onnx.ml",
            keys_strings=keys,
            values_int64s=indices,
            default_int64=-1,
        )
        positions = graph.constant(np.arange(len(categories), dtype=np.int64).reshape(1, -1))
        hot = graph.op("Equal", [index, positions])
        blocks.append(graph.op("Cast", [hot], to=TensorProto.DOUBLE))
    return blocks


def preprocessing_model(preprocessor: TablePreprocessor, ir_version: int) -> onnx.ModelProto:
    """The fitted preprocessing as an ONNX model: raw columns in, `features` (float32) out."""
    graph = GraphBuilder()
    inputs = [
        helper.make_tensor_value_info(c, TensorProto.DOUBLE, ["batch", 1])
        for c in preprocessor.numeric
    ] + [
        helper.make_tensor_value_info(c, TensorProto.STRING, ["batch", 1])
        for c in preprocessor.categorical
    ]
    parts = []
    if preprocessor.numeric:
        parts.append(numeric_block(graph, preprocessor))
    if preprocessor.categorical:
        parts.extend(categorical_block(graph, preprocessor))
    joined = graph.op("Concat", parts, axis=1) if len(parts) > 1 else parts[0]
    graph.nodes.append(
        helper.make_node("Cast", [joined], [FEATURES], name="to_float32", to=TensorProto.FLOAT)
    )
    width = len(preprocessor.feature_names)
    output = helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["batch", width])
    body = helper.make_graph(graph.nodes, "preprocessing", inputs, [output], graph.constants)
    from trainlab.app.export_formats import OPSET

    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(body, opset_imports=opsets, producer_name="trainlab")
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def test_rows(data: dict[str, Any], seed: int, fold: Any, preprocessor: TablePreprocessor) -> Any:
    """The raw rows of the run's test split, selected as `load_table` selects them."""
    from trainlab.components.data.datasets import split_rows
    from trainlab.components.data.files import read_table
    from trainlab.components.data.preprocessing import categorical_column
    from trainlab.components.data.tabular import encode_target

    where = f"data.path={data['path']}"
    frame = read_table(
        data["path"], npz_features=data.get("npz_features", "X"),
        npz_target=data.get("npz_target", "y"),
    )  # fmt: skip
    target = preprocessor.target
    if not pd.api.types.is_numeric_dtype(frame[target]):
        frame[target] = categorical_column(frame[target])
    frame = frame[frame[target].notna()]
    if preprocessor.impute == "drop":
        columns = [*preprocessor.numeric, *preprocessor.dates, *preprocessor.categorical]
        frame = frame[frame[columns].notna().all(axis=1)]
    targets, class_names = encode_target(frame[target], data.get("task", "auto"), where)
    _, val, test = split_rows(
        targets,
        val_fraction=data.get("val_fraction", 0.15),
        test_fraction=data.get("test_fraction", 0.15),
        seed=seed,
        stratify=class_names is not None,
        fold=fold,
    )
    return frame.iloc[test if len(test) else val]


def export_table_onnx(
    model: torch.nn.Module,
    info: DataInfo,
    folder: Path,
    run_dir: Path,
    data: Any,
    tolerance: float,
) -> dict[str, Any]:
    """Write `model.onnx` holding the preprocessing and the model, verified on the raw test
    rows; return its manifest entry."""
    from trainlab.app import export_formats as formats

    preprocessor = data.preprocessor
    check_convertible(preprocessor, run_dir)
    config = data.export_config
    level = logging.getLogger("trainlab").level
    logging.getLogger("trainlab").setLevel(logging.WARNING)  # training's notes, said already
    try:
        rows = test_rows(config["data"], config["seed"], config["fold"], preprocessor)
    finally:
        logging.getLogger("trainlab").setLevel(level)
    inputs = torch.as_tensor(preprocessor.transform(rows, "the test rows"))
    expected_inputs = data.test.inputs if len(data.test) else data.val.inputs
    if inputs.shape != expected_inputs.shape or not torch.equal(inputs, expected_inputs.cpu()):
        raise TrainlabError(
            f"run={run_dir}: the test rows read from data.path={config['data']['path']} no longer "
            "encode to the run's test split: the file changed since training; export from the "
            "file the run trained on"
        )
    wrapped = formats.WithPredictions(model.eval().cpu(), info).eval()
    names = formats.output_names(info)
    with torch.inference_mode():
        expected = [t.numpy() for t in formats._in_chunks(wrapped, inputs)]
    path = folder / formats.FORMATS["onnx"]
    model_file = formats._temporary(path)
    merged_file = formats._temporary(path)
    try:
        formats.write_onnx(wrapped, inputs, model_file, names, {}, info)
        network = onnx.load(str(model_file))
        prep = preprocessing_model(preprocessor, network.ir_version)
        network = onnx.compose.add_prefix(network, prefix="model/")
        merged = onnx.compose.merge_models(
            prep, network, io_map=[(FEATURES, f"model/{formats.INPUT_NAME}")]
        )
        for output, name in zip(merged.graph.output, names, strict=True):
            _rename(merged.graph, output.name, name)
        onnx.checker.check_model(merged)
        onnx.save(merged, str(merged_file))
        run = onnx_runner(merged_file, names)
        feeds = onnx_feeds(rows, preprocessor)
        verification = formats.verify(
            lambda picked: run({k: v[picked] for k, v in feeds.items()}),
            np.arange(len(rows)),
            expected,
            names,
            tolerance,
        )
        formats.check_passed(verification, "onnx")
        import os

        os.replace(merged_file, path)
    finally:
        model_file.unlink(missing_ok=True)
        merged_file.unlink(missing_ok=True)
    columns = [
        {"name": c, "shape": ["batch", 1], "dtype": "float64", "kind": "numeric"}
        for c in preprocessor.numeric
    ] + [
        {"name": c, "shape": ["batch", 1], "dtype": "string", "kind": "categorical"}
        for c in preprocessor.categorical
    ]
    return {
        **formats.manifest_entry("onnx", path, columns, names, verification),
        "preprocessing": (
            "included: numeric inputs take float64 (NaN = missing); categorical inputs take "
            f"the cell's text (missing: {json.dumps(MISSING_TEXTS[:3])[1:-1]}, 'NA', 'null', ...)"
        ),
    }


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
        node.input[:] = [new if name == old else name for name in node.input]
    for value in graph.output:
        if value.name == old:
            value.name = new


def onnx_runner(path: Path, names: list[str]) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(names, feeds)
