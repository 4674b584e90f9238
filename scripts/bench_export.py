"""Latency of the exported runtimes against eager PyTorch (`python scripts/bench.py --export`).

For each model (digits-shaped, as trainlab builds it) the model is exported with
`trainlab.app.export_formats.export_model` (so each file is verified first) to ONNX and
TorchScript. Then, per batch size (1 row and 256 rows), the three contenders take turns
round after round on the same inputs with the same number of CPU threads:

    eager        the PyTorch module (outputs plus probabilities, as exported) under
                 torch.inference_mode: the hand-written baseline
    torchscript  torch.jit.load of the exported file
    onnx         an onnxruntime InferenceSession of the exported file

Reported: the median latency of one call in microseconds (the median over the rounds of
each round's mean), its min-max, and the ratio to eager (below 1 is faster).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def contenders(model_name: str, folder: Path, threads: int) -> dict[str, Callable[[Any], Any]]:
    import onnxruntime
    import torch
    from omegaconf import OmegaConf

    from trainlab.app.export_formats import WithPredictions, export_model
    from trainlab.components.data.datasets import load_digits
    from trainlab.components.models import build_model

    data = load_digits(seed=0, val_fraction=0.15, test_fraction=0.15, scaling="standard")
    config = OmegaConf.load(ROOT / "configs" / "model" / f"{model_name}.yaml")
    torch.manual_seed(0)
    model = build_model(config, data.info, data.info.num_classes).eval()
    rows = data.test.inputs
    for format in ("onnx", "torchscript"):
        entry = export_model(model, rows, data.info, format, folder)
        worst = max(entry["verification"]["max_abs_diff"].values())
        print(f"    {model_name} {format}: verified, max abs difference {worst:.1e}")
    eager = WithPredictions(model, data.info).eval()
    scripted = torch.jit.load(str(folder / "model.torchscript.pt")).eval()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )

    def in_torch(module: Callable) -> Callable:
        def call(batch: Any) -> Any:
            with torch.inference_mode():
                return module(batch[0])

        return call

    return {
        "eager": in_torch(eager),
        "torchscript": in_torch(scripted),
        "onnx": lambda batch: session.run(None, {"inputs": batch[1]}),
    }


def time_calls(call: Callable, batch: Any, seconds: float) -> float:
    """Mean seconds per call over about `seconds` of calls."""
    calls, start = 0, time.perf_counter()
    while True:
        call(batch)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return elapsed / calls


def run(args: Any) -> dict[str, Any]:
    """Every model x batch size x contender; returns the figures for the JSON report."""
    import torch

    threads = args.export_threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    print(f"exported runtimes: {threads} CPU thread(s), {args.rounds} rounds of {args.seconds} s")
    figures: dict[str, Any] = {}
    for model_name in args.export_models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            calls = contenders(model_name, Path(tmp), threads)
            for size in (1, 256):
                inputs = torch.randn(size, 1, 8, 8)
                batch = (inputs, inputs.numpy())
                for call in calls.values():  # warm-up: first calls allocate and plan
                    time_calls(call, batch, args.seconds / 2)
                rounds: dict[str, list[float]] = {name: [] for name in calls}
                for _ in range(args.rounds):  # turns, so a busy moment hits all alike
                    for name, call in calls.items():
                        rounds[name].append(time_calls(call, batch, args.seconds))
                base = statistics.median(rounds["eager"])
                for name, times in rounds.items():
                    median = statistics.median(times)
                    key = f"{model_name}/batch{size}/{name}"
                    figures[key] = {
                        "median_us": median * 1e6,
                        "min_us": min(times) * 1e6,
                        "max_us": max(times) * 1e6,
                        "ratio_to_eager": median / base,
                    }
                    print(
                        f"  {model_name:<11} batch {size:>3}  {name:<11} "
                        f"{median * 1e6:9.1f} us  ({min(times) * 1e6:.1f}-{max(times) * 1e6:.1f})"
                        f"  x{median / base:.2f} of eager"
                    )
    return {"export_latency": figures}


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--export",
        action="store_true",
        help="instead: latency of the exported ONNX and TorchScript files against eager "
        "PyTorch, 1 row and 256 rows (scripts/bench_export.py)",
    )
    parser.add_argument(
        "--export-models", default="mlp,cnn", help="with --export: among mlp, cnn, transformer"
    )
    parser.add_argument("--seconds", type=float, default=0.5, help="with --export: per round")
    parser.add_argument(
        "--export-threads", type=int, help="with --export: CPU threads (default: torch's)"
    )


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(ROOT / "src"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    add_arguments(parser)
    run(parser.parse_args())
