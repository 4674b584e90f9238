"""A compressed model's folder (`<run>/compressed/<method>/`): write it, load it back.

The folder holds `model.pt` (a state dict, read with `weights_only`), `compressed.json`
(the method, its options, the model and loss configs, the measured table) and a copy of
the run's `data_info.json`. Loading builds the model class the config names (an
`nn.Module` importable here, checked as prediction checks it), gives it the same int8
layers when the method was `quantize`, and loads the weights: nothing from the folder runs.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from trainlab.app.predict_run import check_model_classes
from trainlab.components.data.datasets import DATA_INFO_FILE, DataInfo
from trainlab.errors import TrainlabError

MODEL_FILE = "model.pt"
MANIFEST = "compressed.json"


def write_compressed(
    folder: Path, model: nn.Module, manifest: dict[str, Any], run_dir: Path, table: str
) -> Path:
    """Write the folder whole (see `folder_written`)."""
    from trainlab.app.run_model import folder_written

    with folder_written(folder) as tmp:
        torch.save(state_dict_of(model), tmp / MODEL_FILE)
        shutil.copyfile(run_dir / DATA_INFO_FILE, tmp / DATA_INFO_FILE)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        (tmp / "report.md").write_text(table + "\n")
    return folder


def load_compressed(folder: str | Path) -> nn.Module:
    """The compressed model in `folder` (written by `trainlab compress`), in eval mode."""
    from trainlab.components.compression import load_quantized_state_dict, quantize_int8
    from trainlab.components.losses import num_outputs
    from trainlab.components.models import build_model

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise TrainlabError(
            f"{folder} holds no {MANIFEST}: point at a folder `trainlab compress` wrote "
            "(<run>/compressed/quantize or prune)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        model_cfg, loss_cfg = manifest["model"], manifest.get("loss") or {}
        method = manifest["method"]
    except (ValueError, KeyError, TypeError) as ex:
        raise TrainlabError(
            f"{manifest_path} cannot be read ({type(ex).__name__}); compress the run again"
        ) from None
    info = DataInfo.load(folder)
    check_model_classes(model_cfg, str(manifest_path))
    outputs = num_outputs(OmegaConf.create(loss_cfg), info)
    model = build_model(OmegaConf.create(model_cfg), info, outputs)
    if method == "quantize":
        model = quantize_int8(model)
    try:
        weights = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
        if method == "quantize":
            load_quantized_state_dict(model, weights)
        else:
            model.load_state_dict(weights)
    except (OSError, RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as ex:
        first = str(ex).strip().splitlines()[0][:120] if str(ex).strip() else type(ex).__name__
        raise TrainlabError(
            f"{folder / MODEL_FILE} does not load into the model {MANIFEST} names ({first}); "
            "compress the run again"
        ) from None
    return model.eval()


def state_dict_of(model: nn.Module) -> dict[str, Any]:
    """What `model.pt` holds: tensors only (a quantized RNN's packed weights unpacked)."""
    from trainlab.components.compression import quantized_state_dict

    return quantized_state_dict(model)


def file_sizes(model: nn.Module) -> tuple[int, int]:
    """Bytes of `model.pt` as `write_compressed` writes it, and zlib-compressed (where a
    pruned model's zeros show: its dense file is as large as the original's)."""
    import zlib

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / MODEL_FILE  # the name is in the archive: same name, same size
        torch.save(state_dict_of(model), path)
        data = path.read_bytes()
    return len(data), len(zlib.compress(data, 6))
