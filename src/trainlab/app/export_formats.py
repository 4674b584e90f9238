"""Write a model in one of four formats and check the file against the model it came from.

`export_model(model, example, info, format, out_dir)` is the one door: it writes the
artefact under a temporary name, runs that file with the runtime a user would run it with
(onnxruntime, `torch.jit.load`, `torch.export.load`, or a fresh model loading the
safetensors weights), compares its outputs with the PyTorch model's on `example` at two
batch sizes, and only then renames it into place. A file that does not match is deleted
and the export fails in one line; an earlier file of the same name stays as it was.

The exported graph returns the raw outputs and what `trainlab predict` reports:
classification `logits` and `probabilities` (softmax; a single logit is the positive
class's sigmoid), regression `outputs` and `prediction` (in the target's units).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainlab.components.data.datasets import DataInfo
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

FORMATS = {
    "onnx": "model.onnx",
    "torchscript": "model.torchscript.pt",
    "exported_program": "model.pt2",
    "safetensors": "model.safetensors",
}
DEFAULT_TOLERANCE = 1e-5
INPUT_NAME = "inputs"
OPSET = 18  # torch.onnx's default opset in torch 2.13; the table preprocessing graph uses it too
ROWS_PER_RUN = 256  # rows sent through the artefact at once while verifying


@dataclass
class Verification:
    """How an artefact compares with the PyTorch model on the verification rows.

    An output passes when its max abs difference is within `tolerance` times its largest
    magnitude, when that is above 1 (float32 rounds relative to size: logits of 30 or a
    price of 1e5 in the target's units carry larger absolute errors than probabilities).
    """

    rows: int
    batch_sizes: list[int]
    max_abs_diff: dict[str, float]  # per output
    tolerance: float
    scale: dict[str, float]  # per output: max(1, its largest magnitude)
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = all(
            diff <= self.tolerance * self.scale[name] for name, diff in self.max_abs_diff.items()
        )

    @property
    def failing(self) -> str:
        """The output furthest beyond its allowance."""
        return max(self.max_abs_diff, key=lambda n: self.max_abs_diff[n] / self.scale[n])


class WithPredictions(nn.Module):
    """The model plus the prediction `trainlab predict` derives from its outputs."""

    def __init__(self, model: nn.Module, info: DataInfo) -> None:
        super().__init__()
        self.model = model
        self.classification = info.task != "regression"
        width = 1 if self.classification else info.num_targets
        mean = info.target_mean or [0.0] * width
        std = info.target_std or [1.0] * width
        self.register_buffer("target_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(std, dtype=torch.float32))

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(inputs)
        if not self.classification:
            return outputs, outputs * self.target_std + self.target_mean
        if outputs.shape[-1] == 1:
            positive = outputs.sigmoid()
            return outputs, torch.cat([1 - positive, positive], dim=-1)
        return outputs, outputs.softmax(dim=-1)


def output_names(info: DataInfo) -> list[str]:
    return ["outputs", "prediction"] if info.task == "regression" else ["logits", "probabilities"]


def describe_inputs(example: torch.Tensor) -> list[dict[str, Any]]:
    """The model's input for the manifest: the batch dimension is dynamic ("batch")."""
    dtype = str(example.dtype).removeprefix("torch.")
    return [{"name": INPUT_NAME, "shape": ["batch", *example.shape[1:]], "dtype": dtype}]


def export_model(
    model: nn.Module,
    example: torch.Tensor,
    info: DataInfo,
    format: str,
    out_dir: str | Path,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    config: dict[str, Any] | None = None,
    file_name: str | None = None,
) -> dict[str, Any]:
    """Export `model` (on the CPU, eval mode) as `format` into `out_dir`, verified on the
    rows of `example` (what the model takes, e.g. a run's test split).

    `config` (the run's model/loss config) is stored in a safetensors file's metadata, so
    the model can be rebuilt for its weights; without it safetensors is verified by loading
    the weights back into `model`'s class as built. Returns the manifest entry: file, inputs,
    outputs, the verification. Raises TrainlabError when the artefact does not match.
    """
    if format not in FORMATS:
        raise TrainlabError(f"format={format} is unknown; choose one of: {', '.join(FORMATS)}")
    model = model.eval().cpu()
    example = example.cpu()
    path = Path(out_dir) / (file_name or FORMATS[format])
    wrapped = WithPredictions(model, info).eval()
    with torch.inference_mode():
        expected = [t.numpy() for t in _in_chunks(wrapped, example)]
    names = output_names(info)
    writer, runner = WRITERS[format]
    tmp = _temporary(path)
    try:
        try:
            writer(wrapped, example, tmp, names, config or {}, info)
        except TrainlabError:
            raise
        except Exception as ex:  # the exporters' own errors: say which format and model
            raise TrainlabError(export_failure(format, model, ex)) from None
        run = runner(tmp, wrapped, names)
        verification = verify(run, example.numpy(), expected, names, tolerance)
        check_passed(verification, format)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return manifest_entry(format, path, describe_inputs(example), names, verification)


def export_failure(format: str, model: nn.Module, ex: Exception) -> str:
    """The line for a model torch cannot export in `format`."""
    name = type(model).__name__
    if (
        format in ("onnx", "exported_program")
        and getattr(model, "embed", None) is not None
        and (type(getattr(model, "rnn", None)) in (nn.LSTM, nn.GRU))
    ):
        return (
            f"format={format}: {name} on tokens packs its sequences by length, which "
            "torch.export cannot trace; export format=torchscript or format=safetensors"
        )
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(ex)).strip()
    detail = text.splitlines()[0][:160] if text else ""
    others = ", ".join(f for f in FORMATS if f != format)
    return (
        f"format={format}: torch could not export {name} ({type(ex).__name__}: {detail}); "
        f"try another format: {others}"
    )


