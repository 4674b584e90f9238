"""Export a trained run's model to a file that runs without trainlab, verified when made.

`trainlab export run=<run folder> format=onnx|torchscript|exported_program|safetensors
[output=<folder>] [checkpoint=best|last|<file.pt>] [tolerance=1e-5]` rebuilds the model
from the checkpoint (read with `weights_only`), rebuilds the run's test split exactly as
training split it (same data settings, seed and fold), writes the artefact into
`<run>/export/` and runs it there on the test split: the max abs difference from the
PyTorch model is printed and recorded in `manifest.json`, and an export above `tolerance`
fails in one line, leaving no file behind. A table run's ONNX file takes the raw columns
and holds the preprocessing; a text run's takes token ids, with `tokenizer.json` beside it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

from trainlab.errors import TrainlabError, did_you_mean

log = logging.getLogger("trainlab")

USAGE = (
    "usage: trainlab export run=<run folder> format=onnx|torchscript|exported_program|"
    "safetensors [output=<folder>] [checkpoint=best|last|<file.pt>] [tolerance=1e-5]"
)
KEYS = ("run", "format", "output", "checkpoint", "tolerance")
MANIFEST_FILE = "manifest.json"
EXPORT_FOLDER = "export"
DATA_PACKAGE = "trainlab.components.data."


def parse_args(argv: list[str]) -> dict[str, str]:
    """`key=value` arguments into a dict; anything else is a one-line error."""
    from trainlab.app.arguments import parse_options
    from trainlab.app.export_formats import FORMATS

    options = parse_options(argv, KEYS, ("run", "format"), USAGE, example=_example)
    if options["format"] not in FORMATS:
        raise TrainlabError(
            f"format={options['format']} is unknown{did_you_mean(options['format'], [*FORMATS])}; "
            f"choose one of: {', '.join(FORMATS)}"
        )
    tolerance(options)
    return options


def _example(arg: str) -> str:
    return f"run={arg}" if Path(arg).is_dir() else f"format={arg}"


def tolerance(options: dict[str, str]) -> float:
    from trainlab.app.export_formats import DEFAULT_TOLERANCE

    text = options.get("tolerance")
    if text is None:
        return DEFAULT_TOLERANCE
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise TrainlabError(
            f"tolerance={text} is not a number >= 0; e.g. tolerance=1e-5 (the default)"
        )
    return value


def output_folder(run_dir: Path, options: dict[str, str]) -> Path:
    """Where the artefact goes: `output=` or `<run>/export`; refused early if unwritable."""
    import os

    folder = Path(options["output"]) if "output" in options else run_dir / EXPORT_FOLDER
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise TrainlabError(
                    f"output={folder}: {part} is a file, not a folder; name a folder"
                )
            if not os.access(part, os.W_OK | os.X_OK):
                raise TrainlabError(
                    f"output={folder}: cannot write into {part} (read-only); "
                    "choose a writable folder with output=<folder>"
                )
            break
    return folder


def data_config(run_dir: Path, config: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The run's data settings, checked before anything is built from them.

    The data is rebuilt only through trainlab's own data loaders: a config is data, and a
    run folder from someone else must not make export call anything else.
    """
    data = dict(config.get("data") or {})
    target = str(data.get("_target_", ""))
    if not target.startswith(DATA_PACKAGE):
        raise TrainlabError(
            f"run={run_dir} trained on data._target_={target or '?'}, not a trainlab dataset: "
            "export rebuilds the test split only with trainlab's own loaders (it runs no code "
            "named in a run folder); call trainlab.app.export_formats.export_model with your "
            "model and test inputs instead"
        )
    path = data.get("path")
    if isinstance(path, str) and not Path(path).is_absolute() and not Path(path).exists():
        # A relative data.path is relative to where training ran; Hydra records that folder.
        started = training_folder(run_dir)
        if started is not None and (started / path).exists():
            data["path"] = str(started / path)
        else:
            raise TrainlabError(
                f"run={run_dir}: the training data data.path={path} is not found here (nor in "
                f"{started or 'the folder training ran in'}), so the test split that verifies "
                "the export cannot be rebuilt; run export from the folder training ran in"
            )
    return data


def training_folder(run_dir: Path) -> Path | None:
    """The working folder the run was trained in (from Hydra's record), if known."""
    import yaml

    try:
        hydra = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
        return Path(hydra["hydra"]["runtime"]["cwd"])
    except Exception:  # no record, or an unreadable one: only the current folder is tried
        return None


def fold_of(run_dir: Path, config: dict[str, Any]) -> tuple[int, int] | None:
    folds = (config.get("cv") or {}).get("folds")
    if folds and (match := re.fullmatch(r"fold_(\d+)", run_dir.name)):
        return int(match.group(1)), int(folds)
    return None