def check_passed(verification: Verification, format: str) -> None:
    """Refuse, in one line, an artefact whose outputs differ from the model's."""
    if verification.passed:
        return
    name = verification.failing
    scale = verification.scale[name]
    relative = f" x its largest magnitude {scale:.3g}" if scale > 1 else ""
    raise TrainlabError(
        f"format={format}: the exported file does not match the PyTorch model: max abs "
        f"difference {verification.max_abs_diff[name]:.3g} in '{name}' over "
        f"{verification.rows} test rows > tolerance={verification.tolerance:g}{relative}; "
        "nothing was written (a larger tolerance= accepts it)"
    )


def manifest_entry(
    format: str,
    path: Path,
    inputs: list[dict[str, Any]],
    names: list[str],
    verification: Verification,
) -> dict[str, Any]:
    return {
        "format": format,
        "file": path.name,
        "bytes": path.stat().st_size,
        "inputs": inputs,
        "outputs": names,
        "verification": {
            "rows": verification.rows,
            "batch_sizes": verification.batch_sizes,
            "max_abs_diff": verification.max_abs_diff,
            "tolerance": verification.tolerance,
            "scale": verification.scale,
            "passed": verification.passed,
        },
    }


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The name keeps the file's ending: torch.export.load reads only names ending in .pt2.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f"-{path.name}")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's owner-only mode
    return Path(name)


def _in_chunks(run: Callable[[torch.Tensor], Any], inputs: torch.Tensor) -> list[torch.Tensor]:
    parts = [run(chunk) for chunk in inputs.split(ROWS_PER_RUN)]
    return [torch.cat([part[i] for part in parts]) for i in range(len(parts[0]))]


def verify(
    run: Callable[[np.ndarray], list[np.ndarray]],
    rows: np.ndarray,
    expected: list[np.ndarray],
    names: list[str],
    tolerance: float,
) -> Verification:
    """Run the artefact on every row of `rows` in batches of `ROWS_PER_RUN` and on the
    first row alone (a dynamic batch dimension must take both), against `expected`."""
    worst = dict.fromkeys(names, 0.0)
    sizes = sorted({1, min(ROWS_PER_RUN, len(rows))})
    batches = [slice(0, 1)] + [
        slice(start, start + ROWS_PER_RUN) for start in range(0, len(rows), ROWS_PER_RUN)
    ]
    for rows_slice in batches:
        got = run(rows[rows_slice])
        for name, value, want in zip(names, got, expected, strict=True):
            difference = np.abs(np.asarray(value, dtype=np.float64) - want[rows_slice])
            worst[name] = max(worst[name], float(np.nan_to_num(difference, nan=np.inf).max()))
    scale = {
        name: max(1.0, float(np.abs(want).max(initial=0.0)))
        for name, want in zip(names, expected, strict=True)
    }
    return Verification(len(rows), sizes, worst, tolerance, scale)


def _dynamic_batch() -> dict[int, Any]:
    return {0: torch.export.Dim("batch", min=1, max=2**20)}


def _export_program(wrapped: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    sample = _at_least_two(example)
    return torch.export.export(wrapped, (sample,), dynamic_shapes=(_dynamic_batch(),))


def _at_least_two(example: torch.Tensor) -> torch.Tensor:
    # torch.export fixes a dimension of size 1; two rows keep the batch dimension dynamic.
    return example[:2] if len(example) >= 2 else example.repeat(2, *[1] * (example.dim() - 1))


def write_onnx(
    wrapped: WithPredictions,
    example: torch.Tensor,
    path: Path,
    names: list[str],
    config: dict[str, Any],
    info: DataInfo,
) -> None:
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapped,
            (_at_least_two(example),),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_shapes=(_dynamic_batch(),),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx prints progress lines and logs its passes; hide both."""
    names = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "onnxscript", "onnx_ir")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def run_onnx(path: Path, wrapped: nn.Module, names: list[str]) -> Callable:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda rows: session.run(names, {INPUT_NAME: rows})


def write_torchscript(
    wrapped: WithPredictions,
    example: torch.Tensor,
    path: Path,
    names: list[str],
    config: dict[str, Any],
    info: DataInfo,
) -> None:
    # Tracing records what the model does on an example: it needs no annotations in the
    # model's code, and the verification below checks that the trace holds at other sizes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapped, _at_least_two(example), check_trace=False)
    traced.save(str(path))


def run_torchscript(path: Path, wrapped: nn.Module, names: list[str]) -> Callable:
    module = torch.jit.load(str(path), map_location="cpu").eval()
    return _torch_runner(module)


def write_exported_program(
    wrapped: WithPredictions,
    example: torch.Tensor,
    path: Path,
    names: list[str],
    config: dict[str, Any],
    info: DataInfo,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = _export_program(wrapped, example)
    torch.export.save(program, str(path))


def run_exported_program(path: Path, wrapped: nn.Module, names: list[str]) -> Callable:
    return _torch_runner(torch.export.load(str(path)).module())


def _torch_runner(module: Callable) -> Callable:
    def run(rows: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.numpy() for t in module(torch.from_numpy(rows))]

    return run


def write_safetensors(
    wrapped: WithPredictions,
    example: torch.Tensor,
    path: Path,
    names: list[str],
    config: dict[str, Any],
    info: DataInfo,
) -> None:
    from dataclasses import asdict

    from safetensors.torch import save_file

    weights = {k: v.detach().contiguous().clone() for k, v in wrapped.model.state_dict().items()}
    metadata = {"data_info": json.dumps(asdict(info))}
    if config:
        metadata["config"] = json.dumps(config)
    save_file(weights, str(path), metadata=metadata)


def run_safetensors(path: Path, wrapped: nn.Module, names: list[str]) -> Callable:
    """A model built afresh (from the file's config when it has one) loads the weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    info = DataInfo(**json.loads(metadata["data_info"]))
    if "config" in metadata:
        from trainlab.app.predict_run import build_model_from

        payload = {"config": json.loads(metadata["config"]), "model": load_file(str(path))}
        fresh = build_model_from(payload, info, path)
    else:
        import copy

        fresh = copy.deepcopy(wrapped.model)
        fresh.load_state_dict(load_file(str(path)))
    return _torch_runner(WithPredictions(fresh.eval(), info).eval())


WRITERS = {
    "onnx": (write_onnx, run_onnx),
    "torchscript": (write_torchscript, run_torchscript),
    "exported_program": (write_exported_program, run_exported_program),
    "safetensors": (write_safetensors, run_safetensors),
}