def test_split(run_dir: Path, config: dict[str, Any], checkpoint: Path) -> Any:
    """The run's data, rebuilt from its settings, seed and fold: its splits are training's."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    data = data_config(run_dir, config, checkpoint)
    fold = fold_of(run_dir, config)
    extra = {"fold": fold} if fold is not None else {}
    seed = int(config["seed"])
    level = logging.getLogger("trainlab").level
    logging.getLogger("trainlab").setLevel(logging.WARNING)  # training's notes, said already
    try:
        bundle = instantiate(OmegaConf.create(data), seed=seed, _convert_="all", **extra)
        bundle.export_config = {"data": data, "seed": seed, "fold": fold}  # for the table rows
        return bundle
    finally:
        logging.getLogger("trainlab").setLevel(level)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("trainlab", "torch", "onnx", "onnxruntime", "safetensors"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def write_manifest(folder: Path, common: dict[str, Any], entry: dict[str, Any]) -> Path:
    """Add `entry` (one format) to the folder's manifest, keeping the other formats' entries
    whose files are still there; written atomically."""
    from trainlab.components.data.files import write_text_atomic

    path = folder / MANIFEST_FILE
    exports: dict[str, Any] = {}
    try:
        previous = json.loads(path.read_text())
        if isinstance(previous, dict) and previous.get("run") == common.get("run"):
            exports = {
                name: item
                for name, item in (previous.get("exports") or {}).items()
                if isinstance(item, dict) and (folder / str(item.get("file", ""))).is_file()
            }
    except (OSError, ValueError):
        pass  # none yet, or unreadable: this export starts it again
    exports[entry["format"]] = entry
    manifest = {**common, "exports": exports}
    return write_text_atomic(path, json.dumps(manifest, indent=2, ensure_ascii=False))


def export_command(argv: list[str]) -> Path:
    """What `trainlab export` does; returns the artefact's path."""
    from trainlab.app.predict_run import (
        build_model_from,
        checkpoint_file,
        load_data_info,
        note_unfinished,
        read_checkpoint,
    )

    options = parse_args(argv)
    run_dir, format = Path(options["run"]), options["format"]
    info = load_data_info(run_dir)
    folder = output_folder(run_dir, options)
    path = checkpoint_file(run_dir, options.get("checkpoint"))
    payload = read_checkpoint(path)
    note_unfinished(run_dir, path, payload)
    model = build_model_from(payload, info, path)
    config = payload["config"]
    data = test_split(run_dir, config, path)
    split = data.test if len(data.test) else data.val
    common = {
        "run": str(run_dir.resolve()),
        "checkpoint": str(path.resolve()),
        "task": info.task,
        "class_names": info.class_names,
        "input_kind": info.input_kind,
        "versions": versions(),
    }
    if (scaling := input_scaling(data.preprocessor)) is not None:
        common["input_scaling"] = scaling
    model_config = {key: config.get(key) for key in ("model", "loss") if config.get(key)}
    tokenizer = None
    if info.input_kind == "tokens":  # checked before anything is written
        from trainlab.app.export_text import checked_tokenizer
        from trainlab.components.data.text import TextPreprocessor

        saved = TextPreprocessor.load(run_dir)  # what predict uses: the one training saved
        tokenizer, common["tokenizer"] = checked_tokenizer(run_dir, saved, split.inputs)
    existed = folder.exists()
    try:
        entry = export_run_model(
            model, split.inputs, info, format, folder, options, model_config, run_dir, data
        )
    except BaseException:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a refused export leaves no empty folder behind
        raise
    if tokenizer is not None:
        from trainlab.components.data.files import write_text_atomic

        write_text_atomic(folder / common["tokenizer"]["file"], tokenizer)
    write_manifest(folder, common, entry)
    artefact = folder / entry["file"]
    verification = entry["verification"]
    differences = ", ".join(
        f"{name} {diff:.2e}"
        + (f" (of {scale:.3g})" if (scale := verification["scale"][name]) > 1 else "")
        for name, diff in verification["max_abs_diff"].items()
    )
    log.info(
        f"exported {format} to {artefact}: verified on {verification['rows']} test rows "
        f"(batches of {' and '.join(map(str, verification['batch_sizes']))}), max abs difference "
        f"from PyTorch: {differences}, within tolerance {verification['tolerance']:g}; "
        f"manifest: {folder / MANIFEST_FILE}"
    )
    return artefact


def input_scaling(preprocessor: Any) -> dict[str, Any] | None:
    """For images and feature arrays: the scaling training fitted on the raw values, which
    the exported model's inputs already have (a table's ONNX file holds its own)."""
    name = type(preprocessor).__name__
    if name == "StandardScaler":
        how, shift, factor = "inputs = (raw - mean) / scale", "mean", "scale"
        values = {shift: preprocessor.mean_.tolist(), factor: preprocessor.scale_.tolist()}
    elif name == "MinMaxScaler":
        how = "inputs = raw * scale + min"
        values = {"scale": preprocessor.scale_.tolist(), "min": preprocessor.min_.tolist()}
    else:
        return None
    note = f"{how}, on each sample flattened in C order, then reshaped to the input shape"
    return {"kind": name, "how": note, **values}


def export_run_model(
    model: Any,
    inputs: Any,
    info: Any,
    format: str,
    folder: Path,
    options: dict[str, str],
    model_config: dict[str, Any],
    run_dir: Path,
    data: Any,
) -> dict[str, Any]:
    """The artefact of one format; a table's ONNX file holds its preprocessing too."""
    from trainlab.app.export_formats import export_model

    if format == "onnx" and (run_dir / "preprocessing.json").is_file():
        from trainlab.app.export_table import export_table_onnx

        return export_table_onnx(model, info, folder, run_dir, data, tolerance(options))
    return export_model(
        model, inputs.cpu(), info, format, folder, tolerance=tolerance(options), config=model_config
    )


def export_main(argv: list[str]) -> None:
    """`trainlab export ...` (its --help is answered by the command line itself)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    export_command(argv)
